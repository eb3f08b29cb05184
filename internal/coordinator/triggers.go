package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger/cron"
	"github.com/sortie-ci/sortie/internal/trigger/poll"
)

// Submit makes a buildset of an event (a trigger, a push) with the config
// in force, and wakes the managers. A buildset error (SPEC §2.2) still
// makes a buildset, DONE with CONFIG_ERROR, whose end is published like
// any other; its error is returned with it. An unknown pipeline or commit
// makes nothing.
func (c *Coordinator) Submit(ctx context.Context, ev buildset.Event) (*store.Buildset, error) {
	return c.create(ctx, c.opt.Config(), ev)
}

// create makes a buildset of ev with cfg, for Submit and the managers'
// coalescing.
func (c *Coordinator) create(ctx context.Context, cfg *config.Config, ev buildset.Event) (*store.Buildset, error) {
	bs, err := c.opt.Runner.Create(ctx, cfg, ev)
	if bs == nil {
		return nil, err
	}
	c.log.Info("buildset created", "buildset", bs.ID, "pipeline", bs.Pipeline, "commit", bs.Commit, "files", len(bs.Files), "cause", bs.Cause)
	if bs.State == store.BuildsetDone {
		at := time.Now().UTC()
		if bs.FinishedAt != nil {
			at = *bs.FinishedAt
		}
		c.end(ctx, ending{Pipeline: bs.Pipeline, Made: true, Params: store.EndBuildsetParams{ID: bs.ID, Result: bs.Result, Error: bs.Error, At: at}})
	}
	c.wake()
	return bs, err
}

// Rerun makes a buildset that runs again the jobs of a finished buildset
// that did not succeed (buildset.Runner.Rerun), and wakes the managers.
func (c *Coordinator) Rerun(ctx context.Context, id, cause string) (*store.Buildset, error) {
	bs, err := c.opt.Runner.Rerun(ctx, id, cause)
	if err != nil {
		return nil, err
	}
	c.log.Info("buildset created", "buildset", bs.ID, "pipeline", bs.Pipeline, "cause", bs.Cause)
	c.wake()
	return bs, nil
}

// Deliveries are remembered for deliveryTTL, and deliveryKeep of them at
// most: a forge sends a delivery again within hours (GitLab retries for a
// day, GitHub redelivers on request), and a replay older than that is
// harmless anyway, since a push deploys the branch's head.
const (
	deliveryTTL  = 7 * 24 * time.Hour
	deliveryKeep = 10000
)

// PushResult is what a push to a branch did.
type PushResult struct {
	// Commit is the branch's head in the mirror after fetching: what the
	// push deploys.
	Commit string
	// Buildsets are those made, one per pipeline at most.
	Buildsets []*store.Buildset
	// Current maps each pipeline that got no buildset because its newest
	// is already at Commit (queued, running or successful) to that one.
	Current map[string]string
	// Duplicate is set when the delivery was received before: nothing
	// else was done.
	Duplicate bool
}

// Push makes a buildset of every pipeline triggered by pushes to branch.
// A push says only that the branch moved: what it deploys is the branch's
// head as the mirror has it after fetching, never a commit the delivery
// names, so a delivery replayed after later pushes, or one naming a commit
// of another branch, cannot deploy an older or foreign commit.
//
// delivery names the forge's delivery ("" for none). It is recorded once
// the mirror has fetched, so that a delivery that failed there can be sent
// again; one recorded before makes nothing (Duplicate). The changed files
// of each buildset are those between its pipeline's last success and the
// head. by names who pushed, for the buildsets' cause.
func (c *Coordinator) Push(ctx context.Context, branch, delivery, by string) (*PushResult, error) {
	cfg := c.opt.Config()
	var names []string
	for _, name := range cfg.PipelineNames() {
		if p := cfg.Pipelines[name].Trigger.Push; p != nil && p.Branch == branch {
			names = append(names, name)
		}
	}
	res := &PushResult{}
	if len(names) == 0 {
		return res, nil
	}
	mirror := c.opt.Runner.Mirror
	// A push names its branch: the remote's default branch does not
	// matter here, and is not asked for (one connection less). Concurrent
	// pushes and triggers share the fetch.
	if err := mirror.UpdateBranches(ctx); err != nil {
		return nil, err
	}
	head, err := mirror.Resolve(ctx, "refs/heads/"+branch)
	if err != nil {
		return nil, fmt.Errorf("push to %s: the branch's head: %w", branch, err)
	}
	res.Commit = head
	if delivery != "" {
		now := c.opt.Clock.Now()
		claimed, err := c.st.ClaimDelivery(ctx, store.DeliveryClaim{ID: delivery, At: now, ForgetBefore: now.Add(-deliveryTTL), Keep: deliveryKeep})
		if err != nil {
			return nil, err
		}
		if !claimed {
			c.log.Info("push: delivery received before; ignored", "delivery", delivery)
			return &PushResult{Duplicate: true}, nil
		}
	}
	var errs []error
	for _, name := range names {
		bs, current, err := c.pushOne(ctx, name, head, fmt.Sprintf("push to %s by %s", branch, by), nil, nil)
		if bs != nil {
			res.Buildsets = append(res.Buildsets, bs)
		}
		if current != nil {
			if res.Current == nil {
				res.Current = map[string]string{}
			}
			res.Current[name] = current.ID
		}
		if err != nil && bs == nil {
			errs = append(errs, fmt.Errorf("pipeline %s: %w", name, err))
		}
	}
	return res, errors.Join(errs...)
}

