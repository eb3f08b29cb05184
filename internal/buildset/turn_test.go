package buildset_test

import (
	"testing"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/store"
)

func TestBlocker(t *testing.T) {
	me := &store.Buildset{ID: "me", Pipeline: "p", Seq: 10, State: store.BuildsetQueued, PinnedTo: "run-me"}
	bs := func(id, pipeline string, seq int64, state store.BuildsetState, owner string) *store.Buildset {
		if state == store.BuildsetQueued {
			return &store.Buildset{ID: id, Pipeline: pipeline, Seq: seq, State: state, PinnedTo: owner}
		}
		return &store.Buildset{ID: id, Pipeline: pipeline, Seq: seq, State: state, Owner: owner}
	}
	cases := []struct {
		name    string
		manager config.Manager
		others  []*store.Buildset
		want    string
	}{
		{"alone", config.ManagerSerial, nil, ""},
		{"a run of p ahead, waiting too", config.ManagerSerial, []*store.Buildset{bs("a", "p", 5, store.BuildsetQueued, "run-a")}, "a"},
		{"a run of p behind it", config.ManagerSerial, []*store.Buildset{bs("b", "p", 15, store.BuildsetQueued, "run-b")}, ""},
		{"a running one, whatever its age", config.ManagerSerial, []*store.Buildset{bs("c", "p", 15, store.BuildsetRunning, "srv-x")}, "c"},
		{"an admitted one", config.ManagerCoalesce, []*store.Buildset{bs("d", "p", 3, store.BuildsetAdmitted, "srv-x")}, "d"},
		{"a server's queued one: held back by the server", config.ManagerSerial, []*store.Buildset{bs("e", "p", 2, store.BuildsetQueued, "")}, ""},
		{"another pipeline", config.ManagerSerial, []*store.Buildset{bs("f", "q", 1, store.BuildsetRunning, "run-f")}, ""},
		{"independent never waits", config.ManagerIndependent, []*store.Buildset{bs("g", "p", 1, store.BuildsetRunning, "run-g")}, ""},
		{"supercedent runs one at a time too", config.ManagerSupercedent, []*store.Buildset{bs("h", "p", 1, store.BuildsetRunning, "run-h")}, "h"},
	}
	for _, c := range cases {
		active := append([]*store.Buildset{me}, c.others...)
		got := ""
		if b := buildset.Blocker(me, c.manager, active); b != nil {
			got = b.ID
		}
		if got != c.want {
			t.Errorf("%s: blocked by %q, want %q", c.name, got, c.want)
		}
	}
}
