package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// everything is what the store holds, as its readers see it.
type everything struct {
	Buildsets []*store.Buildset
	Builds    map[string][]*store.Build
	Attempts  map[string][]*store.Attempt
	Holders   []store.Holder
	Waiters   []store.Waiter
	Owners    []store.Owner
}

func snapshot(t *testing.T, s store.Store) everything {
	t.Helper()
	ctx := t.Context()
	e := everything{Builds: map[string][]*store.Build{}, Attempts: map[string][]*store.Attempt{}}
	var err error
	e.Buildsets, err = s.ListBuildsets(ctx, store.Filter{Limit: 1000})
	must(t, "list", err)
	for _, bs := range e.Buildsets {
		bds, err := s.Builds(ctx, bs.ID)
		must(t, "builds", err)
		e.Builds[bs.ID] = bds
		for _, b := range bds {
			as, err := s.Attempts(ctx, bs.ID, b.Job)
			must(t, "attempts", err)
			e.Attempts[bs.ID+"/"+b.Job] = as
		}
	}
	e.Holders, err = s.Holders(ctx)
	must(t, "holders", err)
	e.Waiters, err = s.Waiters(ctx)
	must(t, "waiters", err)
	e.Owners, err = s.Owners(ctx, store.OwnerFilter{})
	must(t, "owners", err)
	return e
}

