package buildset

import (
	"context"
	"fmt"

	"github.com/sortie-ci/sortie/internal/store"
)

// End is the store path of every end of a buildset: it ends the buildset
// through the store's EndBuildset (one transaction: what it left
// unfinished, the buildset, its semaphores) and reports whether this call
// ended it: false when it was DONE already, which is not an error. An end
// by its runner (p.Fence set) whose lease was lost is refused
// (store.ErrFenced), and the runner's semaphore client told. A
// write the store refuses for now (store.ErrUnavailable) is tried again,
// saying so on stderr, until giveUp is closed; a nil giveUp tries once.
//
// A process with a coordinator ends buildsets through the coordinator,
// which calls End and then publishes the end (coordinator.Ended); a run
// is given that path in RunOptions.End.
//
// Unless p.Reports is set, the end's report deliveries are those of the
// spec frozen into the buildset (Spec.Deliveries), recorded with the end.
func (r *Runner) End(ctx context.Context, giveUp <-chan struct{}, p store.EndBuildsetParams) (ended bool, err error) {
	if p.Reports == nil {
		if p.Reports, err = r.endReports(ctx, p); err != nil {
			return false, fmt.Errorf("buildset %s: its reports: %w", p.ID, err)
		}
	}
	end := func() error {
		var err error
		ended, err = r.Store.EndBuildset(ctx, p)
		return r.checked(err)
	}
	if giveUp == nil {
		err = end()
	} else {
		err = r.persist(giveUp, "buildset "+p.ID+": end", end)
	}
	if ended && err == nil {
		r.reported(p.Reports)
	}
	return ended, err
}
