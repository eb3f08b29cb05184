package buildset

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// ReapDeadRuns ends the buildsets of `sortie run` processes that died (no
// lease runs for their owner at now): a run that nothing can finish must
// not stay RUNNING forever, where it would hold up its pipeline's serial
// manager in a server sharing the store. First what the dead process left
// running on the bastion is ended (KillOwner): until then its semaphores
// stay held. Then its running attempts become LOST, its running builds
// ERROR, the builds that never started CANCELED, and the buildset ERROR,
// with why. A server's buildsets are left alone: its successor takes them
// over (server.recover). It returns the buildsets it ended; an owner whose
// builds could not be ended is left for another try, with its error
// joined to the others'.
func (r *Runner) ReapDeadRuns(ctx context.Context, now time.Time) ([]string, error) {
	active, err := r.Store.ActiveBuildsets(ctx)
	if err != nil {
		return nil, err
	}
	var reaped []string
	var errs []error
	seen := map[string]bool{}
	for _, bs := range active {
		owner := bs.Owner
		if !strings.HasPrefix(owner, "run-") || seen[owner] {
			continue // a server's, queued for one, or done already
		}
		seen[owner] = true
		alive, err := r.Store.LeaseAlive(ctx, owner, now)
		if err != nil {
			return reaped, err
		}
		if alive {
			continue
		}
		if err := r.Bastion.KillOwner(ctx, owner, r.Grace); err != nil {
			errs = append(errs, fmt.Errorf("end the builds of dead %s: %w", owner, err))
			continue
		}
		ids, err := r.forget(ctx, owner, active, now)
		reaped = append(reaped, ids...)
		if err != nil {
			return reaped, err
		}
	}
	return reaped, errors.Join(errs...)
}

// ForgetRun ends the active buildsets of owner, a `sortie run` that died
// and whose builds on the bastion are ended already (the semaphore
// reaper's semaphore.Client.Forget), as ReapDeadRuns does. It returns the
// buildsets it ended.
func (r *Runner) ForgetRun(ctx context.Context, owner string, now time.Time) ([]string, error) {
	active, err := r.Store.ActiveBuildsets(ctx)
	if err != nil {
		return nil, err
	}
	return r.forget(ctx, owner, active, now)
}

// forget ends owner's buildsets among active, and marks their checkouts
// finished.
func (r *Runner) forget(ctx context.Context, owner string, active []*store.Buildset, now time.Time) ([]string, error) {
	var ids []string
	for _, bs := range active {
		if bs.Owner != owner {
			continue
		}
		if err := r.reap(ctx, bs, now); err != nil {
			return ids, fmt.Errorf("end buildset %s of dead %s: %w", bs.ID, owner, err)
		}
		r.FinishCheckout(ctx, bs.ID, true)
		ids = append(ids, bs.ID)
	}
	return ids, nil
}

// reap ends a buildset of a dead `sortie run`: its running attempts
// LOST, its running builds ERROR, the builds that never started CANCELED,
// and the buildset ERROR, with why.
func (r *Runner) reap(ctx context.Context, bs *store.Buildset, now time.Time) error {
	why := fmt.Sprintf("lost: the sortie run process %s that ran it died", bs.Owner)
	_, err := r.End(ctx, nil, store.EndBuildsetParams{
		ID: bs.ID, Result: store.Error, Error: why,
		BuildResult: store.Canceled, StartedResult: store.Error, AttemptResult: store.Lost, Reason: why, At: now,
	})
	return err
}

// End is how this package, and whoever ends a buildset it runs or made,
// ends one: every end of a buildset goes through it. It ends the buildset
// through the store's EndBuildset (one transaction: what it left
// unfinished, the buildset, its semaphores) and reports whether this call
// ended it: false when it was DONE already, which is not an error. A
// write the store refuses for now (store.ErrUnavailable) is tried again,
// saying so on stderr, until giveUp is closed; a nil giveUp tries once.
func (r *Runner) End(ctx context.Context, giveUp <-chan struct{}, p store.EndBuildsetParams) (ended bool, err error) {
	end := func() error {
		var err error
		ended, err = r.Store.EndBuildset(ctx, p)
		return err
	}
	if giveUp == nil {
		return ended, end()
	}
	err = r.persist(giveUp, "buildset "+p.ID+": end", end)
	return ended, err
}
