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
		if err := reap(ctx, r.Store, bs, now); err != nil {
			return ids, fmt.Errorf("end buildset %s of dead %s: %w", bs.ID, owner, err)
		}
		r.finishCheckout(ctx, bs.ID, true)
		ids = append(ids, bs.ID)
	}
	return ids, nil
}

func reap(ctx context.Context, st store.Store, bs *store.Buildset, now time.Time) error {
	why := fmt.Sprintf("lost: the sortie run process %s that ran it died", bs.Owner)
	running, err := st.RunningAttempts(ctx, bs.ID)
	if err != nil {
		return err
	}
	for _, a := range running {
		if err := st.FinishAttempt(ctx, bs.ID, a.Job, a.Number, store.Lost, why, now); err != nil && !isConflict(err) {
			return err
		}
	}
	builds, err := st.Builds(ctx, bs.ID)
	if err != nil {
		return err
	}
	for _, b := range builds {
		if b.State == store.BuildRunning {
			if err := st.FinishBuild(ctx, bs.ID, b.Job, store.Error, why, now); err != nil && !isConflict(err) {
				return err
			}
		}
	}
	if err := st.ReleaseBuildset(ctx, bs.ID); err != nil {
		return err
	}
	if err := End(ctx, st, bs.ID, store.Canceled, why, store.Error, why, now); err != nil && !isConflict(err) {
		return err
	}
	return nil
}

// End finishes a buildset that will not run (any further): every build not
// finished yet gets buildResult with reason, then the buildset bsResult
// with errMsg. Builds finished meanwhile by someone else are left as they
// are; a buildset finished meanwhile is store.ErrConflict.
func End(ctx context.Context, st store.Store, id string, buildResult store.Result, reason string, bsResult store.Result, errMsg string, now time.Time) error {
	builds, err := st.Builds(ctx, id)
	if err != nil {
		return err
	}
	for _, b := range builds {
		if b.State != store.BuildDone {
			if err := st.FinishBuild(ctx, id, b.Job, buildResult, reason, now); err != nil && !isConflict(err) {
				return err
			}
		}
	}
	return st.FinishBuildset(ctx, id, bsResult, errMsg, now)
}

func isConflict(err error) bool { return errors.Is(err, store.ErrConflict) }