// testFenced: once its owner is fenced, every write that carries the
// owner's fence is refused with ErrFenced and changes nothing: the
// buildset's start and end by its runner, an attempt's start and end, a
// build's end, semaphore requests (even of a holder already holding) and
// releases, and the lease's renewal. What nobody runs may still be ended
// (EndBuildset without a Fence: the reaper's way).
func testFenced(t *testing.T, s store.Store) {
	ctx := t.Context()
	old := own(t, s, "old")
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "a", "b")
	create(t, s, &store.Buildset{ID: "bs2", Pipeline: "deploy", Commit: "a", CreatedAt: at(time.Second)}, "a")
	must(t, "start bs1", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: old, At: at(time.Second)}))
	must(t, "start bs1/a", s.StartAttempt(ctx, store.StartAttemptParams{Fence: old,
		Attempt: &store.Attempt{BuildsetID: "bs1", Job: "a", Number: 1, Owner: "old", StartedAt: at(2 * time.Second)}}))
	acquire(t, s, semaphore.Request{Holder: "bs1", Buildset: "bs1", Owner: "old", Fence: old, Semaphores: map[string]int{"P": 1}, Since: t0, Now: t0}, true)
	acquire(t, s, semaphore.Request{Holder: "bs1/a", Buildset: "bs1", Owner: "old", Fence: old, Semaphores: map[string]int{"S": 1}, Since: t0, Now: t0}, true)
	acquire(t, s, semaphore.Request{Holder: "bs1/b", Buildset: "bs1", Owner: "old", Fence: old, Semaphores: map[string]int{"S": 1}, Since: t0, Now: t0}, false)

	logKey := store.LogKey{BuildsetID: "bs1", Job: "a", Attempt: 1}
	must(t, "append under the live fence", s.AppendLog(ctx, store.AppendLogParams{LogKey: logKey, Data: []byte("one\n"), At: at(2 * time.Second), Fence: &old}))
	updateHosts(t, s, store.HostsUpdate{BuildsetID: "bs1", Job: "a", Summary: store.HostsSummary{Attempt: 1, Runs: 1}, Fence: old})

	fenced := fence(t, s, "old")
	if fenced.Epoch <= old.Epoch {
		t.Errorf("fenced with epoch %d, was %d", fenced.Epoch, old.Epoch)
	}
	before := snapshot(t, s)
	refused := func(what string, err error) {
		t.Helper()
		t.Run(what, func(t *testing.T) {
			wantErr(t, what, err, store.ErrFenced)
			diff(t, "the store after a refused "+what, before, snapshot(t, s), cmpopts.EquateEmpty())
		})
	}
	// The old epoch, and the new one: a fenced owner has no right to
	// write under any.
	for _, f := range []store.Fence{old, {Owner: "old", Epoch: fenced.Epoch}} {
		at3 := at(3 * time.Second)
		refused("StartBuildset", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs2", Fence: f, At: at3}))
		refused("AdmitBuildset", s.AdmitBuildset(ctx, "bs2", f, at3))
		_, err := s.ClaimBuildsets(ctx, store.ClaimParams{Fence: f, Max: 1})
		refused("ClaimBuildsets", err)
		_, err = s.EndBuildset(ctx, store.EndBuildsetParams{ID: "bs1", Result: store.Success, BuildResult: store.Success, At: at3, Fence: &f})
		refused("EndBuildset", err)
		refused("StartAttempt", s.StartAttempt(ctx, store.StartAttemptParams{Fence: f,
			Attempt: &store.Attempt{BuildsetID: "bs1", Job: "b", Number: 1, Owner: "old", StartedAt: at3}}))
		refused("FinishAttempt", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "a", Number: 1, Result: store.Success, At: at3, Fence: f}))
		refused("FinishBuild", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "b", Result: store.Skipped, At: at3, Fence: f}))
		refused("FinishAttemptAndBuild", s.FinishAttemptAndBuild(ctx,
			store.FinishAttemptParams{BuildsetID: "bs1", Job: "a", Number: 1, Result: store.Success, At: at3, Fence: f},
			store.FinishBuildParams{BuildsetID: "bs1", Job: "a", Result: store.Success, At: at3, Fence: f}))
		_, err = semaphore.TryAcquire(ctx, s, semaphore.Request{Holder: "bs2", Buildset: "bs2", Owner: "old", Fence: f, Semaphores: map[string]int{"Q": 1}, Since: t0, Now: at3})
		refused("UpdateSemaphores", err)
		_, err = semaphore.TryAcquire(ctx, s, semaphore.Request{Holder: "bs1/a", Buildset: "bs1", Owner: "old", Fence: f, Semaphores: map[string]int{"S": 1}, Since: t0, Now: at3})
		refused("UpdateSemaphoresHeld", err)
		refused("ReleaseSemaphores", s.ReleaseSemaphores(ctx, "bs1/a", f))
		refused("ReleaseBuildset", s.ReleaseBuildset(ctx, "bs1", f))
		_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: f, Lease: time.Hour, Now: at3})
		refused("RenewOwner", err)
		refused("AppendLog", s.AppendLog(ctx, store.AppendLogParams{LogKey: logKey, Seq: 1, Offset: 4, Data: []byte("two\n"), At: at3, Fence: &f}))
		if n, err := s.LogSize(ctx, logKey); err != nil || n != 4 {
			t.Errorf("log size after a refused append: %d, %v; want 4", n, err)
		}
		refused("UpdateHosts", s.UpdateHosts(ctx, store.HostsUpdate{BuildsetID: "bs1", Job: "a", Summary: store.HostsSummary{Attempt: 2, Runs: 1}, Fence: f}))
		if bh, err := s.BuildHosts(ctx, "bs1", "a"); err != nil || bh.Summary.Attempt != 1 {
			t.Errorf("hosts after a refused update: %+v, %v; want attempt 1's", bh, err)
		}
	}

	// What the fenced owner ran can still be ended by whoever reaps it.
	ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: "bs1", Result: store.Error, Error: "lost", BuildResult: store.Canceled,
		StartedResult: store.Error, AttemptResult: store.Lost, Reason: "lost", At: at(4 * time.Second)})
	must(t, "end without a fence", err)
	if !ended {
		t.Error("end without a fence: not ended")
	}
	diff(t, "holders after the reaper's end", []string(nil), holding(t, s), cmpopts.EquateEmpty())
}
