package scheduler

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

// Outcome is how one attempt ended, as reported by a Runner.
type Outcome struct {
	// ExitCode of the job's command; meaningful when Err is nil and neither
	// TimedOut nor Canceled is set.
	ExitCode int
	TimedOut bool
	Canceled bool
	// Infra is set when the bastion could not be reached or prepared: the
	// attempt is retried while attempts remain.
	Infra error
	// Err is any other failure to run the job (bad config at run time, a
	// log that cannot be written): the build is an ERROR, not retried.
	Err error
	// Lost is set when the process that ran the attempt died, so that the
	// attempt never ended: the attempt is LOST, and the build is retried
	// while attempts remain, else an ERROR. The loop sets it itself for the
	// attempts Resume says were running; a Runner does not.
	Lost error
}

// Runner runs one attempt of a job and waits for it. It must return when
// ctx is done, ending what it started.
type Runner interface {
	RunAttempt(ctx context.Context, job string, attempt int) Outcome
}

// Semaphores grants a job's semaphores all-or-nothing.
type Semaphores interface {
	// TryAcquire returns true when every semaphore was granted to holder.
	// since is when the holder started waiting (for fairness).
	TryAcquire(ctx context.Context, holder string, sems map[string]int, since time.Time) (bool, error)
	// Release drops what holder holds or waits for.
	Release(ctx context.Context, holder string) error
}

// Recorder persists state changes before they are acted on, and may show
// them to a user. An error stops the run: state that is not recorded must
// not be acted on.
type Recorder interface {
	AttemptStarted(ctx context.Context, job string, attempt int, at time.Time) error
	AttemptFinished(ctx context.Context, job string, attempt int, result store.Result, msg string, at time.Time) error
	BuildFinished(ctx context.Context, job string, result store.Result, reason string, at time.Time) error
}

// Batcher is a Recorder that can gather writes and make them together
// (one transaction instead of one each). The loop gathers what one turn
// records (a build's end, the starts it makes possible) and acts on none
// of it before the batch's Commit returns: no process starts, no
// semaphore is released, so every change is recorded before anything
// follows from it, as with the Recorder alone.
type Batcher interface {
	Batch() Batch
}

// Batch gathers writes: its Recorder and BuildEnder methods return nil
// and write nothing until Commit, which makes them all or none of them.
// Once Commit returns, the batch is empty and may gather again.
type Batch interface {
	Recorder
	BuildEnder
	Commit(ctx context.Context) error
	Len() int
}

// JobSpec is what the loop needs to know of a job beyond the graph.
type JobSpec struct {
	Semaphores map[string]int // name -> max
	Attempts   int            // tries in all; < 1 means 1
}

// Loop runs one buildset. Its fields are set before Run and not changed.
type Loop struct {
	Plan        *graph.Plan
	Jobs        map[string]JobSpec
	MaxParallel int
	// Remaining is each job's longest remaining critical path (ordering).
	Remaining map[string]time.Duration
	Buildset  string // holder ids are "<buildset>/<job>"

	Runner     Runner
	Semaphores Semaphores
	Recorder   Recorder
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Poll is how often jobs blocked on semaphores held elsewhere are
	// retried; 0 means 250ms.
	Poll time.Duration
	// RetryDelay is the wait before the second attempt after an
	// infrastructure failure, doubled for each later one up to a minute,
	// so that a bastion that is rebooting is not given up on in
	// milliseconds. 0 means DefaultRetryDelay; tests set it small.
	RetryDelay time.Duration
	// Resume is the state an earlier run of this buildset left in the store,
	// by job; nil for a fresh buildset. Jobs absent from it start fresh.
	Resume map[string]Prior
	// Hold, when set, is asked before attempts start: while it returns
	// true (an operator paused the pipeline) no attempt starts, retries
	// included; running ones go on.
	Hold func() bool
	// Slots, when set, are the executor's build slots, shared with the
	// loops of other buildsets: a job takes one as it starts (after its
	// dependencies, before its semaphores) and gives it back when its build
	// ends, so that at most the Pool's max builds run at once across them.
	// MaxParallel still bounds this loop alone.
	Slots *Pool
	// Drain, when closed, stops the run for a shutdown: no attempt starts,
	// retries waiting are given up, and once no attempt runs Run returns
	// ErrDrained without recording anything more, leaving the builds that
	// did not finish for the next process to resume.
	Drain <-chan struct{}
}