// pushOne makes the buildset of one pipeline for a branch that moved to
// head (the mirror already fetched), with the files changed since the
// pipeline's last success. When the pipeline's newest buildset is already
// at head and queued, running or successful, the branch has not moved
// since: it makes none and returns that one as current. A head whose
// newest buildset failed or was cancelled is deployed again. swap and term,
// when set, are claimed with the buildset (a poller's).
func (c *Coordinator) pushOne(ctx context.Context, name, head, cause string, swap *store.MarkSwap, term *store.Term) (bs, current *store.Buildset, err error) {
	newest, err := c.st.ListBuildsets(ctx, store.Filter{Pipeline: name, Limit: 1})
	if err != nil {
		return nil, nil, err
	}
	if len(newest) == 1 && newest[0].Commit == head && (newest[0].State != store.BuildsetDone || newest[0].Result == store.Success) {
		c.log.Info("push: the pipeline's newest buildset is at the head already", "pipeline", name, "buildset", newest[0].ID, "commit", head)
		return nil, newest[0], nil
	}
	files, from, err := c.changedFiles(ctx, name, head)
	if err != nil {
		return nil, nil, err
	}
	if from == "" {
		cause += " (no earlier success: every job)"
	}
	bs, err = c.Submit(ctx, buildset.Event{Pipeline: name, Rev: head, Files: files, Cause: cause, Poll: swap, Term: term})
	return bs, nil, err
}

// changedFiles returns the files changed since the pipeline last succeeded,
// and that commit ("" and nil files when it never did).
func (c *Coordinator) changedFiles(ctx context.Context, pipeline, to string) ([]string, string, error) {
	last, err := c.st.ListBuildsets(ctx, store.Filter{Pipeline: pipeline, Result: store.Success, Limit: 1})
	if err != nil {
		return nil, "", err
	}
	if len(last) == 0 {
		return nil, "", nil
	}
	from := last[0].Commit
	files, err := c.opt.Runner.Mirror.ChangedFiles(ctx, from, to)
	if err != nil {
		return nil, "", err
	}
	return files, from, nil
}

// runTriggers is the triggers service: the cron timers and branch pollers
// of the config in force, one goroutine each, until ctx is done; it
// returns once they all have. ConfigChanged restarts it.
func (c *Coordinator) runTriggers(ctx context.Context) {
	cfg := c.opt.Config()
	var wg sync.WaitGroup
	for _, name := range cfg.PipelineNames() {
		pl := cfg.Pipelines[name]
		if expr := pl.Trigger.Cron; expr != "" {
			sched, err := cron.Parse(expr, time.UTC)
			if err != nil {
				c.log.Error("cron", "pipeline", name, "err", err) // config.Load checked it
				continue
			}
			wg.Go(func() { c.runCron(ctx, name, sched, pl.Trigger.Jitter) })
		}
		if p := pl.Trigger.Push; p != nil && p.Poll > 0 {
			wg.Go(func() { c.runPoll(ctx, name, p.Branch, p.Poll) })
		}
	}
	wg.Wait()
}

func cronMark(pipeline string) string { return "cron/" + pipeline }
func pollMark(pipeline string) string { return "poll/" + pipeline }

// runCron fires a pipeline's cron trigger while this process leads. Each
// tick is claimed in the store with the buildset it makes (store.CronTick,
// under the leader's term), so that a tick fires once, whichever process
// leads: a tick claimed already ("someone fired it", store.ErrTickTaken)
// makes nothing here. The timer starts from the latest tick claimed, so
// that the ticks missed while nobody led (a failover, no server running)
// fire once, at start, recorded under the latest of them.
func (c *Coordinator) runCron(ctx context.Context, name string, sched *cron.Schedule, jitter time.Duration) {
	last, err := c.lastTick(ctx, name)
	if err != nil {
		c.log.Error("cron: read last tick", "pipeline", name, "err", err)
		return
	}
	t := &cron.Timer{Schedule: sched, Clock: c.opt.Clock, Last: last, Jitter: jitter, Key: name}
	t.Run(ctx, func(tick cron.Tick) {
		term := c.Leading()
		if term == nil {
			return // no longer the leader: the loop is stopping
		}
		cause := "cron " + sched.String()
		if tick.Missed {
			cause = fmt.Sprintf("cron %s: tick of %s missed while no server led; run once now", sched.String(), tick.Time.UTC().Format(time.RFC3339))
			c.log.Warn("cron: missed tick", "pipeline", name, "tick", tick.Time)
		}
		at := tick.Time.UTC()
		bs, err := c.Submit(ctx, buildset.Event{Pipeline: name, Cause: cause, Cron: &store.CronTick{Tick: at}, Term: term})
		fired := Fired{Pipeline: name, Tick: at, Err: err}
		switch {
		case bs != nil:
			fired.Buildset, fired.Err = bs.ID, nil
			if err != nil {
				c.log.Error("cron: trigger", "pipeline", name, "err", err)
			}
		case errors.Is(err, store.ErrTickTaken):
			c.log.Info("cron: tick fired already", "pipeline", name, "tick", at)
		case errors.Is(err, store.ErrNotLeader):
			c.log.Warn("cron: no longer the leader; the tick is left to the next", "pipeline", name, "tick", at, "term", term.Term)
		default:
			c.log.Error("cron: trigger", "pipeline", name, "err", err)
		}
		c.TestSignals.Fired.Signal(fired)
	})
}

