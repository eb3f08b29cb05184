package semaphore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// Request asks for every semaphore of Semaphores at once for one holder.
type Request struct {
	// Holder identifies the holder, unique in the store: for a build
	// "<buildset>/<job>", for a buildset's pipeline semaphore "<buildset>".
	// A holder asks for the same semaphores each time (its frozen spec's).
	Holder string
	// Buildset the holder belongs to, so ReleaseBuildset can free them all.
	Buildset string
	// Owner is the process whose lease keeps the holder (and waiter) alive.
	Owner string
	// Fence is Owner's right to write (Client.Fence): the rows the
	// request adds are refused (store.ErrFenced) unless it is live.
	Fence store.Fence
	// Semaphores maps each name to its max, as the acquirer's config says.
	Semaphores map[string]int
	// Precedence ranks waiters: higher first, then the older Since. A
	// waiter's precedence counts one higher for every PrecedenceAging it
	// has waited (see Rank), so that nothing waits forever.
	Precedence int
	// Since is when the holder began to wait; zero means Now.
	Since time.Time
	// Now is when the request is decided; it must be set.
	Now time.Time
}

// Decide applies the fairness rule of SPEC §2.4 to one request, given the
// holders and waiters of its semaphores (store.UpdateSemaphores), and
// returns whether it is granted and the change that records it. It is
// pure: the same request and view give the same answer.
//
// A request is granted all or nothing: for every semaphore, its holders
// plus the live waiters ranked ahead of the request must stay below its
// max, so that each waiter ahead keeps one slot of each semaphore it waits
// for, and a max-3 semaphore with one waiter ahead still lets another in.
// Ahead means a higher rank (the precedence plus one per PrecedenceAging
// waited, at Now), then an older Since, then the smaller holder name. A
// holder keeps the rank of its first request: while it has a waiter row
// its precedence and Since are the row's, not the request's. Waiters whose
// owner is dead are dropped and count for nothing; holders count whoever
// their owner, since what they guard may still run until their owner is
// released (store.Owners.ReleaseOwner). A holder that holds any of the
// semaphores already is granted again with nothing recorded. A refused
// request is recorded as a waiter of each semaphore it is not waiting for
// yet; a granted one holds each and waits for none.
func Decide(r Request, v store.SemaphoreView) (granted bool, ch store.SemaphoreChange) {
	// Stored times carry no monotonic reading: compare wall clocks only,
	// as every process sharing the store does.
	now := r.Now.Round(0)
	since := r.Since.Round(0)
	if since.IsZero() {
		since = now
	}
	precedence := r.Precedence
	var first *store.Waiter // the holder's oldest live waiter row
	own := map[string]bool{}
	var live []store.Waiter
	for _, w := range v.Waiters {
		if !w.Alive {
			ch.DropWaiters = append(ch.DropWaiters, store.WaiterKey{Semaphore: w.Semaphore, Holder: w.Holder})
			continue
		}
		if w.Holder == r.Holder {
			own[w.Semaphore] = true
			if first == nil || w.Since.Before(first.Since) {
				first = &w.Waiter
			}
			continue
		}
		live = append(live, w.Waiter)
	}
	for _, h := range v.Holders {
		if h.Holder == r.Holder {
			return true, ch
		}
	}
	if first != nil {
		precedence, since = first.Precedence, first.Since
	}
	rank := Rank(precedence, since, now)
	ahead := func(w store.Waiter) bool {
		wr := Rank(w.Precedence, w.Since, now)
		switch {
		case wr != rank:
			return wr > rank
		case !w.Since.Equal(since):
			return w.Since.Before(since)
		}
		return w.Holder < r.Holder
	}

	names := slices.Sorted(maps.Keys(r.Semaphores))
	granted = true
	for _, name := range names {
		taken := 0
		for _, h := range v.Holders {
			if h.Semaphore == name {
				taken++
			}
		}
		for _, w := range live {
			if w.Semaphore == name && ahead(w) {
				taken++
			}
		}
		if taken >= r.Semaphores[name] {
			granted = false
			break
		}
	}
	for _, name := range names {
		switch {
		case granted:
			ch.AddHolders = append(ch.AddHolders, store.Holder{
				Semaphore: name, Holder: r.Holder, Buildset: r.Buildset, Owner: r.Owner, AcquiredAt: now,
			})
			if own[name] {
				ch.DropWaiters = append(ch.DropWaiters, store.WaiterKey{Semaphore: name, Holder: r.Holder})
			}
		case !own[name]:
			ch.AddWaiters = append(ch.AddWaiters, store.Waiter{
				Semaphore: name, Holder: r.Holder, Buildset: r.Buildset, Owner: r.Owner,
				Precedence: precedence, Since: since,
			})
		}
	}
	return granted, ch
}

// TryAcquire decides r under the lock of its semaphores
// (st.UpdateSemaphores, then Decide) and records the outcome: the holder
// holds all of them, or waits for each. A request for no semaphore is
// granted at once and records nothing.
func TryAcquire(ctx context.Context, st store.Semaphores, r Request) (bool, error) {
	if r.Holder == "" {
		return false, errors.New("semaphore: acquire: no holder")
	}
	if r.Now.IsZero() {
		return false, fmt.Errorf("semaphore: acquire %s: Now is zero", r.Holder)
	}
	names := slices.Sorted(maps.Keys(r.Semaphores)) // a stable order for the rows and the messages
	for _, name := range names {
		if max := r.Semaphores[name]; max < 1 {
			return false, fmt.Errorf("semaphore: acquire %s: semaphore %s: max %d is below 1", r.Holder, name, max)
		}
	}
	if len(names) == 0 {
		return true, nil
	}
	var granted bool
	err := st.UpdateSemaphores(ctx, store.LockSemaphoresParams{Names: names, Now: r.Now, Fence: r.Fence},
		func(v store.SemaphoreView) (store.SemaphoreChange, error) {
			var ch store.SemaphoreChange
			granted, ch = Decide(r, v)
			return ch, nil
		})
	if err != nil {
		return false, fmt.Errorf("semaphore: acquire %s: %w", r.Holder, err)
	}
	return granted, nil
}

// PrecedenceAging is how long a waiter waits for its precedence to count
// one higher: an hourly run (low) that has waited an hour ranks with a
// deploy (high) that has just come, and goes first, being older. Every
// process sharing a store must use the same rule, so it is a constant.
const PrecedenceAging = 30 * time.Minute

// Rank is a waiter's effective precedence at now: its precedence plus one
// for every PrecedenceAging it has waited since since.
func Rank(precedence int, since, now time.Time) int {
	if waited := now.Sub(since); waited > 0 {
		return precedence + int(waited/PrecedenceAging)
	}
	return precedence
}