// Prior is what an earlier, interrupted run left of one build.
type Prior struct {
	// Result is the build's final result, "" if it had none.
	Result store.Result
	// Attempts is how many attempts it started (0: never started).
	Attempts int
	// Running is set when its latest attempt (number Attempts) has no end:
	// the process that ran it died. The loop records that attempt as LOST
	// and retries the build if attempts remain, else finishes it ERROR.
	Running bool
}

// ErrLost is the Outcome.Lost of an attempt whose process died.
var ErrLost = errors.New("lost: the sortie process running it stopped")

// DefaultRetryDelay is Loop.RetryDelay's default.
const DefaultRetryDelay = 2 * time.Second

func (l *Loop) retryDelay(attempt int) time.Duration {
	d := l.RetryDelay
	if d <= 0 {
		d = DefaultRetryDelay
	}
	for range attempt - 1 {
		if d >= time.Minute {
			break
		}
		d *= 2
	}
	return min(d, time.Minute)
}

// MaxAcquireErrors is how many semaphore requests in a row may fail (the
// store erring, not a semaphore being full) before the run stops with
// ERROR; each is tried again at the next poll.
const MaxAcquireErrors = 20

// ErrDrained is returned by Run when Loop.Drain stopped it.
var ErrDrained = errors.New("drained for shutdown")

// ErrCanceled is the cause to cancel a Run's context with for an
// operator's cancel (as opposed to a shutdown).
var ErrCanceled = errors.New("buildset cancelled")

// ReasonBuildsetCancelled is the reason of every build that had not
// started when its whole buildset was cancelled: CANCELED, whatever its
// dependencies. (Cancelling one build skips its dependents instead.)
const ReasonBuildsetCancelled = "buildset cancelled"

type attemptDone struct {
	job     string
	attempt int
	outcome Outcome
}

