package storetest

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// The tests of what `sortie serve` needs: admission, arrival order, crash
// recovery, pauses and marks.

func testSeq(t *testing.T, s store.Store) {
	// CreatedAt goes back in time: Seq follows arrival, not CreatedAt.
	var seqs []int64
	for i := range 5 {
		bs := &store.Buildset{ID: fmt.Sprint("bs", i), Pipeline: "deploy", Commit: "a", CreatedAt: at(time.Duration(-i) * time.Second)}
		create(t, s, bs)
		if i > 0 && bs.Seq <= seqs[i-1] {
			t.Errorf("Seq of %s = %d, not above the previous %d", bs.ID, bs.Seq, seqs[i-1])
		}
		seqs = append(seqs, bs.Seq)
		if got := get(t, s, bs.ID); got.Seq != bs.Seq {
			t.Errorf("GetBuildset %s: Seq = %d, CreateBuildset set %d", bs.ID, got.Seq, bs.Seq)
		}
	}
	// A refused create does not break the order.
	dup := &store.Buildset{ID: "bs0", Pipeline: "deploy", Commit: "a", CreatedAt: t0}
	wantErr(t, "create duplicate", s.CreateBuildset(t.Context(), store.CreateBuildsetParams{Buildset: dup}), store.ErrConflict)
	last := &store.Buildset{ID: "last", Pipeline: "deploy", Commit: "a", CreatedAt: t0}
	create(t, s, last)
	if last.Seq <= seqs[len(seqs)-1] {
		t.Errorf("Seq after a refused create = %d, not above %d", last.Seq, seqs[len(seqs)-1])
	}

	list, err := s.ListBuildsets(t.Context(), store.Filter{})
	must(t, "list", err)
	got := map[string]int64{}
	for _, bs := range list {
		got[bs.ID] = bs.Seq
	}
	want := map[string]int64{"last": last.Seq}
	for i, seq := range seqs {
		want[fmt.Sprint("bs", i)] = seq
	}
	diff(t, "ListBuildsets Seq", want, got)
}

func testSpecNilVersusEmpty(t *testing.T, s store.Store) {
	create(t, s, &store.Buildset{ID: "nil", Pipeline: "deploy", Commit: "a", CreatedAt: t0})
	create(t, s, &store.Buildset{ID: "empty", Pipeline: "deploy", Commit: "a", Spec: []byte{}, CreatedAt: t0})
	create(t, s, &store.Buildset{ID: "set", Pipeline: "deploy", Commit: "a", Spec: []byte(`{}`), CreatedAt: t0})
	for _, id := range []string{"nil", "empty"} {
		if got := get(t, s, id); got.Spec != nil {
			t.Errorf("%s: Spec = %#v, want nil", id, got.Spec)
		}
	}
	if got := get(t, s, "set"); string(got.Spec) != `{}` {
		t.Errorf("Spec = %q, want {}", got.Spec)
	}
	list, err := s.ListBuildsets(t.Context(), store.Filter{})
	must(t, "list", err)
	for _, bs := range list {
		if (bs.ID == "set") != (bs.Spec != nil) {
			t.Errorf("ListBuildsets: %s: Spec = %#v", bs.ID, bs.Spec)
		}
	}
}

func testListByCommit(t *testing.T, s store.Store) {
	const (
		c1 = "0123456789abcdef0123456789abcdef01234567"
		c2 = "1123456789abcdef0123456789abcdef01234567"
	)
	create(t, s, &store.Buildset{ID: "d1", Pipeline: "deploy", Commit: c1, CreatedAt: at(1 * time.Second)})
	create(t, s, &store.Buildset{ID: "h1", Pipeline: "hourly", Commit: c1, CreatedAt: at(2 * time.Second)})
	create(t, s, &store.Buildset{ID: "d2", Pipeline: "deploy", Commit: c2, CreatedAt: at(3 * time.Second)})
	create(t, s, &store.Buildset{ID: "d3", Pipeline: "deploy", Commit: c1, CreatedAt: at(4 * time.Second)})
	for _, tt := range []struct {
		name string
		f    store.Filter
		want []string
	}{
		{"commit", store.Filter{Commit: c1}, []string{"d3", "h1", "d1"}},
		{"other commit", store.Filter{Commit: c2}, []string{"d2"}},
		{"commit and pipeline", store.Filter{Commit: c1, Pipeline: "deploy"}, []string{"d3", "d1"}},
		{"commit and before", store.Filter{Commit: c1, Before: "d3"}, []string{"h1", "d1"}},
		{"commit and limit", store.Filter{Commit: c1, Limit: 1}, []string{"d3"}},
		{"prefix is not a match", store.Filter{Commit: c1[:7]}, nil},
		{"unknown commit", store.Filter{Commit: "f00"}, nil},
	} {
		got, err := s.ListBuildsets(t.Context(), tt.f)
		must(t, tt.name, err)
		diff(t, "ListBuildsets "+tt.name, tt.want, ids(got), cmpopts.EquateEmpty())
	}
}