// lastTick is where a pipeline's cron timer starts: the latest tick
// claimed, else the mark a sortie from before claimed ticks left, else now,
// recorded as that mark: ticks before a pipeline's first start were never
// due, and a restart before its first tick still fires what it missed.
func (c *Coordinator) lastTick(ctx context.Context, name string) (time.Time, error) {
	last, ok, err := c.st.LastCronTick(ctx, name)
	if err != nil || ok {
		return last, err
	}
	v, err := c.st.GetMark(ctx, cronMark(name))
	if err != nil {
		return time.Time{}, err
	}
	if v != "" {
		return time.Parse(time.RFC3339Nano, v)
	}
	last = c.opt.Clock.Now()
	return last, c.st.SetMark(ctx, cronMark(name), last.UTC().Format(time.RFC3339Nano))
}

// firstHead records the head of rev as the pipeline's poll mark, and
// returns it; "" when it cannot be had or recorded (the poller then starts
// without one, as before any head was seen).
func (c *Coordinator) firstHead(ctx context.Context, name, rev string) string {
	m := c.opt.Runner.Mirror
	if err := m.UpdateBranches(ctx); err != nil {
		return ""
	}
	head, err := m.Resolve(ctx, rev)
	if err != nil || head == "" {
		return ""
	}
	if err := c.st.SetMark(ctx, pollMark(name), head); err != nil {
		c.log.Error("poll: record head", "pipeline", name, "err", err)
		return ""
	}
	return head
}

// runPoll polls a pipeline's branch while this process leads, for setups
// without webhooks. The head last seen moves, in the store, with the
// buildset it makes, by compare-and-set (store.MarkSwap): of two leaders
// that saw the same move, one makes a buildset.
func (c *Coordinator) runPoll(ctx context.Context, name, branch string, every time.Duration) {
	last, err := c.st.GetMark(ctx, pollMark(name))
	if err != nil {
		c.log.Error("poll: read last head", "pipeline", name, "err", err)
		return
	}
	rev := "refs/heads/" + branch
	if last == "" {
		// The first head seen is recorded, so that a move while no server
		// leads (a failover, a restart) is seen by the next leader.
		last = c.firstHead(ctx, name, rev)
	}
	p := &poll.Poller{
		Resolver: c.opt.Runner.Mirror, Rev: rev, Interval: every, Clock: c.opt.Clock, Last: last,
		OnError: func(err error) { c.log.Warn("poll", "pipeline", name, "err", err) },
	}
	// stored is the mark as this process last read or wrote it: what a
	// swap expects to find (the poller's first head is not recorded by
	// it).
	stored := last
	p.Run(ctx, func(old, head string) {
		term := c.Leading()
		if term == nil {
			return // no longer the leader: the loop is stopping
		}
		swap := &store.MarkSwap{Key: pollMark(name), Old: stored, New: head}
		bs, _, err := c.pushOne(ctx, name, head, fmt.Sprintf("branch %s moved (polling)", branch), swap, term)
		switch {
		case bs != nil:
			stored = head // the mark moved with it
			return
		case errors.Is(err, store.ErrMarkChanged):
			c.log.Info("poll: the move was seen and handled elsewhere", "pipeline", name, "head", head)
			if v, err := c.st.GetMark(ctx, pollMark(name)); err == nil {
				stored = v
			}
			return
		case errors.Is(err, store.ErrNotLeader):
			return
		case err != nil:
			c.log.Error("poll: trigger", "pipeline", name, "err", err)
		}
		// No buildset (the pipeline's newest is at the head already, or it
		// could not be made): the mark alone moves.
		if err := c.st.SetMark(context.WithoutCancel(ctx), pollMark(name), head); err != nil {
			c.log.Error("poll: record head", "pipeline", name, "err", err)
			return
		}
		stored = head
	})
}
