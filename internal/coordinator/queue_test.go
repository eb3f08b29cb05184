package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/pipeline"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// readCounter is a store that counts what the managers' reads of changes
// return, and fails the next one when told.
type readCounter struct {
	store.Store
	mu    sync.Mutex
	reads []int // buildsets returned by each read; -1 for a full read's
	fail  error
}

func (r *readCounter) ChangedBuildsets(ctx context.Context, since store.BuildsetCursor) (*store.BuildsetChanges, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.fail; err != nil {
		r.fail = nil
		return nil, err
	}
	ch, err := r.Store.ChangedBuildsets(ctx, since)
	if err == nil {
		n := len(ch.Buildsets)
		if since == 0 {
			n = -1 - n
		}
		r.reads = append(r.reads, n)
	}
	return ch, err
}

// take returns the reads counted since the last take.
func (r *readCounter) take() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reads
	r.reads = nil
	return out
}

// lead makes h's coordinator the leader for term without starting it: its
// owner is registered, but no loop runs (no managers' loop, no claims),
// so that only the test's passes decide, and admitted buildsets stay
// ADMITTED (running, for the managers) until the test ends them.
func (h *harness) lead(term int64) {
	h.t.Helper()
	if h.runner.Semaphores.Fence().Owner == "" || h.runner.Semaphores.Fence().Epoch == 0 {
		if err := h.runner.Semaphores.Start(h.t.Context()); err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(h.runner.Semaphores.Stop)
	}
	h.c.term.Store(&store.Term{Owner: h.c.Owner(), Term: term})
}

const everyManager = `
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  ser:  {manager: serial, jobs: [boot]}
  sup:  {manager: supercedent, jobs: [boot]}
  ind:  {manager: independent, precedence: low, jobs: [boot]}
  coal: {manager: coalesce, precedence: high, jobs: [boot]}
`

// TestPassReadsChanges: the managers read every active buildset once,
// then only what changed; a pass with nothing changed reads nothing and
// decides nothing again; a new term and an error each make the next pass
// read everything again.
func TestPassReadsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sortie.db")
	sq, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sq.Close() })
	rc := &readCounter{Store: sq}
	h := newHarnessWith(t, everyManager, harnessOptions{store: rc})
	ctx := t.Context()
	if err := h.c.SetPause(ctx, store.Pause{Pipeline: "ser", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		h.create("ser")
	}
	h.lead(1)
	reads := func(what string, want ...int) {
		t.Helper()
		if got := rc.take(); !slices.Equal(got, want) {
			t.Errorf("%s: reads returned %v buildsets, want %v (-1-n: a full read of n)", what, got, want)
		}
	}
	h.pass()
	reads("the first pass", -21)
	h.pass()
	h.pass()
	reads("passes with nothing changed", 0, 0)
	wantWaiting := func(what string, n int) {
		t.Helper()
		if got := h.c.Status().Plan.Waiting; len(got) != n {
			t.Errorf("%s: %d waiting, want %d", what, len(got), n)
		}
	}
	wantWaiting("paused", 20)

	// Another process's buildset comes through the next pass.
	other, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: &store.Buildset{
		ID: "from-elsewhere", Pipeline: "ser", Commit: "c", CreatedAt: time.Now().UTC()}, Jobs: []string{"boot"}}); err != nil {
		t.Fatal(err)
	}
	h.pass()
	reads("a pass after another process made one", 1)
	wantWaiting("one more", 21)

	// A pause is no buildset change, but the pass decides again.
	if err := h.c.ClearPause(ctx, "ser"); err != nil {
		t.Fatal(err)
	}
	rc.take()
	h.pass()
	first := h.c.Status().Plan.Actions
	if len(first) != 1 {
		t.Fatalf("the pass after the pause was lifted: %v, want one start", first)
	}
	h.pass()
	reads("the pass that admitted, then the one that read the admission", 0, 1)

	// A read that fails is an error of the pass, and the next one reads
	// everything.
	rc.mu.Lock()
	rc.fail = errors.New("disk on fire")
	rc.mu.Unlock()
	if err := h.c.Pass(ctx); err == nil {
		t.Error("a pass whose read failed returned no error")
	}
	h.pass()
	reads("the pass after a failed one", -22)

	// A new term reads everything.
	h.lead(2)
	h.pass()
	reads("the first pass of a new term", -22)
}

