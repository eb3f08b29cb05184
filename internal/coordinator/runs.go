package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// runs is the service that runs buildsets in this process, one goroutine
// each, and stops them in two steps (drain, then cancel).
type runs struct {
	c *Coordinator

	mu     sync.Mutex
	m      map[string]*run
	wg     sync.WaitGroup
	closed bool // Stop has begun: nothing more is launched
	// ctx is the parent of every run; cancelled, with errShutdown, when
	// the grace runs out.
	ctx    context.Context
	cancel context.CancelCauseFunc
	// drain is closed by Stop: runs start no new attempt, and return once
	// none runs.
	drain     chan struct{}
	drainOnce sync.Once
}

// run is one buildset this process runs.
type run struct {
	bs     *store.Buildset
	cancel context.CancelCauseFunc
	// cancelled is set once a cancel asked through another server was
	// applied (Cancels); guarded by runs.mu.
	cancelled bool
	builds    atomic.Value // buildset.BuildCanceler
}

// Start makes the runs' parent context, which keeps ctx's values but not
// its cancellation: only Stop ends the runs.
func (r *runs) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx != nil {
		return errors.New("runs: " + errStarted.Error())
	}
	r.ctx, r.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	r.drain = make(chan struct{})
	return nil
}

// Stop launches nothing more and drains the runs: none starts a new
// attempt, and each returns once its running ones have finished, leaving
// its buildset for the next start. Once the coordinator's grace has
// passed, or ctx is done, it cancels those still running with
// errShutdown. It always waits for every run to return. It is safe to
// call twice and before Start.
func (r *runs) Stop(ctx context.Context) {
	r.mu.Lock()
	r.closed = true
	started := r.ctx != nil
	drain, drainOnce, cancel := r.drain, &r.drainOnce, r.cancel
	r.mu.Unlock()
	if !started {
		return
	}
	drainOnce.Do(func() { close(drain) })
	r.c.TestSignals.Draining.Signal(r.c.Owner())
	waited := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(waited)
	}()
	grace := time.NewTimer(r.c.opt.Grace)
	defer grace.Stop()
	select {
	case <-waited:
		return
	case <-grace.C:
	case <-ctx.Done():
	}
	r.c.log.Warn("grace period over: cancelling running builds")
	cancel(errShutdown)
	<-waited
}