// Run schedules every job of the plan and returns the buildset's result
// when all have finished. When ctx is done, jobs not started are CANCELED
// at once (ReasonBuildsetCancelled), running attempts are cancelled and
// waited for, and Run returns CANCELED.
// A deadlock is reported as ERROR with an error saying what is stuck.
// Run returns a non-nil error only with ERROR.
func (l *Loop) Run(ctx context.Context) (store.Result, error) {
	now := l.Now
	if now == nil {
		now = time.Now
	}
	poll := l.Poll
	if poll <= 0 {
		poll = 250 * time.Millisecond
	}
	maxPar := max(l.MaxParallel, 1)
	core := NewCore(l.Plan, l.Remaining)

	// Attempts run under their own context so that a cancel reaches them
	// with its cause, and so that we always wait for them.
	runCtx, cancelRuns := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelRuns(nil)
	done := make(chan attemptDone)
	inFlight := 0
	attempts := map[string]int{}
	waitingSince := map[string]time.Time{}
	held := map[string]bool{}
	var fatal error
	// Recording and releasing must happen even while cancelling.
	bg := context.WithoutCancel(ctx)

	// Writes go to w: this turn's batch when the Recorder can gather
	// them, else the Recorder, writing at once. What follows from a write
	// in a batch (a process started, semaphores released) waits in after
	// until flush commits it.
	var batch Batch
	var after []func()
	w := func() Recorder {
		if batch != nil {
			return batch
		}
		return l.Recorder
	}
	act := func(f func()) {
		if batch != nil && batch.Len() > 0 {
			after = append(after, f)
			return
		}
		f()
	}
	// releasing: a release waits in after, for the commit of a build's end.
	releasing := false

	// slotted: the jobs holding one of l.Slots; all given back at the end,
	// whatever ends the run.
	slotted := map[string]bool{}
	giveSlot := func(job string) {
		if slotted[job] {
			l.Slots.Give()
			delete(slotted, job)
		}
	}
	defer func() {
		for job := range slotted {
			giveSlot(job)
		}
	}()
	release := func(job string) {
		if held[job] || !waitingSince[job].IsZero() {
			if err := l.Semaphores.Release(bg, l.holder(job)); err != nil && fatal == nil {
				fatal = fmt.Errorf("release semaphores of %s: %w", job, err)
			}
			delete(held, job)
			delete(waitingSince, job)
		}
	}
	// releaseAfter releases job's semaphores once what the turn recorded
	// of it is committed.
	releaseAfter := func(job string) {
		if batch != nil && batch.Len() > 0 {
			releasing = true
		}
		act(func() { release(job) })
	}
	record := func(err error) {
		if err != nil && fatal == nil {
			fatal = err
			cancelRuns(err)
		}
	}
	finishBuild := func(job string, res store.Result, reason string, att *ended) {
		rec := w()
		be, both := rec.(BuildEnder)
		switch {
		case att != nil && both:
			// The attempt's end and the build's, in one write, before its
			// semaphores go to others.
			record(be.BuildEnded(bg, job, att.n, att.res, att.msg, res, reason, now()))
			releaseAfter(job)
		case att != nil:
			record(rec.AttemptFinished(bg, job, att.n, att.res, att.msg, now()))
			releaseAfter(job)
			record(rec.BuildFinished(bg, job, res, reason, now()))
		default:
			// Recorded first: in a batch, the release waits for its commit.
			record(rec.BuildFinished(bg, job, res, reason, now()))
			releaseAfter(job)
		}
		_, skipped := core.Finish(job, res)
		giveSlot(job)
		for _, s := range skipped {
			releaseAfter(s.Job)
			record(rec.BuildFinished(bg, s.Job, s.Result, s.Reason, now()))
		}
	}
	cancelRest := func() {
		for _, s := range core.CancelRest(ReasonBuildsetCancelled) {
			releaseAfter(s.Job)
			record(w().BuildFinished(bg, s.Job, s.Result, s.Reason, now()))
		}
	}
	// After a crash, take up the earlier run's state before starting
	// anything, each write made at once.
	l.resume(bg, core, attempts, finishBuild, record, now)
	if b, ok := l.Recorder.(Batcher); ok {
		batch = b.Batch()
	}
	// commitErr is why the last batch could not be committed: the
	// attempts it started do not run.
	var commitErr error
	// Attempts run on workers kept from one attempt to the next: a new
	// goroutine's stack was grown anew by every attempt (the bastion's
	// and the store's calls run deep), which cost more than the hand-over.
	// A worker is made when none waits; all of them are stopped with the
	// loop, every attempt having ended by then (only a panic leaves the
	// loop with attempts in flight: those are not waited for).
	work := make(chan attemptWork)
	var workers sync.WaitGroup
	defer func() {
		close(work)
		if inFlight == 0 {
			workers.Wait()
		}
	}()
	runAttempt := func(a attemptWork) {
		select {
		case work <- a:
			return
		default:
		}
		workers.Add(1)
		go func(a attemptWork) {
			defer workers.Done()
			for {
				done <- attemptDone{job: a.job, attempt: a.n, outcome: l.Runner.RunAttempt(runCtx, a.job, a.n)}
				var ok bool
				if a, ok = <-work; !ok {
					return
				}
			}
		}(a)
	}
	launch := func(job string) {
		attempts[job]++
		n := attempts[job]
		if err := w().AttemptStarted(bg, job, n, now()); err != nil {
			record(err)
			finishBuild(job, store.Error, "cannot record the attempt: "+err.Error(), nil)
			return
		}
		inFlight++
		act(func() {
			if commitErr != nil {
				inFlight--
				finishBuild(job, store.Error, "cannot record the attempt: "+commitErr.Error(), nil)
				return
			}
			runAttempt(attemptWork{job, n})
		})
	}
	// flush commits the turn's batch, then does what waited for it. After
	// a failed commit, the run writes at once (it is ending: record made
	// the failure fatal).
	flush := func() {
		for batch != nil && (batch.Len() > 0 || len(after) > 0) {
			if batch.Len() > 0 {
				if err := batch.Commit(bg); err != nil {
					record(err)
					commitErr = err
					batch = nil
				}
			}
			todo := after
			after, releasing = nil, false
			for _, f := range todo {
				f()
			}
		}
	}

	// A retry waits off the loop goroutine; the job keeps its slot and
	// semaphores and counts as in flight meanwhile.
	retries := make(chan string)
	retryCtx, cancelRetries := context.WithCancel(context.Background())
	defer cancelRetries()
	retryLater := func(job string, after time.Duration) {
		inFlight++
		go func() {
			t := time.NewTimer(after)
			defer t.Stop()
			select {
			case <-t.C:
			case <-runCtx.Done():
			case <-retryCtx.Done():
			}
			retries <- job
		}()
	}

	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	// waitSlot is closed when an executor slot is given back, while a ready
	// job waits for one; nil otherwise.
	var waitSlot <-chan struct{}
	canceled := false
	drainCh, draining := l.Drain, false
	acquireErrs := 0
	// A drain is looked for before anything starts, not only when the
	// select below picks it: it may be closed before Run, or at once with
	// an attempt's end whose dependents would start.
	drained := func() bool {
		if !draining && drainCh != nil {
			select {
			case <-drainCh:
				draining, drainCh = true, nil
				cancelRetries()
			default:
			}
		}
		return draining
	}
	holding := func() bool { return drained() || (l.Hold != nil && l.Hold()) }
	for {
		// Start what may start: slots permitting, best first; a job whose
		// semaphores are taken waits without holding up the others.
		if !canceled && fatal == nil && !holding() {
			var blocked []string
			waitSlot = nil
			for core.Running() < maxPar {
				job, ok := core.PopReady()
				if !ok {
					break
				}
				if l.Slots != nil && !slotted[job] {
					// Asked before TryTake: a slot given back in between
					// closes this channel, and the loop wakes for it.
					freed := l.Slots.Freed()
					if !l.Slots.TryTake() {
						blocked = append(blocked, job)
						waitSlot = freed
						break // the executor is full: nothing else starts either
					}
					slotted[job] = true
				}
				spec := l.Jobs[job]
				if len(spec.Semaphores) > 0 && !held[job] {
					if waitingSince[job].IsZero() {
						waitingSince[job] = now()
					}
					ok, err := l.Semaphores.TryAcquire(bg, l.holder(job), spec.Semaphores, waitingSince[job])
					if err == nil && !ok && releasing {
						// What it waits for may be a build's that ended this
						// turn, released once that end is committed: commit
						// now and ask again, rather than at the next poll.
						flush()
						if fatal != nil {
							giveSlot(job)
							blocked = append(blocked, job)
							break
						}
						ok, err = l.Semaphores.TryAcquire(bg, l.holder(job), spec.Semaphores, waitingSince[job])
					}
					if err != nil {
						// A store that fails once (a busy database) must not
						// cancel the builds that run: try again at the next
						// poll, and give up only when it keeps failing.
						giveSlot(job)
						blocked = append(blocked, job)
						acquireErrs++
						if acquireErrs >= MaxAcquireErrors {
							record(fmt.Errorf("acquire semaphores of %s: %d tries failed in a row: %w", job, acquireErrs, err))
						}
						break
					}
					acquireErrs = 0
					if !ok {
						giveSlot(job) // not while it waits for its semaphores
						blocked = append(blocked, job)
						continue
					}
					held[job] = true
					delete(waitingSince, job)
				}
				core.Start(job)
				launch(job)
			}
			for _, job := range blocked {
				core.Requeue(job)
			}
			if len(blocked) == 0 && fatal == nil && core.Deadlocked() {
				fatal = fmt.Errorf("deadlock: nothing can run: %s", strings.Join(core.Stuck(), "; "))
			}
		}
		flush()
		if core.Done() || (inFlight == 0 && (canceled || fatal != nil)) {
			break
		}
		if draining && inFlight == 0 {
			return "", ErrDrained
		}
		select {
		case d := <-done:
			inFlight--
			l.attemptEnded(core, d, attempts, spec(l.Jobs, d.job), w(), finishBuild, record, retryLater, canceled || fatal != nil, now)
		case job := <-retries:
			inFlight--
			switch {
			case canceled || fatal != nil:
				finishBuild(job, store.Canceled, "cancelled while waiting to retry", nil)
			case drained():
				releaseAfter(job) // the next process retries it
			case holding():
				retryLater(job, poll)
			default:
				launch(job)
			}
		case <-drainCh:
			drained()
		case <-waitSlot:
		case <-ticker.C:
		case <-ctx.Done():
			if !canceled {
				canceled = true
				cancelRuns(context.Cause(ctx))
				// The whole buildset is cancelled: every build that has
				// not started is CANCELED now, before the running ones
				// end and would skip their dependents, so that the
				// outcome does not depend on how far the builds had got.
				cancelRest()
			}
			ctx = context.Background() // fire once
		}
	}

	switch {
	case fatal != nil:
		flush()
		for _, s := range core.CancelRest("sortie error: " + fatal.Error()) {
			release(s.Job)
			l.Recorder.BuildFinished(bg, s.Job, store.Error, s.Reason, now())
		}
		return store.Error, fatal
	case canceled:
		cancelRest() // what the cancel found running and left unfinished
		flush()
		return store.Canceled, nil
	}
	return core.Result(), nil
}

