package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/store"
)

// update runs UpdateSemaphores with decide as "p", whose rows the cases
// add, and returns the view decide was given (the last one, if it ran
// more than once).
func update(t *testing.T, s store.Store, names []string, now time.Time, decide func(store.SemaphoreView) (store.SemaphoreChange, error)) (store.SemaphoreView, error) {
	t.Helper()
	return updateAs(t, s, own(t, s, "p"), names, now, decide)
}

// updateAs is update under the fence f.
func updateAs(t *testing.T, s store.Store, f store.Fence, names []string, now time.Time, decide func(store.SemaphoreView) (store.SemaphoreChange, error)) (store.SemaphoreView, error) {
	t.Helper()
	var seen store.SemaphoreView
	err := s.UpdateSemaphores(t.Context(), store.LockSemaphoresParams{Names: names, Now: now, Fence: f},
		func(v store.SemaphoreView) (store.SemaphoreChange, error) {
			seen = v
			return decide(v)
		})
	return seen, err
}

// apply is a decide that applies ch whatever the view.
func apply(ch store.SemaphoreChange) func(store.SemaphoreView) (store.SemaphoreChange, error) {
	return func(store.SemaphoreView) (store.SemaphoreChange, error) { return ch, nil }
}

// testUpdateView: decide sees every row of the named semaphores, and only
// theirs, in UTC and in the order of Holders and Waiters, with the time it
// was asked at.
func testUpdateView(t *testing.T, s store.Store) {
	_, err := update(t, s, []string{"A", "B", "C"}, t0, apply(store.SemaphoreChange{
		AddHolders: []store.Holder{
			{Semaphore: "A", Holder: "h2", Buildset: "bs2", Owner: "p", AcquiredAt: at(2 * time.Second)},
			{Semaphore: "A", Holder: "h1", Buildset: "bs1", Owner: "p", AcquiredAt: at(time.Second)},
		},
		AddWaiters: []store.Waiter{
			{Semaphore: "B", Holder: "w2", Buildset: "bs4", Owner: "p", Precedence: 2, Since: at(2 * time.Second)},
		},
	}))
	must(t, "fill as p", err)
	_, err = updateAs(t, s, own(t, s, "q"), []string{"A", "C"}, t0, apply(store.SemaphoreChange{
		AddHolders: []store.Holder{
			{Semaphore: "C", Holder: "h3", Buildset: "bs3", Owner: "q", AcquiredAt: at(time.Second)},
		},
		AddWaiters: []store.Waiter{
			{Semaphore: "A", Holder: "w1", Buildset: "bs5", Owner: "q", Precedence: 1, Since: at(time.Second)},
			{Semaphore: "C", Holder: "w3", Buildset: "bs6", Owner: "q", Precedence: 0, Since: t0},
		},
	}))
	must(t, "fill as q", err)
	// Rows of another owner than the fence's are refused.
	_, err = update(t, s, []string{"A"}, t0, apply(store.SemaphoreChange{
		AddHolders: []store.Holder{{Semaphore: "A", Holder: "h4", Buildset: "bs7", Owner: "q", AcquiredAt: t0}},
	}))
	if err == nil {
		t.Error("a row of q added under p's fence: no error")
	}

	now := at(time.Minute)
	v, err := update(t, s, []string{"B", "A"}, now, apply(store.SemaphoreChange{}))
	must(t, "read", err)
	diff(t, "view", store.SemaphoreView{
		Now: now,
		Holders: []store.Holder{
			{Semaphore: "A", Holder: "h1", Buildset: "bs1", Owner: "p", AcquiredAt: at(time.Second)},
			{Semaphore: "A", Holder: "h2", Buildset: "bs2", Owner: "p", AcquiredAt: at(2 * time.Second)},
		},
		Waiters: []store.WaiterView{
			{Waiter: store.Waiter{Semaphore: "A", Holder: "w1", Buildset: "bs5", Owner: "q", Precedence: 1, Since: at(time.Second)}, Alive: true},
			{Waiter: store.Waiter{Semaphore: "B", Holder: "w2", Buildset: "bs4", Owner: "p", Precedence: 2, Since: at(2 * time.Second)}, Alive: true},
		},
	}, v)
	for _, h := range v.Holders {
		checkUTC(t, "AcquiredAt", &h.AcquiredAt)
	}
	for _, w := range v.Waiters {
		checkUTC(t, "Since", &w.Since)
	}

	v, err = update(t, s, []string{"nothing"}, now, apply(store.SemaphoreChange{}))
	must(t, "read an unknown semaphore", err)
	diff(t, "view of an unknown semaphore", store.SemaphoreView{Now: now}, v, cmpopts.EquateEmpty())
}