func testAdmitTransitions(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "bootstrap")

	must(t, "admit", s.AdmitBuildset(ctx, "bs1", own(t, s, "server-1"), at(time.Second)))
	got := get(t, s, "bs1")
	diff(t, "after admit", &store.Buildset{
		ID: "bs1", Pipeline: "deploy", Commit: "a", State: store.BuildsetAdmitted, Owner: "", CreatedAt: t0,
	}, got, ignoreSeq)
	wantErr(t, "admit twice", s.AdmitBuildset(ctx, "bs1", own(t, s, "server-2"), at(2*time.Second)), store.ErrConflict)
	list, err := s.ListBuildsets(ctx, store.Filter{State: store.BuildsetAdmitted})
	must(t, "list admitted", err)
	diff(t, "ListBuildsets admitted", []string{"bs1"}, ids(list))

	// ADMITTED -> RUNNING, with the starter as owner.
	must(t, "start admitted", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "server-1"), At: at(3 * time.Second)}))
	got = get(t, s, "bs1")
	diff(t, "after start", &store.Buildset{
		ID: "bs1", Pipeline: "deploy", Commit: "a", State: store.BuildsetRunning, Owner: "server-1", CreatedAt: t0,
		StartedAt: ptr(at(3 * time.Second)),
	}, got, ignoreSeq)
	checkUTC(t, "StartedAt", got.StartedAt)
	wantErr(t, "admit running", s.AdmitBuildset(ctx, "bs1", own(t, s, "server-1"), at(4*time.Second)), store.ErrConflict)
	wantErr(t, "start running", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "server-1"), At: at(4 * time.Second)}), store.ErrConflict)
	finish(t, s, "bs1", store.Success, "", at(5*time.Second))
	wantErr(t, "admit done", s.AdmitBuildset(ctx, "bs1", own(t, s, "server-1"), at(6*time.Second)), store.ErrConflict)

	// ADMITTED -> DONE: cancelled while waiting for its pipeline semaphore.
	create(t, s, &store.Buildset{ID: "bs2", Pipeline: "deploy", Commit: "a", CreatedAt: t0})
	must(t, "admit bs2", s.AdmitBuildset(ctx, "bs2", own(t, s, "server-1"), at(time.Second)))
	finish(t, s, "bs2", store.Canceled, "", at(2*time.Second))
	diff(t, "finished from ADMITTED", &store.Buildset{
		ID: "bs2", Pipeline: "deploy", Commit: "a", State: store.BuildsetDone, Result: store.Canceled,
		CreatedAt: t0, FinishedAt: ptr(at(2 * time.Second)),
	}, get(t, s, "bs2"), ignoreSeq)

	// QUEUED -> RUNNING stays allowed (`sortie run`), for a buildset
	// pinned to its starter only; a server does not admit it.
	create(t, s, &store.Buildset{ID: "pinned", Pipeline: "deploy", Commit: "a", PinnedTo: "run-1", CreatedAt: t0})
	if got := get(t, s, "pinned"); got.PinnedTo != "run-1" || got.Owner != "" {
		t.Errorf("a pinned buildset: %+v", got)
	}
	wantErr(t, "admit pinned", s.AdmitBuildset(ctx, "pinned", own(t, s, "server-1"), at(time.Second)), store.ErrConflict)
	wantErr(t, "start pinned by another", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "pinned", Fence: own(t, s, "server-1"), At: at(time.Second)}), store.ErrConflict)
	if got := get(t, s, "pinned"); got.State != store.BuildsetQueued {
		t.Errorf("a refused start of a pinned buildset changed it: %+v", got)
	}
	must(t, "start pinned", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "pinned", Fence: own(t, s, "run-1"), At: at(time.Second)}))
	if got := get(t, s, "pinned"); got.State != store.BuildsetRunning || got.Owner != "run-1" || got.PinnedTo != "run-1" {
		t.Errorf("a pinned buildset started: %+v", got)
	}
	create(t, s, &store.Buildset{ID: "bs3", Pipeline: "deploy", Commit: "a", CreatedAt: t0})
	must(t, "start queued", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs3", Fence: own(t, s, "run-1"), At: at(time.Second)}))

	wantErr(t, "admit unknown", s.AdmitBuildset(ctx, "nope", own(t, s, "server-1"), t0), store.ErrNotFound)
}