// halt launches nothing more, cancels every run with cause, and waits
// for them: the lease was lost, and the runs write nothing more. reopen
// takes the service up again, for the next owner.
func (r *runs) halt(cause error) {
	r.mu.Lock()
	r.closed = true
	if r.cancel != nil {
		r.cancel(cause)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// reopen makes the runs' parent context anew after halt, unless Stop has
// begun.
func (r *runs) reopen(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c.stopping.Load() {
		return
	}
	r.ctx, r.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
	r.drain, r.drainOnce = make(chan struct{}), sync.Once{}
	r.closed = false
}

// launch runs a buildset in a goroutine of the runs service: unless it
// runs already here, or a shutdown has begun.
func (c *Coordinator) launch(bs *store.Buildset) {
	r := c.runs
	r.mu.Lock()
	if r.closed || r.ctx == nil || r.m[bs.ID] != nil {
		r.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancelCause(r.ctx)
	rn := &run{bs: bs, cancel: cancel}
	r.m[bs.ID] = rn
	r.wg.Add(1)
	giveUp, drain := r.ctx.Done(), r.drain
	r.mu.Unlock()

	runner := *c.opt.Runner
	var obs RunObserver
	if c.opt.Observer != nil {
		if obs = c.opt.Observer.Launched(bs); obs != nil {
			runner.Observer = obs
		}
	}
	c.TestSignals.Launched.Signal(bs.ID)
	go func() {
		defer r.wg.Done()
		defer cancel(nil)
		if obs != nil {
			defer obs.Done()
		}
		result, err := runner.RunWith(ctx, bs, buildset.RunOptions{
			Hold:   func() bool { return c.Paused(bs.Pipeline) != nil },
			Drain:  drain,
			Builds: func(b buildset.BuildCanceler) { rn.builds.Store(b) },
			Slots:  c.slots,
			// A write the store refuses (a full disk) is waited for until
			// the process goes down for good, an operator's cancel
			// included.
			GiveUp: giveUp,
			End: func(ctx context.Context, giveUp <-chan struct{}, p store.EndBuildsetParams) (bool, error) {
				return c.end(ctx, ending{Pipeline: bs.Pipeline, Params: p, GiveUp: giveUp})
			},
		})
		r.mu.Lock()
		delete(r.m, bs.ID)
		r.mu.Unlock()
		c.wakeClaims() // room for one more
		switch {
		case errors.Is(err, buildset.ErrDrained):
			c.log.Info("buildset left unfinished, for the next server to claim it", "buildset", bs.ID)
		case errors.Is(err, store.ErrUnavailable):
			// Its end is not in the store: say nothing of a result the
			// store does not have. The next start resumes it.
			c.log.Error("buildset left unfinished in the store, which cannot be written; the next start resumes it", "buildset", bs.ID, "err", err)
		case err != nil:
			c.log.Error("buildset ended", "buildset", bs.ID, "pipeline", bs.Pipeline, "result", result, "err", err)
		default:
			c.log.Info("buildset ended", "buildset", bs.ID, "pipeline", bs.Pipeline, "result", result)
		}
	}()
}

// Running reports whether this process runs buildset id now.
func (c *Coordinator) Running(id string) bool {
	c.runs.mu.Lock()
	defer c.runs.mu.Unlock()
	return c.runs.m[id] != nil
}

// Cancel cancels a buildset: one this process runs through its context
// (scheduler.ErrCanceled); one no process runs (queued, admitted and not
// claimed yet, or left by a dead server) at once; one another server
// runs by asking it (store.RequestCancel), which it does at its next
// look, within a second or at once on PostgreSQL. It returns
// store.ErrNotFound, or store.ErrConflict when the buildset has finished
// or a `sortie run` runs it.
func (c *Coordinator) Cancel(ctx context.Context, id, by string) error {
	// The store first: a run whose end is recorded may not have left the
	// runs yet, and a finished buildset cannot be cancelled.
	bs, err := c.st.GetBuildsetLight(ctx, id)
	if err != nil {
		return err
	}
	if bs.State == store.BuildsetDone {
		return store.ErrConflict
	}
	c.runs.mu.Lock()
	rn := c.runs.m[id]
	c.runs.mu.Unlock()
	if rn != nil {
		c.log.Info("cancel", "buildset", id, "by", by)
		rn.cancel(scheduler.ErrCanceled)
		return nil
	}
	if bs.PinnedTo != "" && bs.State != store.BuildsetQueued {
		// A `sortie run` never looks for cancels asked of it: it is
		// cancelled where it runs (Ctrl-C).
		return fmt.Errorf("buildset %s is run by the sortie run process %s; cancel it there: %w", id, bs.PinnedTo, store.ErrConflict)
	}
	if bs.State != store.BuildsetQueued && bs.Owner != "" {
		// Run by another server on the same database: asked of it,
		// which cancels it at its next look (Cancels).
		c.log.Info("cancel asked of the server that runs it", "buildset", id, "by", by, "owner", bs.Owner)
		return c.st.RequestCancel(ctx, id, by)
	}
	// Queued, or admitted and not claimed yet (a claim after the end
	// finds it DONE and leaves it), or left by a dead server.
	c.log.Info("cancel", "buildset", id, "by", by)
	return c.finishQueued(ctx, bs.Pipeline, id, store.Canceled, scheduler.ReasonBuildsetCancelled, "cancelled by "+by+" while queued")
}

// CancelBuild cancels the running attempt of one build of a buildset this
// process runs; it reports false when there is none.
func (c *Coordinator) CancelBuild(id, job string) bool {
	c.runs.mu.Lock()
	rn := c.runs.m[id]
	c.runs.mu.Unlock()
	if rn == nil {
		return false
	}
	b, _ := rn.builds.Load().(buildset.BuildCanceler)
	return b != nil && b.CancelBuild(job)
}