// testUpdateAliveFlag: a waiter is alive while its owner is live and its
// lease runs (until T inclusive); not once it is fenced, whatever its
// lease, nor when its owner was never registered.
func testUpdateAliveFlag(t *testing.T, s store.Store) {
	T := at(time.Minute)
	short := register(t, s, "short", t0, T.Sub(t0))
	long := register(t, s, "long", t0, T.Add(time.Hour).Sub(t0))
	fenced := register(t, s, "fenced", t0, longLease)
	for _, w := range []store.Waiter{
		{Semaphore: "S", Holder: "a", Buildset: "a", Owner: "short", Since: t0},
		{Semaphore: "S", Holder: "b", Buildset: "b", Owner: "long", Since: t0},
		{Semaphore: "S", Holder: "c", Buildset: "c", Owner: "fenced", Since: t0},
	} {
		f := map[string]store.Fence{"short": short, "long": long, "fenced": fenced}[w.Owner]
		_, err := updateAs(t, s, f, []string{"S"}, t0, apply(store.SemaphoreChange{AddWaiters: []store.Waiter{w}}))
		must(t, "wait "+w.Holder, err)
	}
	alive := func(now time.Time) map[string]bool {
		t.Helper()
		v, err := updateAs(t, s, store.Fence{}, []string{"S"}, now, apply(store.SemaphoreChange{}))
		must(t, "read", err)
		out := map[string]bool{}
		for _, w := range v.Waiters {
			out[w.Holder] = w.Alive
		}
		return out
	}
	diff(t, "alive at T", map[string]bool{"a": true, "b": true, "c": true}, alive(T))
	diff(t, "alive after T", map[string]bool{"a": false, "b": true, "c": true}, alive(T.Add(time.Microsecond)))
	fence(t, s, "fenced")
	diff(t, "alive once fenced", map[string]bool{"a": false, "b": true, "c": false}, alive(T.Add(time.Microsecond)))
	// Reading drops nothing by itself: a dead waiter is dropped only by a
	// change that says so.
	diff(t, "a dead waiter stays until dropped", map[string]bool{"a": false, "b": false, "c": false}, alive(T.Add(2*time.Hour)))
	// Released, its waiter is gone.
	reap(t, s, "fenced")
	diff(t, "a released owner's waiter is gone", map[string]bool{"a": true, "b": true}, alive(T))
}