func testActiveBuildsets(t *testing.T, s store.Store) {
	ctx := t.Context()
	active := func() []string {
		t.Helper()
		bss, err := s.ActiveBuildsets(ctx)
		must(t, "active buildsets", err)
		return ids(bss)
	}
	diff(t, "active of an empty store", []string(nil), active(), cmpopts.EquateEmpty())

	// Created out of time order: oldest first means by arrival (Seq).
	for i, id := range []string{"queued", "done", "running", "admitted", "failed", "late"} {
		create(t, s, &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: at(time.Duration(10-i) * time.Second)}, "base")
	}
	must(t, "admit", s.AdmitBuildset(ctx, "admitted", own(t, s, "server"), at(time.Minute)))
	must(t, "start running", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "running", Fence: own(t, s, "server"), At: at(time.Minute)}))
	must(t, "start done", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "done", Fence: own(t, s, "server"), At: at(time.Minute)}))
	finish(t, s, "done", store.Success, "", at(2*time.Minute))
	finish(t, s, "failed", store.ConfigError, "cycle", at(2*time.Minute))
	diff(t, "active", []string{"queued", "running", "admitted", "late"}, active())

	bss, err := s.ActiveBuildsets(ctx)
	must(t, "active buildsets", err)
	for i := 1; i < len(bss); i++ {
		if bss[i].Seq <= bss[i-1].Seq {
			t.Errorf("ActiveBuildsets: %s (Seq %d) after %s (Seq %d)", bss[i].ID, bss[i].Seq, bss[i-1].ID, bss[i-1].Seq)
		}
	}
	for _, bs := range bss {
		if bs.ID == "running" {
			diff(t, "active running buildset", &store.Buildset{
				ID: "running", Pipeline: "deploy", Commit: "a", State: store.BuildsetRunning, Owner: "server",
				CreatedAt: at(8 * time.Second), StartedAt: ptr(at(time.Minute)),
			}, bs, ignoreSeq)
			checkUTC(t, "ActiveBuildsets", &bs.CreatedAt, bs.StartedAt)
		}
	}

	finish(t, s, "running", store.Canceled, "", at(3*time.Minute))
	diff(t, "active after finish", []string{"queued", "admitted", "late"}, active())
}