// resume takes up what an earlier, interrupted run left (Loop.Resume)
// before anything starts. Recorded results are restored in plan order and
// not recorded again; the dependents this skips are recorded unless they
// have a result of their own. Then an attempt left running is ended as
// lost (attemptEnded decides what follows), and a build with attempts
// behind it goes on from the next number. Nothing is held: the semaphores
// of the dead process were released, so a resumed job acquires its own.
func (l *Loop) resume(ctx context.Context, core *Core, attempts map[string]int,
	finishBuild func(string, store.Result, string, *ended), record func(error), now func() time.Time) {
	if len(l.Resume) == 0 {
		return
	}
	for _, j := range l.Plan.Jobs {
		p := l.Resume[j.Name]
		if p.Result == "" || core.state(j.Name) == Finished {
			continue // a dependent skipped by a restored result keeps its own
		}
		_, skipped := core.Restore(j.Name, p.Result)
		for _, s := range skipped {
			if l.Resume[s.Job].Result == "" {
				record(l.Recorder.BuildFinished(ctx, s.Job, s.Result, s.Reason, now()))
			}
		}
	}
	// With a consistent store a job left running is not finished yet; if
	// it is (skipped above), its attempt is still ended as lost.
	finishOnce := func(job string, res store.Result, reason string, att *ended) {
		if core.state(job) != Finished {
			finishBuild(job, res, reason, att)
		} else if att != nil {
			record(l.Recorder.AttemptFinished(ctx, job, att.n, att.res, att.msg, now()))
		}
	}
	// The job never started in this Core: it is queued already, and runs
	// again when its dependencies, a slot and its semaphores allow.
	queued := func(string, time.Duration) {}
	for _, j := range l.Plan.Jobs {
		p := l.Resume[j.Name]
		if p.Result != "" || p.Attempts < 1 {
			continue
		}
		attempts[j.Name] = p.Attempts
		if p.Running {
			d := attemptDone{job: j.Name, attempt: p.Attempts, outcome: Outcome{Lost: ErrLost}}
			l.attemptEnded(core, d, attempts, spec(l.Jobs, j.Name), l.Recorder, finishOnce, record, queued, false, now)
		}
	}
}