// testUpdateAtomic: a decide that fails, or a change that cannot be
// applied whole, changes nothing.
func testUpdateAtomic(t *testing.T, s store.Store) {
	_, err := update(t, s, []string{"S", "T"}, t0, apply(store.SemaphoreChange{
		AddHolders: []store.Holder{{Semaphore: "S", Holder: "h1", Buildset: "bs1", Owner: "p", AcquiredAt: t0}},
		AddWaiters: []store.Waiter{{Semaphore: "T", Holder: "w1", Buildset: "bs2", Owner: "p", Since: t0}},
	}))
	must(t, "fill", err)
	before := [2][]string{holding(t, s), waiting(t, s)}
	unchanged := func(what string) {
		t.Helper()
		diff(t, what, before, [2][]string{holding(t, s), waiting(t, s)})
	}

	refused := errors.New("refused by decide")
	_, err = update(t, s, []string{"S"}, t0, func(store.SemaphoreView) (store.SemaphoreChange, error) {
		return store.SemaphoreChange{AddHolders: []store.Holder{{Semaphore: "S", Holder: "h2", Buildset: "bs3", Owner: "p", AcquiredAt: t0}}}, refused
	})
	wantErr(t, "a decide that fails", err, refused)
	unchanged("after a decide that fails")

	// The drop and the first holder would apply; the second holder exists.
	_, err = update(t, s, []string{"S", "T"}, t0, apply(store.SemaphoreChange{
		DropWaiters: []store.WaiterKey{{Semaphore: "T", Holder: "w1"}},
		AddHolders: []store.Holder{
			{Semaphore: "T", Holder: "h1", Buildset: "bs1", Owner: "p", AcquiredAt: t0},
			{Semaphore: "S", Holder: "h1", Buildset: "bs1", Owner: "p", AcquiredAt: t0},
		},
	}))
	if err == nil {
		t.Error("a holder added twice: no error")
	}
	unchanged("after a change that cannot be applied")

	// A change may touch only the semaphores locked.
	for name, ch := range map[string]store.SemaphoreChange{
		"holder": {AddHolders: []store.Holder{{Semaphore: "T", Holder: "h3", Buildset: "bs4", Owner: "p", AcquiredAt: t0}}},
		"waiter": {AddWaiters: []store.Waiter{{Semaphore: "T", Holder: "h3", Buildset: "bs4", Owner: "p", Since: t0}}},
		"drop":   {DropWaiters: []store.WaiterKey{{Semaphore: "T", Holder: "w1"}}},
	} {
		// A row of the locked semaphore goes with it, and must not stay
		// either.
		ch.AddWaiters = append(ch.AddWaiters, store.Waiter{Semaphore: "S", Holder: "w4", Buildset: "bs5", Owner: "p", Since: t0})
		_, err := update(t, s, []string{"S"}, t0, apply(ch))
		if err == nil {
			t.Errorf("a %s of a semaphore not locked: no error", name)
		}
		unchanged("after a " + name + " of a semaphore not locked")
	}
}

// testUpdateKeepsFirstRank: adding a waiter row that exists keeps the
// first one, rank included; dropping a row that is not there is no error.
func testUpdateKeepsFirstRank(t *testing.T, s store.Store) {
	first := store.Waiter{Semaphore: "S", Holder: "w", Buildset: "bs", Owner: "p", Precedence: 2, Since: t0}
	_, err := update(t, s, []string{"S"}, t0, apply(store.SemaphoreChange{AddWaiters: []store.Waiter{first}}))
	must(t, "wait", err)
	again := first
	again.Precedence, again.Since = 0, at(time.Hour)
	_, err = update(t, s, []string{"S"}, at(time.Hour), apply(store.SemaphoreChange{
		AddWaiters:  []store.Waiter{again},
		DropWaiters: []store.WaiterKey{{Semaphore: "S", Holder: "nobody"}},
	}))
	must(t, "wait again", err)
	ws, err := s.Waiters(t.Context())
	must(t, "waiters", err)
	diff(t, "waiters", []store.Waiter{{Semaphore: "S", Holder: "w", Buildset: "bs", Owner: "p", Precedence: 2, Since: t0.UTC()}}, ws)

	// Dropped then added in one change: the new rank.
	_, err = update(t, s, []string{"S"}, at(time.Hour), apply(store.SemaphoreChange{
		DropWaiters: []store.WaiterKey{{Semaphore: "S", Holder: "w"}},
		AddWaiters:  []store.Waiter{again},
	}))
	must(t, "wait anew", err)
	ws, err = s.Waiters(t.Context())
	must(t, "waiters", err)
	diff(t, "waiters after a new wait", []store.Waiter{{Semaphore: "S", Holder: "w", Buildset: "bs", Owner: "p", Precedence: 0, Since: at(time.Hour).UTC()}}, ws)
}