// testClaimBuildsets: admitted buildsets have no owner until claimed, a
// released owner's running ones lose theirs, and a claim takes up to Max,
// running ones first (one even when Max is 0), then admitted ones, oldest
// first, each once, with their holders and waiters.
func testClaimBuildsets(t *testing.T, s store.Store) {
	ctx := t.Context()
	claim := func(who string, most int) []string {
		t.Helper()
		got, err := s.ClaimBuildsets(ctx, store.ClaimParams{Fence: own(t, s, who), Max: most})
		must(t, who+" claims", err)
		var ids []string
		for _, bs := range got {
			if bs.Owner != who {
				t.Errorf("%s claimed %s, returned with owner %q", who, bs.ID, bs.Owner)
			}
			ids = append(ids, bs.ID)
		}
		return ids
	}
	for _, id := range []string{"queued", "a1", "a2", "a3", "running", "running2", "done"} {
		create(t, s, &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "a")
	}
	create(t, s, &store.Buildset{ID: "pinned", Pipeline: "deploy", Commit: "a", CreatedAt: t0, PinnedTo: "run"}, "a")
	diff(t, "nothing admitted yet", []string(nil), claim("n1", 10))
	for _, id := range []string{"a1", "a2", "a3"} {
		must(t, "admit "+id, s.AdmitBuildset(ctx, id, own(t, s, "leader"), at(time.Second)))
		if bs := get(t, s, id); bs.State != store.BuildsetAdmitted || bs.Owner != "" {
			t.Errorf("admitted %s: state %s, owner %q; want ADMITTED with no owner", id, bs.State, bs.Owner)
		}
	}
	must(t, "start running", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "running", Fence: own(t, s, "dead"), At: at(time.Second)}))
	must(t, "start running2", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "running2", Fence: own(t, s, "dead"), At: at(time.Second)}))
	must(t, "start done", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "done", Fence: own(t, s, "dead"), At: at(time.Second)}))
	finish(t, s, "done", store.Success, "", at(2*time.Second))
	acquire(t, s, semaphore.Request{Holder: "running", Buildset: "running", Owner: "dead", Semaphores: map[string]int{"bridge": 1}, Since: t0, Now: t0}, true)

	// A live owner's running buildset is its own.
	diff(t, "claim beside a live owner", []string{"a1"}, claim("n1", 1))
	reap(t, s, "dead", "running")
	if bs := get(t, s, "running"); bs.Owner != "" || bs.State != store.BuildsetRunning {
		t.Errorf("a released owner's running buildset: owner %q, state %s; want RUNNING with no owner", bs.Owner, bs.State)
	}
	// A full server (Max 0) still takes one running buildset: its runs
	// may wait for what that one holds.
	before := get(t, s, "running")
	diff(t, "n2 claims while full", []string{"running"}, claim("n2", 0))
	want := *before
	want.Owner = "n2"
	diff(t, "the claimed running buildset", &want, get(t, s, "running"))
	hs, err := s.Holders(ctx)
	must(t, "holders", err)
	if len(hs) != 1 || hs[0].Holder != "running" || hs[0].Owner != "n2" {
		t.Errorf("holders after the claim: %+v, want the kept holder moved to n2", hs)
	}
	// Running first, then the oldest admitted, up to Max in all.
	diff(t, "n2 claims two", []string{"running2", "a2"}, claim("n2", 2))
	diff(t, "n2 full, nothing running left", []string(nil), claim("n2", 0))
	diff(t, "n3 claims the rest", []string{"a3"}, claim("n3", 5))
	diff(t, "nothing left", []string(nil), claim("n3", 5))
	for id, owner := range map[string]string{"queued": "", "pinned": "", "done": "dead", "a1": "n1", "a2": "n2", "a3": "n3", "running2": "n2"} {
		if bs := get(t, s, id); bs.Owner != owner {
			t.Errorf("%s: owner %q, want %q", id, bs.Owner, owner)
		}
	}
	// The claimer goes on with what it claimed.
	must(t, "start claimed", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "a2", Fence: own(t, s, "n2"), At: at(3 * time.Second)}))
	must(t, "release claimed", s.ReleaseBuildset(ctx, "running", own(t, s, "n2")))
}

// testCancelRequests: a cancel asked of a buildset's owner is read by
// that owner alone, until the buildset is DONE; one asked of a buildset
// not claimed yet is read by whoever claims it.
func testCancelRequests(t *testing.T, s store.Store) {
	ctx := t.Context()
	reqs := func(owner string) []store.CancelRequest {
		t.Helper()
		rs, err := s.CancelRequests(ctx, owner)
		must(t, "cancel requests of "+owner, err)
		return rs
	}
	for _, id := range []string{"bs1", "bs2", "bs3", "done"} {
		create(t, s, &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "a")
	}
	for _, id := range []string{"bs1", "bs2", "done"} {
		must(t, "start "+id, s.StartBuildset(ctx, store.StartBuildsetParams{ID: id, Fence: own(t, s, "n1"), At: at(time.Second)}))
	}
	finish(t, s, "done", store.Success, "", at(2*time.Second))
	diff(t, "none asked", []store.CancelRequest(nil), reqs("n1"), cmpopts.EquateEmpty())

	must(t, "ask bs2", s.RequestCancel(ctx, "bs2", "alice"))
	must(t, "ask bs1", s.RequestCancel(ctx, "bs1", "bob"))
	wantErr(t, "ask of a DONE buildset", s.RequestCancel(ctx, "done", "carol"), store.ErrConflict)
	wantErr(t, "ask of an unknown buildset", s.RequestCancel(ctx, "nope", "carol"), store.ErrNotFound)
	diff(t, "asked of n1", []store.CancelRequest{{Buildset: "bs1", By: "bob"}, {Buildset: "bs2", By: "alice"}}, reqs("n1"))
	diff(t, "asked of n2", []store.CancelRequest(nil), reqs("n2"), cmpopts.EquateEmpty())

	// Asked while admitted and unclaimed: the claimer reads it.
	must(t, "admit bs3", s.AdmitBuildset(ctx, "bs3", own(t, s, "leader"), at(time.Second)))
	must(t, "ask bs3", s.RequestCancel(ctx, "bs3", "dave"))
	_, err := s.ClaimBuildsets(ctx, store.ClaimParams{Fence: own(t, s, "n2"), Max: 1})
	must(t, "claim bs3", err)
	diff(t, "asked of the claimer", []store.CancelRequest{{Buildset: "bs3", By: "dave"}}, reqs("n2"))

	finish(t, s, "bs1", store.Canceled, "", at(3*time.Second))
	diff(t, "once ended, no longer asked", []store.CancelRequest{{Buildset: "bs2", By: "alice"}}, reqs("n1"))
}

