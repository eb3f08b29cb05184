package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/pipeline"
	"github.com/sortie-ci/sortie/internal/store"
)

// dispatch is the managers' loop, the admission service: whenever woken
// (a buildset was made or ended, a pause changed) and at every tick, it
// makes one pass. Ends wake it through an Ended subscription of its own.
func (c *Coordinator) dispatch(ctx context.Context) {
	ended := c.Ended()
	defer ended.Close()
	t := time.NewTicker(c.opt.Tick)
	defer t.Stop()
	for {
		if err := c.Pass(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("managers", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-ended.Ready():
			ended.Take()
		case <-t.C:
		}
	}
}

// Pass makes one decision of the managers over the queue as the store has
// it, and applies it: once it returns, what they decided (admit,
// supersede, coalesce) has been done. The managers' loop calls it at
// every wake-up and tick; tests call it by hand. Passes run one at a
// time. A buildset pinned to a `sortie run` is decided for with the others
// (it takes its turn in arrival order, and is never superseded nor
// merged), but only its run starts it: a Start of it is not applied here.
// A process whose lease is lost, or that does not lead, decides nothing.
//
// A pass reads only the buildsets that changed since the pass before (see
// queue), and decides nothing again when nothing changed since a pass
// that had nothing to do.
func (c *Coordinator) Pass(ctx context.Context) (err error) {
	c.passMu.Lock()
	defer c.passMu.Unlock()
	q := &c.queue
	term := c.Leading()
	if c.lostNow() || term == nil {
		q.reset()
		return nil
	}
	defer func() {
		if err != nil {
			q.reset() // what this pass did is unknown: read everything again
		}
	}()
	if _, err := q.refresh(ctx, c.st, *term); err != nil {
		return err
	}
	cfg := c.opt.Config()
	pauses := c.pauses.Load()
	if q.settled && len(q.changed) == 0 && q.cfg == cfg && q.pauses == pauses {
		// Nothing changed since a pass that had nothing to do: this one
		// would decide the same.
		if c.opt.Observer != nil {
			c.opt.Observer.Passed(ctx, cfg, q.queued())
		}
		c.TestSignals.Passed.Signal(q.plan)
		return nil
	}
	q.settled = false
	gone := q.decide(cfg, pauses)
	applied := 0
	for _, bs := range gone {
		if bs.AwaitsManagers() {
			// Its pipeline is gone from the config: nothing can decide
			// when it would run.
			if err := c.finishQueued(ctx, bs.Pipeline, bs.ID, store.Canceled, fmt.Sprintf("pipeline %s is no longer in the config", bs.Pipeline), ""); err != nil {
				return err
			}
			applied++
		}
	}
	if c.opt.Observer != nil {
		c.opt.Observer.Passed(ctx, cfg, q.queued())
	}
	plan := pipeline.Merge(slices.Collect(maps.Values(q.decisions)))
	c.planMu.Lock()
	c.lastPlan = plan
	c.planMu.Unlock()
	for _, act := range plan.Actions {
		if ctx.Err() != nil {
			return nil
		}
		if a, ok := act.(pipeline.Start); ok && q.pinned(a.Buildset) {
			continue // its run's to start
		}
		if err := c.apply(ctx, cfg, act); err != nil {
			return fmt.Errorf("%s: %w", act, err)
		}
		applied++
	}
	if applied > 0 {
		// What was just applied may let more happen (a coalesced
		// buildset's members are gone): look again soon.
		c.wake()
	}
	q.settled, q.plan = applied == 0, plan
	c.TestSignals.Passed.Signal(plan)
	return nil
}

func (c *Coordinator) apply(ctx context.Context, cfg *config.Config, act pipeline.Action) error {
	c.log.Info("manager", "action", act.String())
	switch a := act.(type) {
	case pipeline.Supersede:
		return ignoreConflict(c.finishQueued(ctx, a.Pipeline, a.Buildset, store.Canceled, a.Reason, ""))
	case pipeline.Start:
		return c.admit(ctx, a.Buildset)
	case pipeline.Coalesce:
		bs, err := c.create(ctx, cfg, buildset.Event{
			Pipeline: a.Pipeline, Rev: a.Commit, Files: a.Files, CreatedAt: a.Since,
			Cause: fmt.Sprintf("coalesced from %d queued buildsets", len(a.Merge)),
		})
		if err != nil {
			if bs == nil {
				return err
			}
			// A CONFIG_ERROR buildset stands for the members.
		}
		for _, id := range a.Merge {
			if err := ignoreConflict(c.finishQueued(ctx, a.Pipeline, id, store.Canceled, a.MemberReason(bs.ID), "")); err != nil {
				return err
			}
		}
		if bs.State == store.BuildsetDone {
			return nil
		}
		return c.admit(ctx, bs.ID)
	}
	return fmt.Errorf("unknown action %T", act)
}

// admit lets a queued buildset go: ADMITTED, with no owner, it is run by
// the first server with room that claims it (Claim), this one included,
// which is woken; there it waits for its pipeline semaphore and runs.
func (c *Coordinator) admit(ctx context.Context, id string) error {
	fence := c.opt.Runner.Semaphores.Fence()
	if err := c.st.AdmitBuildset(ctx, id, fence, time.Now().UTC()); err != nil {
		if errors.Is(err, store.ErrFenced) {
			c.opt.Runner.Semaphores.Fenced(err)
			return nil
		}
		return ignoreConflict(err)
	}
	c.TestSignals.Admitted.Signal(id)
	c.wakeClaims()
	return nil
}

// finishQueued ends a buildset of pipeline that never started, through
// the single end path: every build gets result with reason, and the
// buildset result with errMsg ("": reason). A buildset that ended
// meanwhile is a store.ErrConflict.
func (c *Coordinator) finishQueued(ctx context.Context, pipeline, id string, result store.Result, reason, errMsg string) error {
	ended, err := c.end(ctx, ending{Pipeline: pipeline, Params: store.EndBuildsetParams{
		ID: id, Result: result, Error: cmp.Or(errMsg, reason), BuildResult: result, Reason: reason, At: time.Now().UTC(),
	}})
	if err != nil {
		return err
	}
	if !ended {
		return fmt.Errorf("buildset %s has ended already: %w", id, store.ErrConflict)
	}
	return nil
}

// endReaped ends a dead `sortie run`'s buildset through the single end
// path (the Reaper's End).
func (c *Coordinator) endReaped(ctx context.Context, bs *store.Buildset, p store.EndBuildsetParams) (bool, error) {
	ended, err := c.end(ctx, ending{Pipeline: bs.Pipeline, Params: p})
	if ended && err == nil {
		c.log.Warn("ended a buildset whose sortie run process died", "buildset", bs.ID, "owner", bs.Owner)
		c.TestSignals.Reaped.Signal(bs.ID)
	}
	return ended, err
}

// ignoreConflict: the row changed under the decision (an operator
// cancelled it meanwhile); the next pass sees the new state.
func ignoreConflict(err error) error {
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}
