package storetest

import (
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// testTimePrecision: every time a store is given comes back in UTC, the
// same instant to the microsecond: what is below it may be kept or
// dropped, never rounded up (a lease would then outlive its end). The times
// here are 789 ns past a whole microsecond.
func testTimePrecision(t *testing.T, s store.Store) {
	ctx := t.Context()
	odd := func(d time.Duration) time.Time { return at(d).Add(789 * time.Nanosecond) }
	same := func(what string, want time.Time, got *time.Time) {
		t.Helper()
		if got == nil {
			t.Errorf("%s = nil, want %v", what, want)
			return
		}
		checkUTC(t, what, got)
		if !got.Truncate(time.Microsecond).Equal(want.Truncate(time.Microsecond)) {
			t.Errorf("%s = %s, want %s to the microsecond", what,
				got.UTC().Format(time.RFC3339Nano), want.UTC().Format(time.RFC3339Nano))
		}
	}

	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: odd(0)}, "base")
	must(t, "start", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "p"), At: odd(time.Second)}))
	must(t, "start attempt", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{
		BuildsetID: "bs1", Job: "base", Number: 1, Owner: "p", StartedAt: odd(2 * time.Second)}, Fence: own(t, s, "p")}))
	must(t, "finish attempt", s.FinishAttemptAndBuild(ctx,
		store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 1, Result: store.Success, At: odd(3 * time.Second), Fence: writer(t, s)},
		store.FinishBuildParams{BuildsetID: "bs1", Job: "base", Result: store.Success, At: odd(3 * time.Second), Fence: writer(t, s)}))
	finish(t, s, "bs1", store.Success, "", odd(4*time.Second))
	bs := get(t, s, "bs1")
	same("Buildset.CreatedAt", odd(0), &bs.CreatedAt)
	same("Buildset.StartedAt", odd(time.Second), bs.StartedAt)
	same("Buildset.FinishedAt", odd(4*time.Second), bs.FinishedAt)
	b := build(t, s, "bs1", "base")
	same("Build.StartedAt", odd(2*time.Second), b.StartedAt)
	same("Build.FinishedAt", odd(3*time.Second), b.FinishedAt)
	atts, err := s.Attempts(ctx, "bs1", "base")
	must(t, "attempts", err)
	if len(atts) != 1 {
		t.Fatalf("attempts: %+v", atts)
	}
	same("Attempt.StartedAt", odd(2*time.Second), &atts[0].StartedAt)
	same("Attempt.FinishedAt", odd(3*time.Second), atts[0].FinishedAt)

	must(t, "create config error", s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset:    &store.Buildset{ID: "bad", Pipeline: "deploy", Commit: "a", CreatedAt: odd(0), FinishedAt: ptr(odd(5 * time.Second))},
		ConfigError: "cycle",
	}))
	same("FinishedAt of a config error", odd(5*time.Second), get(t, s, "bad").FinishedAt)

	_, err = update(t, s, []string{"S"}, odd(6*time.Second), apply(store.SemaphoreChange{
		AddHolders: []store.Holder{{Semaphore: "S", Holder: "h", Buildset: "bs1", Owner: "p", AcquiredAt: odd(6 * time.Second)}},
		AddWaiters: []store.Waiter{{Semaphore: "S", Holder: "w", Buildset: "bs2", Owner: "p", Since: odd(7 * time.Second)}},
	}))
	must(t, "update semaphores", err)
	hs, err := s.Holders(ctx)
	must(t, "holders", err)
	ws, err := s.Waiters(ctx)
	must(t, "waiters", err)
	if len(hs) != 1 || len(ws) != 1 {
		t.Fatalf("holders %+v, waiters %+v", hs, ws)
	}
	same("Holder.AcquiredAt", odd(6*time.Second), &hs[0].AcquiredAt)
	same("Waiter.Since", odd(7*time.Second), &ws[0].Since)

	must(t, "pause", s.SetPause(ctx, store.Pause{Pipeline: "deploy", At: odd(8 * time.Second)}))
	ps, err := s.Pauses(ctx)
	must(t, "pauses", err)
	if len(ps) != 1 {
		t.Fatalf("pauses: %+v", ps)
	}
	same("Pause.At", odd(8*time.Second), &ps[0].At)

	// A lease until a time between two microseconds runs at the first and
	// has ended at the next.
	register(t, s, "leased", odd(0), 9*time.Second)
	same("Owner.ExpiresAt", odd(9*time.Second), ptr(owner(t, s, "leased").ExpiresAt))
	for _, tc := range []struct {
		now  time.Time
		want bool
	}{{at(9 * time.Second), true}, {at(9*time.Second + time.Microsecond), false}} {
		fenced, err := s.FenceOwners(ctx, store.FenceOwnersParams{Now: tc.now, IDs: []string{"leased"}})
		must(t, "fence", err)
		if alive := len(fenced) == 0; alive != tc.want {
			t.Errorf("a lease until %s: alive at %s = %v, want %v", odd(9*time.Second).UTC().Format(time.RFC3339Nano),
				tc.now.UTC().Format(time.RFC3339Nano), alive, tc.want)
		}
	}
}