// testClaimOnce: servers claiming at once never get the same buildset, and
// between them take every one.
func testClaimOnce(t *testing.T, s store.Store) {
	ctx := t.Context()
	const n = 24
	var want []string
	for i := range n {
		id := fmt.Sprintf("bs%02d", i)
		create(t, s, &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "a")
		must(t, "admit "+id, s.AdmitBuildset(ctx, id, own(t, s, "leader"), at(time.Second)))
		want = append(want, id)
	}
	claimers := []string{"n1", "n2", "n3"}
	fences := map[string]store.Fence{}
	for _, c := range claimers {
		fences[c] = own(t, s, c)
	}
	var (
		mu   sync.Mutex
		got  = map[string]string{}
		wg   sync.WaitGroup
		errs = make(chan error, len(claimers))
	)
	for _, c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				bss, err := s.ClaimBuildsets(ctx, store.ClaimParams{Fence: fences[c], Max: 2})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", c, err)
					return
				}
				if len(bss) == 0 {
					return
				}
				mu.Lock()
				for _, bs := range bss {
					if prev, ok := got[bs.ID]; ok {
						errs <- fmt.Errorf("%s claimed by %s and %s", bs.ID, prev, c)
					}
					got[bs.ID] = c
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	diff(t, "claimed", want, slices.Sorted(maps.Keys(got)))
	for id, c := range got {
		if bs := get(t, s, id); bs.Owner != c {
			t.Errorf("%s claimed by %s, owner %q in the store", id, c, bs.Owner)
		}
	}
}

func testRunningAttempts(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "zuul", "base", "bootstrap", "idle")
	create(t, s, &store.Buildset{ID: "bs2", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base")

	got, err := s.RunningAttempts(ctx, "bs1")
	must(t, "running attempts before any", err)
	diff(t, "running attempts before any", []*store.Attempt(nil), got, cmpopts.EquateEmpty())

	start := func(id, job string, n int, owner string) {
		t.Helper()
		must(t, fmt.Sprintf("start %s/%s #%d", id, job, n),
			s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: id, Job: job, Number: n, Owner: owner, StartedAt: at(time.Duration(n) * time.Second), Log: fmt.Sprintf("%s.%d", job, n)}, Fence: own(t, s, owner)}))
	}
	start("bs1", "zuul", 1, "p1")
	start("bs1", "base", 1, "p1")
	must(t, "finish base #1", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 1, Result: store.Retry, Error: "ssh: refused", At: at(2 * time.Second), Fence: writer(t, s)}))
	start("bs1", "base", 2, "p1")
	start("bs1", "bootstrap", 1, "p1")
	must(t, "finish bootstrap", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "bootstrap", Number: 1, Result: store.Success, Error: "", At: at(3 * time.Second), Fence: writer(t, s)}))
	start("bs2", "base", 1, "p2") // another buildset's

	got, err = s.RunningAttempts(ctx, "bs1")
	must(t, "running attempts", err)
	want := []*store.Attempt{
		{BuildsetID: "bs1", Job: "base", Number: 2, Owner: "p1", StartedAt: at(2 * time.Second), Log: "base.2"},
		{BuildsetID: "bs1", Job: "zuul", Number: 1, Owner: "p1", StartedAt: at(1 * time.Second), Log: "zuul.1"},
	}
	diff(t, "RunningAttempts", want, got)
	for _, a := range got {
		checkUTC(t, "RunningAttempts", &a.StartedAt)
	}

	// Finished without a time (FinishedAt nil), it has a result: not running.
	must(t, "finish zuul without a time", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "zuul", Number: 1, Result: store.Lost, Error: "owner died", At: time.Time{}, Fence: writer(t, s)}))
	got, err = s.RunningAttempts(ctx, "bs1")
	must(t, "running attempts after lost", err)
	diff(t, "RunningAttempts after lost", want[:1], got)

	must(t, "finish base #2", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 2, Result: store.Success, Error: "", At: at(4 * time.Second), Fence: writer(t, s)}))
	got, err = s.RunningAttempts(ctx, "bs1")
	must(t, "running attempts after all finished", err)
	diff(t, "RunningAttempts after all finished", []*store.Attempt(nil), got, cmpopts.EquateEmpty())

	_, err = s.RunningAttempts(ctx, "nope")
	wantErr(t, "running attempts of unknown", err, store.ErrNotFound)
}

