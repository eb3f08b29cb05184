package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/store"
)

// handOverTimeout bounds each of the store's steps of a handover: a
// shutdown does not wait longer for a database that does not answer. The
// ending of what is left on the bastion has the builds' grace on top.
const handOverTimeout = 5 * time.Second

// handOver gives up a stopped server's owner, so that other servers take
// over its buildsets at once, as they do a dead server's, rather than once
// its lease has run out. It takes the owner through the steps of a dead
// owner's successor (takeOver): fenced (nothing more of this incarnation's
// can be written), what it left on the bastion ended (KillOwner: its runs
// have all returned, but over SSH a build whose connection dropped may
// still run there, and a daemon a job started carries the owner's id),
// marked ended, and released with the pipeline semaphore of each buildset
// it was running kept for whoever claims it; its ADMITTED and RUNNING
// buildsets are left without an owner, for any server's claims (the store
// tells them, TopicClaims), this node's next start included. A `sortie
// run` keeps its owner: its buildset is pinned to it, and its end is the
// reaper's.
//
// A step that fails (the store or the bastion unreachable) is logged and
// the rest is left: the lease runs out and the reapers take over as from a
// dead server. Each step is safe to repeat.
func (c *Coordinator) handOver(ctx context.Context) {
	self := c.Owner()
	if c.opt.Kind == store.OwnerRun || self == "" {
		return // a run, or never registered
	}
	ctx = context.WithoutCancel(ctx)
	if err := c.handOverOwner(ctx, self); err != nil {
		c.log.Warn("could not hand this server's buildsets over; other servers take them once its lease has run out", "err", err)
		return
	}
	c.log.Info("handed this server's buildsets over to the other servers")
}

func (c *Coordinator) handOverOwner(ctx context.Context, self string) error {
	step := func(fn func(ctx context.Context) error) error {
		ctx, cancel := context.WithTimeout(ctx, handOverTimeout)
		defer cancel()
		return fn(ctx)
	}
	if err := step(func(ctx context.Context) error {
		_, err := c.st.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{self}, Force: true})
		return err
	}); err != nil {
		return err
	}
	// The bastion kills no process of its own owner's: it takes a new id,
	// which no build will carry (none runs now, and none will start).
	b := c.opt.Runner.Bastion
	if err := b.SetOwner(NewOwner()); err != nil {
		return err
	}
	grace := cmp.Or(c.opt.Runner.Grace, bastion.DefaultGrace)
	kctx, cancel := context.WithTimeout(ctx, handOverTimeout+2*grace)
	err := b.KillOwner(kctx, self, grace)
	cancel()
	if err != nil {
		return fmt.Errorf("end what it left on the bastion: %w", err)
	}
	if err := step(func(ctx context.Context) error { return c.st.MarkOwnerEnded(ctx, self) }); err != nil && !errors.Is(err, store.ErrConflict) {
		return err
	}
	return step(func(ctx context.Context) error {
		owners, err := c.st.Owners(ctx, store.OwnerFilter{IDs: []string{self}, States: []store.OwnerState{store.OwnerEnded}})
		if err != nil || len(owners) == 0 {
			// Released by another process's reaper meanwhile.
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
	})
}
