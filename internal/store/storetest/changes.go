package storetest

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// changeView is what a reader of ChangedBuildsets keeps: the active
// buildsets as the reads told them, and the cursor of the last read.
type changeView struct {
	cursor store.BuildsetCursor
	active map[string]*store.Buildset
}

// read applies one read of the changes to the view and returns what the
// read returned.
func (v *changeView) read(t *testing.T, s store.Store) []*store.Buildset {
	t.Helper()
	ch, err := s.ChangedBuildsets(t.Context(), v.cursor)
	must(t, fmt.Sprintf("changed buildsets since %d", v.cursor), err)
	if ch.Cursor == 0 {
		t.Fatalf("changed buildsets since %d: cursor 0 (a full read)", v.cursor)
	}
	if v.active == nil {
		v.active = map[string]*store.Buildset{}
	}
	for i, bs := range ch.Buildsets {
		if i > 0 && bs.Seq <= ch.Buildsets[i-1].Seq {
			t.Errorf("changed buildsets: %s (Seq %d) after %s (Seq %d)", bs.ID, bs.Seq, ch.Buildsets[i-1].ID, ch.Buildsets[i-1].Seq)
		}
		if bs.Plan != nil || (bs.Spec != nil && bs.Mode != nil) {
			t.Errorf("changed buildsets: %s comes with its plan, or its spec with its mode apart (%q, %q, %q)", bs.ID, bs.Plan, bs.Spec, bs.Mode)
		}
		if v.cursor == 0 && bs.State == store.BuildsetDone {
			t.Errorf("a full read returned %s, DONE", bs.ID)
		}
		if bs.State == store.BuildsetDone {
			delete(v.active, bs.ID)
		} else {
			v.active[bs.ID] = bs
		}
	}
	v.cursor = ch.Cursor
	return ch.Buildsets
}

// check compares the view with ActiveBuildsets, the plan aside, and the
// spec too where the mode is kept apart.
func (v *changeView) check(t *testing.T, s store.Store, what string) {
	t.Helper()
	want, err := s.ActiveBuildsets(t.Context())
	must(t, "active buildsets", err)
	for _, bs := range want {
		bs.Plan = nil
		if bs.Mode != nil {
			bs.Spec = nil
		}
	}
	got := slices.Collect(maps.Values(v.active))
	slices.SortFunc(got, func(a, b *store.Buildset) int { return int(a.Seq - b.Seq) })
	diff(t, what, want, got)
}

