package postgres

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// TestChangedBuildsetsOutOfOrder: a change made by a transaction that
// began before a read, and commits after that read saw a later change, is
// in the next read from that read's cursor. A change counter would miss
// it: the change took its number first, and the reader would have moved
// past that number when it saw the later one.
func TestChangedBuildsetsOutOfOrder(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, dbURL := open(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(id string) {
		t.Helper()
		err := s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: &store.Buildset{ID: id, Pipeline: "deploy", Commit: "c", CreatedAt: now}, Jobs: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	read := func(since store.BuildsetCursor) (map[string]*store.Buildset, store.BuildsetCursor) {
		t.Helper()
		ch, err := s.ChangedBuildsets(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*store.Buildset{}
		for _, bs := range ch.Buildsets {
			m[bs.ID] = bs
		}
		return m, ch.Cursor
	}
	mk("q1")
	_, c0 := read(0)

	// Another node's transaction changes q1 first, and commits last.
	tx, err := connect(t, dbURL).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE buildsets SET state = 'ADMITTED' WHERE id = 'q1'`); err != nil {
		t.Fatal(err)
	}
	mk("q2")
	got, c1 := read(c0)
	if got["q2"] == nil {
		t.Fatalf("the read after q2 was made: %v, want q2 in it", slices.Collect(maps.Keys(got)))
	}
	if bs := got["q1"]; bs != nil && bs.State != store.BuildsetQueued {
		t.Fatalf("q1 read %s before its change committed", bs.State)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got, _ = read(c1)
	if bs := got["q1"]; bs == nil || bs.State != store.BuildsetAdmitted {
		t.Errorf("the read after the late commit: q1 is %+v, want it ADMITTED", bs)
	}
}