// TestPassFollowsManagers: whatever arrives through the reads of changes
// (buildsets made by this process and by another, ended elsewhere,
// started by their run, pauses set and lifted), each pass decides what
// the managers decide over every active buildset read afresh.
func TestPassFollowsManagers(t *testing.T) {
	onStores(t, testPassFollowsManagers)
}

func testPassFollowsManagers(t *testing.T, open func() store.Store) {
	sq, other := open(), open()
	h := newHarnessWith(t, everyManager, harnessOptions{store: sq})
	ctx := t.Context()
	run, err := other.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "run-1", Kind: store.OwnerRun, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h.lead(1)
	head := h.create("ser").Commit                         // a commit the source has, for merges
	pipes := []string{"ser", "sup", "ind", "coal", "coal"} // coal twice: merges need a queue
	rnd := rand.New(rand.NewPCG(17, 1))
	made := 0
	counts := map[string]int{}
	swapped := false
	for step := range 250 {
		active, err := sq.ActiveBuildsets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var what string
		switch k := rnd.IntN(10); {
		case k < 4:
			made++
			bs := &store.Buildset{ID: fmt.Sprintf("o%d", made), Pipeline: pipes[rnd.IntN(len(pipes))], Commit: head,
				Files: []string{fmt.Sprintf("f%d", rnd.IntN(3))}, CreatedAt: time.Now().UTC()}
			if rnd.IntN(5) == 0 {
				bs.PinnedTo = run.Owner
			}
			if err := other.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs, Jobs: []string{"boot"}}); err != nil {
				t.Fatal(err)
			}
			what = "made elsewhere " + bs.ID + " in " + bs.Pipeline
		case k < 5:
			bs := h.create(pipes[rnd.IntN(len(pipes))])
			what = "made here " + bs.ID
		case k < 7 && len(active) > 0:
			bs := active[rnd.IntN(len(active))]
			// Mostly what runs, so that queues move.
			if running := slices.DeleteFunc(slices.Clone(active), (*store.Buildset).AwaitsManagers); len(running) > 0 && rnd.IntN(4) > 0 {
				bs = running[rnd.IntN(len(running))]
			}
			if bs.State == store.BuildsetQueued && bs.PinnedTo != "" {
				if err := other.StartBuildset(ctx, store.StartBuildsetParams{ID: bs.ID, Fence: run, At: time.Now().UTC()}); err != nil {
					t.Fatal(err)
				}
				what = "its run started " + bs.ID
				break
			}
			if _, err := other.EndBuildset(ctx, store.EndBuildsetParams{ID: bs.ID, Result: store.Success, BuildResult: store.Success, At: time.Now().UTC()}); err != nil {
				t.Fatal(err)
			}
			what = "ended elsewhere " + bs.ID + " " + string(bs.State)
		case k < 9:
			p := pipes[rnd.IntN(len(pipes))]
			if h.c.Paused(p) != nil {
				err = h.c.ClearPause(ctx, p)
				what = "lifted the pause of " + p
			} else {
				err = h.c.SetPause(ctx, store.Pause{Pipeline: p, By: "test", At: time.Now().UTC()})
				what = "paused " + p
			}
			if err != nil {
				t.Fatal(err)
			}
		case k < 10 && rnd.IntN(3) == 0:
			// A reload: ser's manager changes.
			swapped = !swapped
			if swapped {
				h.setConfig(strings.Replace(everyManager, "manager: serial", "manager: supercedent", 1))
			} else {
				h.setConfig(everyManager)
			}
			what = "reloaded"
		default:
			what = "nothing"
		}
		counts[what[:strings.IndexByte(what+" ", ' ')]]++
		// What the managers decide over everything, read afresh.
		active, err = sq.ActiveBuildsets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := h.cfg.Load()
		snap, _, _ := snapshot(cfg, cfg.PipelineNames(), h.c.Paused(""), h.c.Pauses(), active)
		want := pipeline.Decide(snap)
		h.pass()
		got := h.c.Status().Plan
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("step %d (%s): the pass decided otherwise than the managers over every active buildset (-want +got):\n%s", step, what, d)
		}
		for _, a := range got.Actions {
			counts[strings.Fields(a.String())[0]]++
		}
	}
	t.Logf("steps and actions: %v", counts)
}
