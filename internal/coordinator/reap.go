package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/store"
)

// ReapStore is what a Reaper reads and moves: the owners, and the
// buildsets not finished.
type ReapStore interface {
	store.Owners
	ActiveBuildsets(ctx context.Context) ([]*store.Buildset, error)
}

// Reaper takes the owners that died through the rest of their life
// (store.OwnerState): it fences those whose lease ran out, ends what they
// left running on the bastion (KillOwner), ends a dead `sortie run`'s
// buildsets (a run has no successor; they would otherwise hold up its
// pipeline for ever), and releases their semaphores, but for the pipeline
// semaphore of each buildset a dead server was running, kept for the
// server's successor (recover). Never the other way round: a slot freed
// while the build it guarded still runs would let two deployments
// overlap. Each step is a compare-and-swap in the store, so reapers in
// several processes may run at once. The fields are set before use and
// not changed after.
type Reaper struct {
	Store ReapStore
	// Runner's Bastion ends what a dead owner left running (KillOwner,
	// with Runner.Grace) and marks a dead run's checkouts finished.
	Runner *buildset.Runner
	// Self, when set, returns this process's owner id, never reaped here.
	Self func() string
	// Host is this host's name. With a local bastion (AnyHost unset) a
	// process can end only the builds of owners on its own host, so the
	// fenced owners of other hosts are left for a process there; an
	// owner whose host is not known (carried over from before owners
	// were rows) is ended by anyone.
	Host    string
	AnyHost bool
	// End ends one buildset; nil means Runner.End, trying once.
	End func(ctx context.Context, bs *store.Buildset, p store.EndBuildsetParams) (ended bool, err error)
	// Say, when set, is told which buildsets were ended; nil says nothing.
	Say io.Writer
	// Now, when set, is when leases are judged; nil means the store's
	// clock.
	Now func() time.Time
}

// Reap makes one round: it fences every live owner whose lease ran out,
// then, for each owner fenced or ended but this process, ends what it
// left on the bastion if this process can reach it, then (a `sortie run`)
// ends its buildsets ERROR (running attempts LOST, running builds ERROR,
// builds that never started CANCELED), marks it ended, and releases it.
// It returns the buildsets it ended; an owner whose builds could not be
// ended stays as it is, its error joined to the others', for the next
// round.
func (r *Reaper) Reap(ctx context.Context) ([]string, error) {
	var now time.Time
	if r.Now != nil {
		now = r.Now()
	}
	if _, err := r.Store.FenceOwners(ctx, store.FenceOwnersParams{Now: now}); err != nil {
		return nil, fmt.Errorf("fence the owners whose lease ran out: %w", err)
	}
	owners, err := r.Store.Owners(ctx, store.OwnerFilter{States: []store.OwnerState{store.OwnerFenced, store.OwnerEnded}})
	if err != nil {
		return nil, err
	}
	var (
		reaped []string
		errs   []error
		active []*store.Buildset
	)
	for _, o := range owners {
		if (r.Self != nil && o.ID == r.Self()) || ctx.Err() != nil {
			continue
		}
		if active == nil {
			if active, err = r.Store.ActiveBuildsets(ctx); err != nil {
				return reaped, err
			}
		}
		ids, err := r.reap(ctx, o, active)
		reaped = append(reaped, ids...)
		if err != nil {
			errs = append(errs, fmt.Errorf("owner %s (%s on %s): %w", o.ID, o.Kind, cmp.Or(o.Host, "an unknown host"), err))
		}
	}
	return reaped, errors.Join(errs...)
}

// Reaches reports whether this process can end what o left running.
func (r *Reaper) Reaches(o store.Owner) bool { return r.AnyHost || o.Host == "" || o.Host == r.Host }

// reap takes one fenced or ended owner as far as it may.
func (r *Reaper) reap(ctx context.Context, o store.Owner, active []*store.Buildset) ([]string, error) {
	var ended []string
	if o.State == store.OwnerFenced {
		if !r.Reaches(o) {
			return nil, nil // a process on its host ends its builds
		}
		if err := r.Runner.Bastion.KillOwner(ctx, o.ID, r.Runner.Grace); err != nil {
			return nil, fmt.Errorf("end its builds: %w", err)
		}
		if o.Kind == store.OwnerRun {
			var err error
			if ended, err = r.forget(ctx, o.ID, active); err != nil {
				return ended, err
			}
		}
		if err := r.Store.MarkOwnerEnded(ctx, o.ID); err != nil && !errors.Is(err, store.ErrConflict) {
			return ended, err
		}
	}
	err := r.Store.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: o.ID, Keep: Kept(o, active)})
	if errors.Is(err, store.ErrConflict) {
		err = nil // another reaper took the step
	}
	return ended, err
}

// Kept are the holders of owner o, dead or stopped, that stay held when it is
// released: the pipeline semaphore of each buildset it was running, if it
// was a server, for its successor, which resumes the buildset and must
// get the semaphore back before anyone else, or another pipeline's run
// would slip in between two of its jobs. The kept holder stays o's until
// the adoption moves it (store.SetBuildsetOwner). A dead `sortie run`'s
// buildsets are ended, so it keeps nothing.
func Kept(o store.Owner, active []*store.Buildset) []string {
	if o.Kind == store.OwnerRun {
		return nil
	}
	var keep []string
	for _, bs := range active {
		if bs.Owner == o.ID && bs.State == store.BuildsetRunning {
			keep = append(keep, bs.ID) // a buildset's own holder id
		}
	}
	return keep
}

// forget ends the active buildsets of a dead run (those it ran, and those
// pinned to it that it never started), whose builds on the bastion are
// ended already, and marks their checkouts finished.
func (r *Reaper) forget(ctx context.Context, owner string, active []*store.Buildset) ([]string, error) {
	var ids []string
	defer func() { r.say(ids) }()
	for _, bs := range active {
		if bs.Owner != owner && (bs.Owner != "" || bs.PinnedTo != owner) {
			continue
		}
		why := fmt.Sprintf("lost: the sortie run process %s that ran it died", owner)
		p := store.EndBuildsetParams{
			ID: bs.ID, Result: store.Error, Error: why,
			BuildResult: store.Canceled, StartedResult: store.Error, AttemptResult: store.Lost, Reason: why, At: time.Now().UTC(),
		}
		var (
			ended bool
			err   error
		)
		if r.End != nil {
			ended, err = r.End(ctx, bs, p)
		} else {
			ended, err = r.Runner.End(ctx, nil, p)
		}
		if err != nil {
			return ids, fmt.Errorf("end buildset %s: %w", bs.ID, err)
		}
		r.Runner.FinishCheckout(ctx, bs.ID, true)
		if ended {
			ids = append(ids, bs.ID)
		}
	}
	return ids, nil
}

func (r *Reaper) say(ids []string) {
	if r.Say != nil && len(ids) > 0 {
		fmt.Fprintf(r.Say, "sortie: ended %d buildsets whose sortie run process died: %s\n", len(ids), strings.Join(ids, ", "))
	}
}