// testReleaseOwner: releasing an owner drops its waiters and holders, and
// no one else's, in one step of its life.
func testReleaseOwner(t *testing.T, s store.Store) {
	ctx := t.Context()
	T := at(time.Minute)
	sem := map[string]int{"S": 1}
	acquire(t, s, owned("d1", "dead", map[string]int{"S": 1, "T": 2}, t0), true)
	acquire(t, s, owned("h1", "heir", map[string]int{"T": 2}, t0), true)
	acquire(t, s, owned("d2", "dead", sem, t0), false)
	acquire(t, s, owned("h2", "heir", sem, t0), false)

	wantErr(t, "release a live owner", s.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: "dead"}), store.ErrConflict)
	diff(t, "holders after a refused release", []string{"S:d1", "T:d1", "T:h1"}, holding(t, s))
	reap(t, s, "dead")
	diff(t, "holders", []string{"T:h1"}, holding(t, s))
	diff(t, "waiters", []string{"S:h2"}, waiting(t, s))
	if o := owner(t, s, "dead"); o.State != store.OwnerReleased {
		t.Errorf("released owner: %+v", o)
	}

	// The released owner's holder may ask again, as anyone.
	acquire(t, s, owned("h2", "heir2", sem, T), true)

	wantErr(t, "release unknown owner", s.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: "nobody"}), store.ErrNotFound)
	wantErr(t, "release again", s.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: "dead"}), store.ErrConflict)
	diff(t, "holders at the end", []string{"S:h2", "T:h1"}, holding(t, s))
}

// testReleaseOwnerKeeps: a dead server's running buildset keeps its
// pipeline semaphore until a server claims it (ClaimBuildsets), and
// nobody is granted it in between, not even a waiter ranked ahead.
func testReleaseOwnerKeeps(t *testing.T, s store.Store) {
	ctx := t.Context()
	T := at(time.Minute)
	create(t, s, &store.Buildset{ID: "deploy", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "a")
	must(t, "start deploy", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "deploy", Fence: own(t, s, "dead"), At: at(time.Second)}))
	bridge := map[string]int{"bridge": 1}
	acquire(t, s, semaphore.Request{Holder: "deploy", Buildset: "deploy", Owner: "dead", Semaphores: bridge, Precedence: 2, Since: t0, Now: t0}, true)
	acquire(t, s, semaphore.Request{Holder: "deploy/a", Buildset: "deploy", Owner: "dead", Semaphores: map[string]int{"pool": 1}, Since: t0, Now: t0}, true)
	// An older, higher-ranked waiter of another owner.
	acquire(t, s, semaphore.Request{Holder: "hourly", Buildset: "hourly", Owner: "heir", Semaphores: bridge, Precedence: 3, Since: t0.Add(-time.Hour), Now: t0}, false)

	reap(t, s, "dead", "deploy")
	diff(t, "holders after release", []string{"bridge:deploy"}, holding(t, s))
	// The kept holder is not free: the waiter ranked ahead still waits,
	// whatever the time.
	acquire(t, s, semaphore.Request{Holder: "hourly", Buildset: "hourly", Owner: "heir", Semaphores: bridge, Precedence: 3, Since: t0.Add(-time.Hour), Now: T}, false)
	acquire(t, s, semaphore.Request{Holder: "hourly", Buildset: "hourly", Owner: "heir", Semaphores: bridge, Precedence: 3, Since: t0.Add(-time.Hour), Now: at(1000 * time.Hour)}, false)

	claimed, err := s.ClaimBuildsets(ctx, store.ClaimParams{Fence: own(t, s, "heir")})
	must(t, "claim", err)
	if len(claimed) != 1 || claimed[0].ID != "deploy" {
		t.Fatalf("claimed %v, want deploy", claimed)
	}
	hs, err := s.Holders(ctx)
	must(t, "holders", err)
	if len(hs) != 1 || hs[0].Owner != "heir" {
		t.Fatalf("after adoption the holder is %+v, want deploy owned by heir", hs)
	}
	// The adopter's acquire for the buildset is the no-op of a holder.
	acquire(t, s, semaphore.Request{Holder: "deploy", Buildset: "deploy", Owner: "heir", Semaphores: bridge, Precedence: 2, Since: t0, Now: T}, true)
	must(t, "release deploy", s.ReleaseBuildset(ctx, "deploy", own(t, s, "heir")))
	acquire(t, s, semaphore.Request{Holder: "hourly", Buildset: "hourly", Owner: "heir", Semaphores: bridge, Precedence: 3, Since: t0.Add(-time.Hour), Now: T}, true)
}

