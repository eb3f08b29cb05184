package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// DefaultClaimPoll is how often a server looks for buildsets to claim when
// nothing told it of any: the fallback of the notifications of a shared
// store, and the only way on a store that sends none.
const DefaultClaimPoll = time.Second

// Notices tells a process what the others sharing its store did (a
// PostgreSQL store's notifications). Wakeups returns a channel that gets
// a value after each notice of topics (several may come as one) and a
// func that ends the subscription and waits until nothing more is sent.
type Notices interface {
	Wakeups(topics ...string) (wakeups <-chan struct{}, stop func())
}

// claimLoop is the claims service of a server: whenever woken (an
// admission here, a notice of one elsewhere, a run of its own returned, a
// reload) and every Options.ClaimPoll, it claims what it can run (Claim)
// and launches it, and cancels the runs whose cancel another server was
// asked for (Cancels). Every server runs it, the leader as the others:
// the leader's managers admit, whichever server has room runs.
func (c *Coordinator) claimLoop(ctx context.Context) {
	var notices <-chan struct{}
	if c.opt.Notices != nil {
		ch, stop := c.opt.Notices.Wakeups(store.TopicClaims, store.TopicCancels)
		defer stop()
		notices = ch
	}
	t := time.NewTicker(c.opt.ClaimPoll)
	defer t.Stop()
	for {
		if err := c.Claim(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("claim buildsets to run", "err", err)
		}
		if err := c.Cancels(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("read the cancels asked of this server", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.claimKick:
		case <-notices:
		case <-t.C:
		}
	}
}

// Claim takes from the store the buildsets this process is to run, and
// launches them: while it runs fewer buildsets than its build slots
// (limits.max_parallel), running buildsets that no process runs (a dead
// server's) first, then admitted ones, oldest first; and one running one
// even when it is full, since its own runs may wait for a semaphore that
// one holds. So a server never takes much more than it can start, and
// the others take the rest. The
// claims service calls it; tests call it by hand. A process whose lease
// is lost, or that is shutting down, claims nothing.
func (c *Coordinator) Claim(ctx context.Context) error {
	c.claimMu.Lock()
	defer c.claimMu.Unlock()
	if c.lostNow() {
		return nil
	}
	r := c.runs
	r.mu.Lock()
	closed, running := r.closed || r.ctx == nil, len(r.m)
	r.mu.Unlock()
	if closed {
		return nil
	}
	got, err := c.st.ClaimBuildsets(ctx, store.ClaimParams{
		Fence: c.opt.Runner.Semaphores.Fence(), Max: max(c.slots.Max()-running, 0),
	})
	if errors.Is(err, store.ErrFenced) {
		c.opt.Runner.Semaphores.Fenced(err)
		return nil
	}
	if err != nil {
		return err
	}
	for _, bs := range got {
		if bs.State == store.BuildsetRunning {
			c.log.Info("resuming buildset", "buildset", bs.ID, "pipeline", bs.Pipeline)
		}
		c.launch(bs)
	}
	return nil
}

// wakeClaims asks the claims service to look for work now.
func (c *Coordinator) wakeClaims() {
	select {
	case c.claimKick <- struct{}{}:
	default:
	}
}

// Cancels cancels the runs of this process whose cancel was asked of
// another server (store.RequestCancel), each once. The claims service
// calls it; tests call it by hand.
func (c *Coordinator) Cancels(ctx context.Context) error {
	reqs, err := c.st.CancelRequests(ctx, c.Owner())
	if err != nil {
		return err
	}
	for _, req := range reqs {
		c.runs.mu.Lock()
		rn := c.runs.m[req.Buildset]
		first := rn != nil && !rn.cancelled
		if first {
			rn.cancelled = true
		}
		c.runs.mu.Unlock()
		if first {
			c.log.Info("cancel", "buildset", req.Buildset, "by", req.By, "asked", "through another server")
			rn.cancel(scheduler.ErrCanceled)
		}
	}
	return nil
}