func spec(jobs map[string]JobSpec, job string) JobSpec {
	s := jobs[job]
	if s.Attempts < 1 {
		s.Attempts = 1
	}
	return s
}

// attemptEnded decides a build's result: the one place where an attempt's
// outcome becomes SUCCESS, FAILURE, TIMED_OUT, CANCELED, RETRY_LIMIT or
// ERROR, or a retry. An attempt lost with its process (Outcome.Lost, on
// resume) is retried at once while attempts remain, else the build is an
// ERROR; retryLater is then the resume's, the job being queued already.
func (l *Loop) attemptEnded(core *Core, d attemptDone, attempts map[string]int, spec JobSpec, rec Recorder,
	finishBuild func(string, store.Result, string, *ended), record func(error), retryLater func(string, time.Duration), stopping bool, now func() time.Time) {
	o := d.outcome
	var res store.Result
	var msg string
	attemptRes := store.Result("") // the attempt's result when not the build's
	switch {
	case o.Canceled:
		res, msg = store.Canceled, "cancelled"
	case o.TimedOut:
		res, msg = store.TimedOut, "timed out"
	case o.Err != nil:
		res, msg = store.Error, o.Err.Error()
	case o.Infra != nil:
		msg = o.Infra.Error()
		if d.attempt < spec.Attempts && !stopping {
			record(rec.AttemptFinished(context.Background(), d.job, d.attempt, store.Retry, msg, now()))
			retryLater(d.job, l.retryDelay(d.attempt)) // the slot and semaphores stay held
			return
		}
		res = store.RetryLimit
		msg = fmt.Sprintf("%s (attempt %d of %d)", msg, d.attempt, spec.Attempts)
		if stopping && d.attempt < spec.Attempts {
			res = store.Canceled
		}
	case o.Lost != nil:
		msg = o.Lost.Error()
		if d.attempt < spec.Attempts && !stopping {
			record(rec.AttemptFinished(context.Background(), d.job, d.attempt, store.Lost, msg, now()))
			retryLater(d.job, 0) // the process died, not the bastion: no wait
			return
		}
		res, attemptRes = store.Error, store.Lost
		msg = fmt.Sprintf("%s (attempt %d of %d)", msg, d.attempt, spec.Attempts)
		if stopping && d.attempt < spec.Attempts {
			res = store.Canceled
		}
	case o.ExitCode == 0:
		res = store.Success
	default:
		res, msg = store.Failure, fmt.Sprintf("exit status %d", o.ExitCode)
	}
	reason := ""
	if res != store.Success {
		reason = msg
	}
	finishBuild(d.job, res, reason, &ended{n: d.attempt, res: cmp.Or(attemptRes, res), msg: msg})
}

// attemptWork is an attempt handed to a worker of Loop.Run.
type attemptWork struct {
	job string
	n   int
}

// ended is the end of the attempt that ends a build, recorded with it.
type ended struct {
	n   int
	res store.Result
	msg string
}

// BuildEnder is a Recorder that records an attempt's end and the end of
// its build in one write (one transaction instead of two). The loop uses it
// when the Recorder has it; the effect is that of AttemptFinished then
// BuildFinished.
type BuildEnder interface {
	BuildEnded(ctx context.Context, job string, attempt int, attemptResult store.Result, msg string, result store.Result, reason string, at time.Time) error
}

func (l *Loop) holder(job string) string { return l.Buildset + "/" + job }
