package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/store"
)

// ReapStore is what a Reaper reads: the buildsets not finished, and
// whether an owner's lease runs.
type ReapStore interface {
	ActiveBuildsets(ctx context.Context) ([]*store.Buildset, error)
	LeaseAlive(ctx context.Context, owner string, now time.Time) (bool, error)
}

// Reaper ends the buildsets of `sortie run` processes that died: a run has
// no successor, so what it left would otherwise stay RUNNING for ever and
// hold up its pipeline's serial manager. A Coordinator has one, which ends
// through the coordinator's single end path; `sortie run`, not on a
// coordinator yet, makes one of its own with End unset. The fields are
// set before use and not changed after.
type Reaper struct {
	Store ReapStore
	// Runner's Bastion ends what a dead run left running (KillOwner, with
	// Runner.Grace) and marks its checkouts finished.
	Runner *buildset.Runner
	// End ends one buildset; nil means Runner.End, trying once.
	End func(ctx context.Context, bs *store.Buildset, p store.EndBuildsetParams) (ended bool, err error)
	// Say, when set, is told which buildsets were ended; nil says nothing.
	Say io.Writer
}

// ReapDeadRuns ends the buildsets of every `sortie run` whose lease does
// not run at now. First what the dead process left running on the bastion
// is ended (KillOwner): until then its semaphores stay held. Then its
// running attempts become LOST, its running builds ERROR, the builds that
// never started CANCELED, and the buildset ERROR, with why. A server's
// buildsets are left alone (KindOf): its successor adopts them. It
// returns the buildsets it ended; an owner whose builds could not be
// ended is left for another try, with its error joined to the others'.
func (r *Reaper) ReapDeadRuns(ctx context.Context, now time.Time) ([]string, error) {
	active, err := r.Store.ActiveBuildsets(ctx)
	if err != nil {
		return nil, err
	}
	var reaped []string
	var errs []error
	seen := map[string]bool{}
	for _, bs := range active {
		owner := bs.Owner
		if KindOf(owner) != OwnerRun || seen[owner] {
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
		if err := r.Runner.Bastion.KillOwner(ctx, owner, r.Runner.Grace); err != nil {
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

// Forget ends the active buildsets of owner, a process known dead whose
// builds on the bastion are ended already, if it is a `sortie run`; a
// server's are left for its successor. It is semaphore.Client.Forget: the
// semaphore reaper calls it before it releases a dead owner's holders.
func (r *Reaper) Forget(ctx context.Context, owner string) error {
	if KindOf(owner) != OwnerRun {
		return nil
	}
	active, err := r.Store.ActiveBuildsets(ctx)
	if err != nil {
		return err
	}
	_, err = r.forget(ctx, owner, active, time.Now().UTC())
	return err
}

// forget ends owner's buildsets among active, and marks their checkouts
// finished.
func (r *Reaper) forget(ctx context.Context, owner string, active []*store.Buildset, now time.Time) ([]string, error) {
	var ids []string
	defer func() { r.say(ids) }()
	for _, bs := range active {
		if bs.Owner != owner {
			continue
		}
		why := fmt.Sprintf("lost: the sortie run process %s that ran it died", bs.Owner)
		p := store.EndBuildsetParams{
			ID: bs.ID, Result: store.Error, Error: why,
			BuildResult: store.Canceled, StartedResult: store.Error, AttemptResult: store.Lost, Reason: why, At: now,
		}
		var err error
		if r.End != nil {
			_, err = r.End(ctx, bs, p)
		} else {
			_, err = r.Runner.End(ctx, nil, p)
		}
		if err != nil {
			return ids, fmt.Errorf("end buildset %s of dead %s: %w", bs.ID, owner, err)
		}
		r.Runner.FinishCheckout(ctx, bs.ID, true)
		ids = append(ids, bs.ID)
	}
	return ids, nil
}

func (r *Reaper) say(ids []string) {
	if r.Say != nil && len(ids) > 0 {
		fmt.Fprintf(r.Say, "sortie: ended %d buildsets whose sortie run process died: %s\n", len(ids), strings.Join(ids, ", "))
	}
}