func testPauses(t *testing.T, s store.Store) {
	ctx := t.Context()
	pauses := func() []store.Pause {
		t.Helper()
		ps, err := s.Pauses(ctx)
		must(t, "pauses", err)
		for _, p := range ps {
			checkUTC(t, "Pause.At", &p.At)
		}
		return ps
	}
	diff(t, "no pauses", []store.Pause(nil), pauses(), cmpopts.EquateEmpty())

	must(t, "pause hourly", s.SetPause(ctx, store.Pause{Pipeline: "hourly", By: "alice", Reason: "maintenance", At: at(time.Second)}))
	must(t, "pause all", s.SetPause(ctx, store.Pause{Pipeline: "", By: "bob", Reason: "incident", At: at(2 * time.Second)}))
	must(t, "pause deploy", s.SetPause(ctx, store.Pause{Pipeline: "deploy", At: at(3 * time.Second)}))
	diff(t, "pauses", []store.Pause{
		{Pipeline: "", By: "bob", Reason: "incident", At: at(2 * time.Second)},
		{Pipeline: "deploy", At: at(3 * time.Second)},
		{Pipeline: "hourly", By: "alice", Reason: "maintenance", At: at(time.Second)},
	}, pauses())

	// Pausing again replaces.
	must(t, "pause hourly again", s.SetPause(ctx, store.Pause{Pipeline: "hourly", By: "carol", Reason: "still", At: at(4 * time.Second)}))
	// Clearing the pause of all leaves each pipeline's.
	must(t, "clear all", s.ClearPause(ctx, ""))
	diff(t, "pauses after clear all", []store.Pause{
		{Pipeline: "deploy", At: at(3 * time.Second)},
		{Pipeline: "hourly", By: "carol", Reason: "still", At: at(4 * time.Second)},
	}, pauses())

	must(t, "clear deploy", s.ClearPause(ctx, "deploy"))
	must(t, "clear deploy again", s.ClearPause(ctx, "deploy"))
	must(t, "clear never paused", s.ClearPause(ctx, "nope"))
	must(t, "clear all again", s.ClearPause(ctx, ""))
	diff(t, "pauses at the end", []store.Pause{
		{Pipeline: "hourly", By: "carol", Reason: "still", At: at(4 * time.Second)},
	}, pauses())
}

func testMarks(t *testing.T, s store.Store) {
	ctx := t.Context()
	mark := func(key string) string {
		t.Helper()
		v, err := s.GetMark(ctx, key)
		must(t, "get mark "+key, err)
		return v
	}
	if v := mark("cron/hourly"); v != "" {
		t.Errorf("unset mark = %q, want empty", v)
	}
	must(t, "set", s.SetMark(ctx, "cron/hourly", "2026-03-14T15:00:00Z"))
	must(t, "set other", s.SetMark(ctx, "poll/deploy", "0123456789abcdef0123456789abcdef01234567"))
	if v := mark("cron/hourly"); v != "2026-03-14T15:00:00Z" {
		t.Errorf("mark = %q", v)
	}
	must(t, "replace", s.SetMark(ctx, "cron/hourly", "2026-03-14T16:00:00Z"))
	if v := mark("cron/hourly"); v != "2026-03-14T16:00:00Z" {
		t.Errorf("replaced mark = %q", v)
	}
	if v := mark("poll/deploy"); v != "0123456789abcdef0123456789abcdef01234567" {
		t.Errorf("other mark = %q", v)
	}
	if v := mark("cron/HOURLY"); v != "" {
		t.Errorf("keys are case-sensitive: cron/HOURLY = %q", v)
	}
}
