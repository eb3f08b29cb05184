package server

import (
	"context"
	"net/http"
	"testing"

	"github.com/sortie-ci/sortie/internal/buildset"
)

// TestModeShownInLists: a buildset's check mode and limit reach the
// pipelines' queues and the history, which read the buildsets without
// their specs, from the mode the store keeps apart.
func TestModeShownInLists(t *testing.T) {
	e := start(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: "true"}
pipelines:
  p: {jobs: [boot, a]}
`, envOpt{})
	// Paused, the buildset stays in its pipeline's queue (or running,
	// held) while the lists are read.
	e.post("/api/v1/pause", map[string]any{"pipeline": "p", "reason": "test"}, http.StatusOK)
	id := e.trigger("p", map[string]any{"check": true, "limit": "web*"})
	pl := e.pipelinesByName()["p"]
	var got []string
	for _, q := range append(pl.Queued, pl.Running...) {
		if q.ID == id {
			got = append(got, q.Mode)
		}
	}
	if len(got) != 1 || got[0] != "check mode, limit web*" {
		t.Errorf("buildset %s in the pipeline's lists with modes %q, want once, \"check mode, limit web*\"", id, got)
	}
	page, err := e.srv.History(context.Background(), HistoryQuery{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Rows) != 1 || page.Rows[0].ID != id || page.Rows[0].Mode != (buildset.Mode{Check: true, Limit: "web*"}) {
		t.Errorf("history: %+v, want %s in check mode, limit web*", page.Rows, id)
	}
}
