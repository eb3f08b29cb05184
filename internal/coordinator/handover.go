package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// handOverTimeout bounds the store's writes of a handover: a shutdown
// does not wait longer for a database that does not answer.
const handOverTimeout = 5 * time.Second

// handOver gives up a stopped server's owner, so that other servers take
// over its buildsets at once, as they do a dead server's, rather than once
// its lease has run out. It takes the owner through the steps of a dead
// owner's successor (takeOver) but the ending of its builds: Stop has
// waited for every one of them to end. So: fenced (nothing more of this
// incarnation's can be written), ended, and released with the pipeline
// semaphore of each buildset it was running kept for whoever claims it;
// its ADMITTED and RUNNING buildsets are left without an owner, for any
// server's claims (the store tells them, TopicClaims), this node's next
// start included. A `sortie run` keeps its owner: its buildset is pinned
// to it, and its end is the reaper's.
//
// A step that fails (the store unreachable) is logged and the rest is
// left: the lease runs out and the reapers take over as from a dead
// server. Each step is safe to repeat.
func (c *Coordinator) handOver(ctx context.Context) {
	if c.opt.Kind == store.OwnerRun {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handOverTimeout)
	defer cancel()
	if err := c.handOverOwner(ctx, c.Owner()); err != nil {
		c.log.Warn("could not hand this server's buildsets over; other servers take them once its lease has run out", "err", err)
		return
	}
	c.log.Info("handed this server's buildsets over to the other servers")
}

func (c *Coordinator) handOverOwner(ctx context.Context, self string) error {
	if _, err := c.st.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{self}, Force: true}); err != nil {
		return err
	}
	if err := c.st.MarkOwnerEnded(ctx, self); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	owners, err := c.st.Owners(ctx, store.OwnerFilter{IDs: []string{self}, States: []store.OwnerState{store.OwnerEnded}})
	if err != nil || len(owners) == 0 {
		// Not ended: fenced by another process meanwhile, whose reaper
		// takes it from there.
		return err
	}
	active, err := c.st.ActiveBuildsets(ctx)
	if err != nil {
		return err
	}
	err = c.st.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: self, Keep: Kept(owners[0], active)})
	if errors.Is(err, store.ErrConflict) {
		return nil // released by another process meanwhile
	}
	return err
}