// testChangedBuildsets: a full read gives every active buildset without
// its plan (and without its spec where its mode is kept apart); each read from the last cursor gives every buildset
// made, admitted, claimed, started, released or ended since, so that a
// reader applying them keeps the active buildsets as ActiveBuildsets has
// them.
func testChangedBuildsets(t *testing.T, s store.Store) {
	ctx := t.Context()
	var v changeView
	if got := v.read(t, s); len(got) != 0 {
		t.Fatalf("a full read of an empty store: %v", ids(got))
	}
	first := v.cursor
	plan, spec := []byte(`{"jobs":[]}`), []byte(`{"a":{}}`)
	create(t, s, &store.Buildset{ID: "q1", Pipeline: "deploy", Commit: "c1", Files: []string{"a"}, Plan: plan, Spec: spec, Mode: []byte(`{}`), Cause: "push", CreatedAt: t0}, "a")
	create(t, s, &store.Buildset{ID: "q2", Pipeline: "deploy", Commit: "c2", Plan: plan, CreatedAt: at(time.Second)}, "a")
	create(t, s, &store.Buildset{ID: "pinned", Pipeline: "check", Commit: "c3", PinnedTo: "run", CreatedAt: at(2 * time.Second)}, "a")
	must(t, "create a config error", s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "broken", Pipeline: "deploy", Commit: "c4", CreatedAt: at(3 * time.Second)}, ConfigError: "bad"}))
	got := v.read(t, s)
	for _, id := range []string{"q1", "q2", "pinned", "broken"} {
		if !slices.Contains(ids(got), id) {
			t.Errorf("the read after %s was made: %v, want it in", id, ids(got))
		}
	}
	v.check(t, s, "after creates")

	// A full read of what is there now.
	var full changeView
	got = full.read(t, s)
	diff(t, "a full read", []string{"q1", "q2", "pinned"}, ids(got))
	full.check(t, s, "a full read")

	// Each change comes through.
	step := func(what string, want string, write func()) {
		t.Helper()
		write()
		got := v.read(t, s)
		if !slices.Contains(ids(got), want) {
			t.Errorf("the read after %s: %v, want %s in it", what, ids(got), want)
		}
		v.check(t, s, "after "+what)
	}
	step("an admission", "q1", func() {
		must(t, "admit q1", s.AdmitBuildset(ctx, "q1", own(t, s, "leader"), at(time.Minute)))
	})
	step("a claim", "q1", func() {
		bss, err := s.ClaimBuildsets(ctx, store.ClaimParams{Fence: own(t, s, "n1"), Max: 1})
		must(t, "claim", err)
		diff(t, "claimed", []string{"q1"}, ids(bss))
	})
	step("a start", "q1", func() {
		must(t, "start q1", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "q1", Fence: own(t, s, "n1"), At: at(2 * time.Minute)}))
	})
	step("a run's start", "pinned", func() {
		must(t, "start pinned", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "pinned", Fence: own(t, s, "run"), At: at(2 * time.Minute)}))
	})
	step("a release", "q1", func() { reap(t, s, "n1") })
	step("an end", "q2", func() { finish(t, s, "q2", store.Canceled, "superseded", at(3*time.Minute)) })
	if _, ok := v.active["q2"]; ok {
		t.Errorf("q2 ended, still in the view")
	}

	// From the first cursor, everything made since comes back, in its
	// latest state.
	old := changeView{cursor: first, active: map[string]*store.Buildset{}}
	got = old.read(t, s)
	for _, id := range []string{"q1", "q2", "pinned", "broken"} {
		if !slices.Contains(ids(got), id) {
			t.Errorf("the read from the first cursor: %v, want %s in it", ids(got), id)
		}
	}
	old.check(t, s, "from the first cursor")
}

// testChangedBuildsetsConcurrent: while several writers make, admit,
// claim and end buildsets at once (their transactions committing in any
// order), a reader that reads from each cursor in turn ends, after one
// last read, with the active buildsets as they are.
func testChangedBuildsetsConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	var v changeView
	v.read(t, s)
	const writers, each = 4, 15
	leader := own(t, s, "leader")
	nodes := make([]store.Fence, writers)
	for w := range writers {
		nodes[w] = own(t, s, fmt.Sprintf("n%d", w))
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	done := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
					Buildset: &store.Buildset{ID: id, Pipeline: "deploy", Commit: "c", CreatedAt: at(time.Duration(i) * time.Second)}, Jobs: []string{"a"},
				})
				if err != nil {
					fail(err)
					return
				}
				switch i % 3 {
				case 1:
					err = s.AdmitBuildset(ctx, id, leader, at(time.Minute))
					if err == nil {
						_, err = s.ClaimBuildsets(ctx, store.ClaimParams{Fence: nodes[w], Max: 1})
					}
				case 2:
					_, err = s.EndBuildset(ctx, store.EndBuildsetParams{ID: id, Result: store.Canceled, BuildResult: store.Canceled, At: at(time.Minute)})
				}
				if err != nil {
					fail(fmt.Errorf("%s: %w", id, err))
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	reads := 0
	for running := true; running; reads++ {
		select {
		case <-done:
			running = false
		default:
		}
		v.read(t, s)
	}
	for _, err := range errs {
		t.Error(err)
	}
	v.read(t, s)
	v.check(t, s, fmt.Sprintf("after %d reads during the writes and one after", reads))
}
