// Package buildset makes and runs buildsets: it resolves the commit and
// freezes the job graph into the store (Create), then runs the graph with
// the scheduler on a bastion, recording every state change before acting
// on it (Run). `sortie run` and `sortie serve` both drive buildsets here.
package buildset

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/sortie-ci/sortie/internal/ansible"
	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
)

// DefaultKeepCheckouts is how many finished checkouts a bastion keeps for
// debugging.
const DefaultKeepCheckouts = 3

// Observer is told of state changes as they are recorded (progress
// display). It must not block.
type Observer interface {
	BuildsetStarted(bs *store.Buildset, plan *graph.Plan)
	AttemptStarted(job string, attempt int, at time.Time)
	BuildFinished(job string, result store.Result, reason string, at time.Time)
}

// BastionObserver is an Observer that also hears how the bootstrap job
// prepared the bastion: how long the buildset's checkout took, and whether
// the install commands ran or were already up to date. It must not block.
type BastionObserver interface {
	BastionPrepared(job string, checkout time.Duration, hasInstall, installed bool)
}

// EstimateObserver is an Observer that also hears, as the buildset starts
// and when every job has a history of successful runs, each job's longest
// remaining path (its own duration and the longest chain below it): the
// time the buildset still needs from that job on. It must not block.
type EstimateObserver interface {
	Estimated(remaining map[string]time.Duration)
}

// Store is what a Runner keeps its buildsets in: the buildsets themselves,
// the semaphores it drops when one is left, and what Ansible reported of
// each build.
type Store interface {
	store.Buildsets
	store.Semaphores
	store.Hosts
}

// HostsObserver is an Observer that also hears, at the end of each
// attempt that ran Ansible, what it reported (ansible.Outcome). It must
// not block.
type HostsObserver interface {
	HostsRecorded(job string, attempt int, o ansible.Outcome)
}

// Runner makes and runs buildsets. Its fields are set before use.
type Runner struct {
	Store      Store
	Bastion    bastion.Bastion
	Mirror     *source.Mirror
	Semaphores *semaphore.Client
	// LogDir holds the build logs: <LogDir>/<buildset>/<job>.<attempt>.log.
	LogDir string
	// Logs, if set, is where build logs go instead of LogDir's files:
	// logs.Chunks keeps them in the store, readable from every process on
	// it (several servers on PostgreSQL).
	Logs logs.Sink
	// Observer may be nil.
	Observer Observer
	// Getenv reads Sortie's own environment for secret_env values; nil
	// means os.Getenv.
	Getenv func(string) string
	// KeepCheckouts finished checkouts stay on the bastion; 0 means
	// DefaultKeepCheckouts.
	KeepCheckouts int
	// Poll is how often a buildset waiting for its pipeline semaphore, or a
	// job waiting for its semaphores, asks again. 0 means 250ms.
	Poll time.Duration
	// Grace is the time between TERM and KILL when a build is ended; 0
	// means bastion.DefaultGrace.
	Grace time.Duration
	// MaxParallel overrides limits.max_parallel when > 0.
	MaxParallel int
	Now         func() time.Time
	// Reported, when set, is called once a state change has recorded
	// report deliveries (the coordinator wakes its report worker). It
	// must not block.
	Reported func()
	// Fresh, when set, keeps the plan and spec of the last buildset this
	// runner made, for RunWith to take rather than decode the copies it
	// was given: `sortie run` makes a buildset and runs it at once.
	Fresh *Fresh
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now().UTC()
	}
	return time.Now().UTC()
}

func (r *Runner) getenv(k string) string {
	if r.Getenv != nil {
		return r.Getenv(k)
	}
	return os.Getenv(k)
}

// Event is what makes a buildset.
type Event struct {
	Pipeline string
	// Rev is a commit or ref; "" means the head of source.branch.
	Rev string
	// Files are the changed files; nil when the event has no file list.
	Files []string
	// Cause says what made the buildset, for people ("push to main",
	// "cron", "manual by alice").
	Cause string
	// CreatedAt, when set, is the buildset's arrival time (a coalesced
	// buildset keeps its oldest member's); zero means now.
	CreatedAt time.Time
	// PinnedTo, when set, is the process that made the buildset to run it
	// itself (`sortie run`): the buildset is pinned to it
	// (store.Buildset.PinnedTo), and a server sharing the store never
	// starts, supersedes nor merges it.
	PinnedTo string
	// Mode is the check mode and limit asked for; a pipeline with
	// check: true runs in check mode whatever it says.
	Mode Mode
	// Cron, Poll and Term are claimed with the buildset, in the
	// transaction that makes it (store.CreateBuildsetParams): a tick
	// fired already, a poll mark moved meanwhile or a term no longer the
	// leader's makes nothing, and Create returns the store's error.
	Cron *store.CronTick
	Poll *store.MarkSwap
	Term *store.Term
	// Fetched says that UpdateMirror brought the mirror up to date for
	// this event already: Create does not fetch again.
	Fetched bool
}

// revOf is the revision an event names: "" is source.branch's head.
func revOf(cfg *config.Config, ev Event) string {
	if ev.Rev == "" {
		return cfg.Source.Branch
	}
	return ev.Rev
}

// UpdateMirror brings the mirror up to date for what Create makes of ev,
// as Create does unless ev.Fetched: a caller with other work to do first
// (`sortie run` opening its store) may have the fetch done meanwhile.
func (r *Runner) UpdateMirror(ctx context.Context, cfg *config.Config, ev Event) error {
	rev := revOf(cfg, ev)
	update := r.Mirror.UpdateBranches
	switch {
	case rev == "" || strings.HasPrefix(rev, "HEAD"):
		// Only HEAD needs the remote's default branch, one more
		// connection to it.
		update = r.Mirror.Update
	case source.IsHash(rev):
		// A commit named in full is what it is wherever the branches
		// went: fetched only when the mirror lacks it.
		update = func(ctx context.Context) error { return r.Mirror.Ensure(ctx, rev) }
	}
	if err := update(ctx); err != nil {
		return fmt.Errorf("create buildset: %w", err)
	}
	return nil
}

// preparer is a Bastion that can make ahead what a first checkout from a
// repository needs (the local bastion's mirror).
type preparer interface {
	Prepare(ctx context.Context, repo string) error
}

// PrepareBastion has the bastion make ahead what the bootstrap's checkout
// from the mirror needs, when it can (see local.Bastion.Prepare), so that
// a caller with other work before the bootstrap (`sortie run` making its
// buildset) has it done meanwhile. Other bastions do nothing.
func (r *Runner) PrepareBastion(ctx context.Context) error {
	if p, ok := r.Bastion.(preparer); ok {
		return p.Prepare(ctx, r.Mirror.Dir)
	}
	return nil
}

// Create resolves the commit and freezes the graph into a QUEUED buildset.
// A buildset error of SPEC §2.2 (a hard dependency the pipeline does not
// run) still makes a buildset, DONE with CONFIG_ERROR, its message in Error
// and no builds; Create then returns it with an error wrapping
// *graph.MissingDependencyError. A change that selects no job makes a
// buildset DONE with SKIPPED (graph.NothingSelected in Error, its plan
// kept, no builds), returned without an error: there is nothing to run.
// An unknown pipeline or commit makes nothing.
func (r *Runner) Create(ctx context.Context, cfg *config.Config, ev Event) (*store.Buildset, error) {
	return r.CreatePrepared(ctx, cfg, ev, nil)
}

// CreatePrepared is Create with the graph and spec that Prepare made of
// cfg and ev beforehand; nil prepares them here.
func (r *Runner) CreatePrepared(ctx context.Context, cfg *config.Config, ev Event, p *Prepared) (*store.Buildset, error) {
	if _, ok := cfg.Pipelines[ev.Pipeline]; !ok {
		return nil, &graph.UnknownPipelineError{Pipeline: ev.Pipeline}
	}
	rev := revOf(cfg, ev)
	if !ev.Fetched {
		if err := r.UpdateMirror(ctx, cfg, ev); err != nil {
			return nil, err
		}
	}
	commit, err := r.Mirror.Resolve(ctx, rev)
	if err != nil {
		return nil, fmt.Errorf("create buildset: %w", err)
	}
	created := ev.CreatedAt.UTC()
	if ev.CreatedAt.IsZero() {
		created = r.now()
	}
	bs := &store.Buildset{
		Pipeline: ev.Pipeline, Commit: commit, Files: ev.Files, Cause: ev.Cause,
		State: store.BuildsetQueued, CreatedAt: created, PinnedTo: ev.PinnedTo,
	}
	if p == nil {
		p = Prepare(cfg, ev)
	}
	if p.err != nil {
		return nil, p.err
	}
	return r.insert(ctx, bs, p, &ev)
}

// Rerun makes a QUEUED buildset that runs again, at the same commit and
// with the same frozen graph and spec, the jobs of a finished buildset that
// did not succeed, and every job below them; the bootstrap job runs again
// too (it makes the new buildset's checkout). It returns ErrNothingToRerun
// when every job succeeded, and an error for a buildset not finished.
func (r *Runner) Rerun(ctx context.Context, id, cause string) (*store.Buildset, error) {
	old, err := r.Store.GetBuildset(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("rerun %s: %w", id, err)
	}
	if old.State != store.BuildsetDone {
		return nil, fmt.Errorf("rerun %s: %w", id, ErrNotFinished)
	}
	if old.Result == store.ConfigError {
		return nil, fmt.Errorf("rerun %s: its graph could not be made (%s); trigger the pipeline again", id, old.Error)
	}
	if old.Result == store.Skipped {
		return nil, fmt.Errorf("rerun %s: it had nothing to deploy (%s): %w", id, old.Error, ErrNothingToRerun)
	}
	plan, err := Plan(old)
	if err != nil {
		return nil, err
	}
	spec, err := SpecOf(old)
	if err != nil {
		return nil, err
	}
	builds, err := r.Store.Builds(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("rerun %s: %w", id, err)
	}
	again := map[string]bool{}
	for _, b := range builds {
		if b.Result != store.Success {
			again[b.Job] = true
		}
	}
	if len(again) == 0 {
		return nil, fmt.Errorf("rerun %s: %w", id, ErrNothingToRerun)
	}
	sub := plan.Rerun(again)
	for name := range spec.Jobs {
		if sub.Job(name) == nil {
			delete(spec.Jobs, name)
		}
	}
	bs := &store.Buildset{
		Pipeline: old.Pipeline, Commit: old.Commit, Files: old.Files, RerunOf: old.ID,
		Cause: cause, State: store.BuildsetQueued, CreatedAt: r.now(),
	}
	p := prepared(sub, spec, nil)
	if p.err != nil {
		return nil, p.err
	}
	return r.insert(ctx, bs, p, nil)
}

// ErrNothingToRerun: every job of the buildset succeeded.
var ErrNothingToRerun = errors.New("every job succeeded: nothing to run again")

// ErrNotFinished: the buildset has not finished yet.
var ErrNotFinished = errors.New("the buildset has not finished")

// insert stores a new buildset with its prepared plan and spec, or, when
// their plan could not be made, a buildset DONE with CONFIG_ERROR. What ev
// claims (a cron tick, a poll mark, a leader's term) is claimed with it;
// ev may be nil.
func (r *Runner) insert(ctx context.Context, bs *store.Buildset, prep *Prepared, ev *Event) (*store.Buildset, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("create buildset: %w", err)
	}
	bs.ID = id.String()
	plan, spec, planErr := prep.plan, prep.spec, prep.planErr
	bs.Mode, bs.Plan, bs.Spec = prep.mode, prep.planJSON, prep.specJSON
	var jobs []string
	if planErr == nil && len(plan.Jobs) > 0 {
		jobs = make([]string, len(plan.Jobs))
		for i, j := range plan.Jobs {
			jobs[i] = j.Name
		}
	}
	p := store.CreateBuildsetParams{Buildset: bs, Jobs: jobs}
	if ev != nil {
		p.Cron, p.Poll, p.Term = ev.Cron, ev.Poll, ev.Term
	}
	// Made DONE at once: no reader sees it QUEUED, no manager admits it,
	// nothing is done on the bastion.
	switch {
	case planErr != nil:
		p.ConfigError = planErr.Error()
		bs.FinishedAt = ptr(r.now())
		if p.Reports, err = spec.Deliveries(ReportFailure, *bs.FinishedAt); err != nil {
			return nil, fmt.Errorf("create buildset: %w", err)
		}
	case plan.Empty():
		p.Skipped = graph.NothingSelected
		bs.FinishedAt = ptr(r.now())
	}
	// The run of this buildset that Fresh keeps it for needs its jobs'
	// priorities: they are read from the history beside the insert, on
	// the other core.
	var prio *priorities
	var read sync.WaitGroup
	if r.Fresh != nil && planErr == nil && p.Skipped == "" {
		read.Go(func() {
			if rem, hist, err := r.remaining(ctx, spec, plan); err == nil {
				prio = &priorities{remaining: rem, fromHistory: hist}
			}
		})
	}
	err = r.Store.CreateBuildset(ctx, p)
	read.Wait()
	if err != nil {
		return nil, fmt.Errorf("create buildset: %w", err)
	}
	if planErr == nil && p.Skipped == "" {
		r.Fresh.put(bs.ID, plan, spec, prio)
	}
	r.reported(p.Reports)
	switch {
	case planErr != nil:
		bs.State, bs.Result, bs.Error = store.BuildsetDone, store.ConfigError, planErr.Error()
		return bs, fmt.Errorf("buildset %s: %w", bs.ID, planErr)
	case p.Skipped != "":
		bs.State, bs.Result, bs.Error = store.BuildsetDone, store.Skipped, p.Skipped
	}
	return bs, nil
}

// Run runs a buildset to its end and returns its result. A QUEUED or
// ADMITTED buildset starts fresh; a RUNNING one was started by a process
// that died, and is resumed from what the store holds (see resume). It
// waits for the pipeline semaphore first, holds it until the last build
// ends, and releases every semaphore of the buildset whatever happens.
// Cancel ctx (with scheduler.ErrCanceled as cause, or any other) to cancel
// it. The buildset runs its frozen Spec, not the config of the moment.
func (r *Runner) Run(ctx context.Context, bs *store.Buildset) (store.Result, error) {
	return r.RunWith(ctx, bs, RunOptions{})
}

// RunOptions are the coordinator's hooks into a run.
type RunOptions struct {
	// Hold, when set and true, starts no new attempt (a pause); running
	// ones go on.
	Hold func() bool
	// Drain, when closed, starts no new attempt and makes RunWith return
	// ErrDrained once none runs, leaving the buildset RUNNING in the store
	// for the next process to resume.
	Drain <-chan struct{}
	// Builds, when set, is given the handle to cancel one build.
	Builds func(BuildCanceler)
	// Slots, when set, are the executor's build slots shared with the
	// other buildsets it runs (limits.max_parallel across them all).
	Slots *scheduler.Pool
	// GiveUp, when closed, ends the retries of writes that the store
	// refused for now (store.ErrUnavailable: its disk is full); until
	// then the run waits for each such write, acting on nothing it could
	// not record. nil means ctx's Done: a server passes a channel closed
	// only when it goes down, so that an operator's cancel still waits
	// for the store.
	GiveUp <-chan struct{}
	// End, when set, is how the run ends its buildset, whichever way it
	// ends (its last build, a failure to run, a cancel while it waited
	// for its pipeline semaphore): the coordinator's single end path,
	// which calls Runner.End and then tells who listens. nil means
	// Runner.End. It has Runner.End's contract.
	End func(ctx context.Context, giveUp <-chan struct{}, p store.EndBuildsetParams) (ended bool, err error)
}

// BuildCanceler cancels one running build of a buildset.
type BuildCanceler interface {
	// CancelBuild ends the job's running attempt; it reports false when the
	// job has no attempt running.
	CancelBuild(job string) bool
}

// ErrDrained is returned by RunWith when RunOptions.Drain stopped it.
var ErrDrained = scheduler.ErrDrained

// RunWith is Run with the server's options.
func (r *Runner) RunWith(ctx context.Context, bs *store.Buildset, opt RunOptions) (store.Result, error) {
	bg := context.WithoutCancel(ctx)
	giveUp := opt.GiveUp
	if giveUp == nil {
		giveUp = ctx.Done()
	}
	end := opt.End
	if end == nil {
		end = r.End
	}
	// Once the lease is lost, the buildset is left as it is, for whoever
	// takes this owner's work over: nothing more is written of it, not
	// even its end.
	leftOver := func(err error) (store.Result, error) {
		return "", fmt.Errorf("buildset %s left for whoever takes its owner's work over: %w", bs.ID, errors.Join(r.Semaphores.Err(), err))
	}
	fail := func(err error) (store.Result, error) {
		if r.lost() || errors.Is(err, store.ErrFenced) {
			return leftOver(err)
		}
		return r.fail(bg, end, giveUp, bs, err)
	}
	// Builds must not go on holding semaphores the store may hand to
	// others: a lost lease cancels the buildset.
	ctx, cancelLost := context.WithCancelCause(ctx)
	defer cancelLost(nil) // also ends the watcher below
	go func() {
		select {
		case <-r.Semaphores.Lost():
			cancelLost(semaphore.ErrLeaseLost)
		case <-ctx.Done():
		}
	}()
	plan, spec, prio := r.Fresh.take(bs.ID)
	var err error
	if plan == nil {
		if plan, err = Plan(bs); err != nil {
			return fail(err)
		}
		if spec, err = SpecOf(bs); err != nil {
			return fail(err)
		}
	}
	drained := false
	// Whatever happens below, nothing of this buildset stays held, but
	// for a buildset left for the next process (drained) or for whoever
	// takes this owner's work over (lease lost): that one gets its
	// pipeline semaphore back before anyone else.
	defer func() {
		if drained || r.lost() {
			return
		}
		if err := r.checked(r.Store.ReleaseBuildset(bg, bs.ID, r.Semaphores.Fence())); err != nil {
			fmt.Fprintf(os.Stderr, "sortie: buildset %s: release its semaphores: %v\n", bs.ID, err)
		}
	}()
	sems := r.Semaphores.Ranked(spec.Precedence)

	if sp := spec.Semaphore; sp != nil {
		wctx := ctx
		if opt.Drain != nil {
			var stop context.CancelFunc
			wctx, stop = context.WithCancel(ctx)
			defer stop()
			go func() {
				select {
				case <-opt.Drain:
					stop()
				case <-wctx.Done():
				}
			}()
		}
		if err := sems.Wait(wctx, bs.ID, map[string]int{sp.Name: sp.Max}, bs.CreatedAt, r.poll()); err != nil {
			switch {
			case r.lost():
				return leftOver(err)
			case ctx.Err() != nil:
				if bs.State == store.BuildsetRunning {
					break // a resumed buildset is cancelled by its loop below
				}
				return r.cancelQueued(bg, end, bs)
			case wctx.Err() != nil:
				drained = true
				return "", ErrDrained
			default:
				return fail(fmt.Errorf("acquire pipeline semaphore %s: %w", sp.Name, err))
			}
		}
	}
	var resume map[string]scheduler.Prior
	if bs.State == store.BuildsetRunning {
		if resume, err = r.resume(bg, bs); err != nil {
			return fail(err)
		}
	} else {
		at := r.now()
		reports, err := spec.Deliveries(ReportStart, at)
		if err != nil {
			return fail(err)
		}
		if err := r.persist(giveUp, "buildset "+bs.ID+": start", func() error {
			return r.checked(r.Store.StartBuildset(bg, store.StartBuildsetParams{ID: bs.ID, Fence: r.Semaphores.Fence(), At: at, Reports: reports}))
		}); err != nil {
			return fail(err)
		}
		r.reported(reports)
	}
	if r.Observer != nil {
		r.Observer.BuildsetStarted(bs, plan)
	}

	jobs := map[string]scheduler.JobSpec{}
	for _, j := range plan.Jobs {
		js, ok := spec.Jobs[j.Name]
		if !ok {
			return fail(fmt.Errorf("job %s of the frozen graph has no frozen spec", j.Name))
		}
		jobs[j.Name] = scheduler.JobSpec{Semaphores: js.Semaphores, Attempts: js.Attempts}
	}
	// Read whatever the context: a cancel arriving now is the loop's to
	// apply (every build CANCELED), not a failure to read history.
	if prio == nil {
		prio = &priorities{}
		if prio.remaining, prio.fromHistory, err = r.remaining(bg, spec, plan); err != nil {
			return fail(err)
		}
	}
	remaining, fromHistory := prio.remaining, prio.fromHistory
	if o, ok := r.Observer.(EstimateObserver); ok && fromHistory {
		o.Estimated(remaining)
	}
	maxPar := spec.MaxParallel
	if r.MaxParallel > 0 {
		maxPar = r.MaxParallel
	}
	att := &attempts{r: r, spec: spec, bs: bs, secrets: secrets(spec, r.getenv), running: map[string]context.CancelFunc{}}
	if opt.Builds != nil {
		opt.Builds(att)
	}
	loop := &scheduler.Loop{
		Plan: plan, Jobs: jobs, MaxParallel: maxPar, Remaining: remaining, Buildset: bs.ID,
		Runner: att, Semaphores: sems, Recorder: &recorder{r: r, bs: bs, giveUp: giveUp}, Now: r.now, Poll: r.poll(),
		Resume: resume, Hold: opt.Hold, Drain: opt.Drain, Slots: opt.Slots,
	}
	result, runErr := loop.Run(ctx)
	if errors.Is(runErr, scheduler.ErrDrained) {
		drained = true
		return "", ErrDrained
	}
	if r.lost() {
		// Its checkout stays too: whoever adopts it resumes there.
		return leftOver(runErr)
	}
	// The deploy itself is done; a cleanup failure is worth saying, not
	// worth failing it.
	r.FinishCheckout(bg, bs.ID, runErr == nil && result == store.Success)
	// The loop has ended every build it could record; what a failed
	// recording left unfinished ends with the buildset.
	p := store.EndBuildsetParams{
		ID: bs.ID, Result: result, BuildResult: store.Error, Reason: "sortie error: the build was left unfinished",
		At: r.now(), Fence: r.fence(),
	}
	if runErr != nil {
		p.Error, p.Reason = runErr.Error(), "sortie error: "+runErr.Error()
	}
	if result == store.Canceled {
		p.BuildResult, p.Reason = store.Canceled, scheduler.ReasonBuildsetCancelled
	}
	// The end's reports come from the spec at hand: End would read the
	// buildset and decode its whole spec again for them (some 25 ms for
	// 10,000 jobs).
	if p.Reports, err = endDeliveries(spec, p); err != nil {
		return store.Error, errors.Join(runErr, fmt.Errorf("buildset %s: its reports: %w", bs.ID, err))
	}
	ended, err := end(bg, giveUp, p)
	if err == nil && !ended {
		err = fmt.Errorf("buildset %s was ended by another process meanwhile: %w", bs.ID, store.ErrConflict)
	}
	if err != nil {
		return store.Error, errors.Join(runErr, err)
	}
	return result, runErr
}

// resume reads what an interrupted run of the buildset left: the result
// of each finished build, the attempts each started, and which attempt was
// running when its process died.
func (r *Runner) resume(ctx context.Context, bs *store.Buildset) (map[string]scheduler.Prior, error) {
	builds, err := r.Store.Builds(ctx, bs.ID)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	running, err := r.Store.RunningAttempts(ctx, bs.ID)
	if err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	out := map[string]scheduler.Prior{}
	for _, b := range builds {
		p := scheduler.Prior{Attempts: b.Attempt}
		if b.State == store.BuildDone {
			p.Result = b.Result
		}
		out[b.Job] = p
	}
	for _, a := range running {
		if p, ok := out[a.Job]; ok && p.Result == "" && a.Number == p.Attempts {
			p.Running = true
			out[a.Job] = p
		}
	}
	return out, nil
}

func (r *Runner) poll() time.Duration {
	if r.Poll > 0 {
		return r.Poll
	}
	return 250 * time.Millisecond
}

// endFunc ends a buildset: Runner.End, or RunOptions.End.
type endFunc func(ctx context.Context, giveUp <-chan struct{}, p store.EndBuildsetParams) (bool, error)

// fail ends a buildset that could not run, through end: its unfinished
// builds and the buildset itself ERROR, with why.
func (r *Runner) fail(ctx context.Context, end endFunc, giveUp <-chan struct{}, bs *store.Buildset, err error) (store.Result, error) {
	// An attempt still running is a dead predecessor's (a resumed
	// buildset): this process has started none yet.
	if _, perr := end(ctx, giveUp, store.EndBuildsetParams{
		ID: bs.ID, Result: store.Error, Error: err.Error(),
		BuildResult: store.Error, AttemptResult: store.Lost, Reason: "sortie error: " + err.Error(), At: r.now(), Fence: r.fence(),
	}); errors.Is(perr, store.ErrUnavailable) {
		err = errors.Join(err, perr)
	}
	r.FinishCheckout(ctx, bs.ID, false)
	return store.Error, err
}

// persist runs write until the store takes it (store.Persist): a write
// the store refuses for now (its disk is full) is tried again until it is
// taken or giveUp is closed. The caller acts on, and reports, only what
// the store holds, so that once space is freed the store says what
// happened. It says on stderr that it waits, and when the write is taken
// after all.
func (r *Runner) persist(giveUp <-chan struct{}, what string, write func() error) error {
	return store.Persist(giveUp, r.poll(),
		func(err error) {
			fmt.Fprintf(os.Stderr, "sortie: %s: %v; waiting until it can be recorded\n", what, err)
		},
		func() { fmt.Fprintf(os.Stderr, "sortie: %s: recorded after all\n", what) },
		write)
}

// FinishCheckout marks the buildset's checkout on the bastion finished, so
// that it is removed once KeepCheckouts newer ones are (there may be none:
// that is fine). A failure is printed when say is set, else ignored: the
// buildset has ended either way, and the next Finish prunes again.
func (r *Runner) FinishCheckout(ctx context.Context, id string, say bool) {
	keep := r.KeepCheckouts
	if keep <= 0 {
		keep = DefaultKeepCheckouts
	}
	if err := r.Bastion.Finish(ctx, id, keep); err != nil && say {
		fmt.Fprintf(os.Stderr, "sortie: buildset %s: clean up checkouts: %v\n", id, err)
	}
}

// cancelQueued ends a buildset cancelled before it started, through end:
// every build CANCELED, never started.
func (r *Runner) cancelQueued(ctx context.Context, end endFunc, bs *store.Buildset) (store.Result, error) {
	ended, err := end(ctx, nil, store.EndBuildsetParams{
		ID: bs.ID, Result: store.Canceled, Error: "cancelled while waiting for its pipeline semaphore",
		BuildResult: store.Canceled, Reason: scheduler.ReasonBuildsetCancelled, At: r.now(), Fence: r.fence(),
	})
	if err == nil && !ended {
		err = fmt.Errorf("buildset %s was ended by another process meanwhile: %w", bs.ID, store.ErrConflict)
	}
	if err != nil {
		return store.Error, err
	}
	return store.Canceled, nil
}

// lost reports whether this process's lease is lost (semaphore.Client.Lost).
func (r *Runner) lost() bool {
	select {
	case <-r.Semaphores.Lost():
		return true
	default:
		return false
	}
}

// checked is err, told to the semaphore client first when the store
// refused the write as fenced: the lease is lost then.
func (r *Runner) checked(err error) error {
	if errors.Is(err, store.ErrFenced) {
		r.Semaphores.Fenced(err)
	}
	return err
}

// fence is the right to write of this process for the buildsets it runs.
func (r *Runner) fence() *store.Fence {
	f := r.Semaphores.Fence()
	return &f
}

func ptr[T any](v T) *T { return &v }

// reported tells Reported of the deliveries a state change recorded.
func (r *Runner) reported(reports []store.NewReportDelivery) {
	if len(reports) > 0 && r.Reported != nil {
		r.Reported()
	}
}

// remaining weighs each job by its history (median of recent successes),
// else its frozen weight (duration_hint), and returns the longest
// remaining path from each.
// fromHistory says whether every job has history, so that the
// longest path is an estimate of the time left, not only an order.
func (r *Runner) remaining(ctx context.Context, spec *Spec, plan *graph.Plan) (remaining map[string]time.Duration, fromHistory bool, err error) {
	names := make([]string, len(plan.Jobs))
	for i, j := range plan.Jobs {
		names[i] = j.Name
	}
	hist, err := r.Store.JobDurations(ctx, names)
	if err != nil {
		return nil, false, fmt.Errorf("job durations: %w", err)
	}
	return plan.Remaining(func(job string) time.Duration {
		if d, ok := hist[job]; ok {
			return d
		}
		return spec.Jobs[job].Weight
	}), len(hist) == len(names), nil
}

// LogPath is where an attempt's log is written: one directory per
// buildset, one file per attempt.
func (r *Runner) LogPath(buildset, job string, attempt int) string {
	return logs.Files{Dir: r.LogDir}.Path(store.LogKey{BuildsetID: buildset, Job: job, Attempt: attempt})
}

// logSink is where the build logs go: Logs, else files under LogDir.
func (r *Runner) logSink() logs.Sink {
	if r.Logs != nil {
		return r.Logs
	}
	return logs.Files{Dir: r.LogDir}
}

// secrets are the values of every secret_env of the config, redacted from
// every log.
func secrets(spec *Spec, getenv func(string) string) []string {
	var out []string
	for _, name := range spec.Secrets {
		if v := getenv(name); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// recorder writes every state change to the store before the scheduler
// acts on it, then tells the observer.
// A write the store refuses for now is waited for (Runner.persist): the
// scheduler acts on nothing that is not recorded.
type recorder struct {
	r      *Runner
	bs     *store.Buildset
	giveUp <-chan struct{}
}

// persist records a change, unless the lease is lost: then nothing more
// is written, and the scheduler is told why.
func (rc *recorder) persist(job, what string, write func() error) error {
	if rc.r.lost() {
		return rc.r.Semaphores.Err()
	}
	return rc.r.checked(rc.r.persist(rc.giveUp, fmt.Sprintf("buildset %s: build %s: %s", rc.bs.ID, job, what), write))
}

func (rc *recorder) AttemptStarted(ctx context.Context, job string, n int, at time.Time) error {
	err := rc.persist(job, "start of attempt "+strconv.Itoa(n), func() error {
		return rc.r.Store.StartAttempt(ctx, store.StartAttemptParams{
			Attempt: &store.Attempt{
				BuildsetID: rc.bs.ID, Job: job, Number: n, Owner: rc.r.Semaphores.Fence().Owner,
				StartedAt: at, Log: rc.r.logSink().Path(store.LogKey{BuildsetID: rc.bs.ID, Job: job, Attempt: n}),
			},
			Fence: rc.r.Semaphores.Fence(),
		})
	})
	if err == nil && rc.r.Observer != nil {
		rc.r.Observer.AttemptStarted(job, n, at)
	}
	return err
}

func (rc *recorder) AttemptFinished(ctx context.Context, job string, n int, res store.Result, msg string, at time.Time) error {
	return rc.persist(job, "end of attempt "+strconv.Itoa(n), func() error {
		return rc.r.Store.FinishAttempt(ctx, store.FinishAttemptParams{
			BuildsetID: rc.bs.ID, Job: job, Number: n, Result: res, Error: msg, At: at, Fence: rc.r.Semaphores.Fence(),
		})
	})
}

// BuildEnded implements scheduler.BuildEnder: the last attempt's end and
// the build's in one transaction.
func (rc *recorder) BuildEnded(ctx context.Context, job string, n int, ares store.Result, msg string, res store.Result, reason string, at time.Time) error {
	err := rc.persist(job, "end ("+string(res)+")", func() error {
		f := rc.r.Semaphores.Fence()
		return rc.r.Store.FinishAttemptAndBuild(ctx,
			store.FinishAttemptParams{BuildsetID: rc.bs.ID, Job: job, Number: n, Result: ares, Error: msg, At: at, Fence: f},
			store.FinishBuildParams{BuildsetID: rc.bs.ID, Job: job, Result: res, Reason: reason, At: at, Fence: f})
	})
	if err == nil && rc.r.Observer != nil {
		rc.r.Observer.BuildFinished(job, res, reason, at)
	}
	return err
}

func (rc *recorder) BuildFinished(ctx context.Context, job string, res store.Result, reason string, at time.Time) error {
	err := rc.persist(job, "end ("+string(res)+")", func() error {
		return rc.r.Store.FinishBuild(ctx, store.FinishBuildParams{
			BuildsetID: rc.bs.ID, Job: job, Result: res, Reason: reason, At: at, Fence: rc.r.Semaphores.Fence(),
		})
	})
	if err == nil && rc.r.Observer != nil {
		rc.r.Observer.BuildFinished(job, res, reason, at)
	}
	return err
}

// attempts runs attempts on the bastion: the scheduler's Runner.
type attempts struct {
	r       *Runner
	spec    *Spec
	bs      *store.Buildset
	secrets []string

	srcMu sync.Mutex
	src   string // the checkout, once the bootstrap job made it

	mu      sync.Mutex
	running map[string]context.CancelFunc // by job: ends its running attempt
}

// CancelBuild implements BuildCanceler.
func (a *attempts) CancelBuild(job string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	cancel, ok := a.running[job]
	if ok {
		cancel()
	}
	return ok
}

func (a *attempts) RunAttempt(ctx context.Context, name string, n int) scheduler.Outcome {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.mu.Lock()
	a.running[name] = cancel
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.running, name)
		a.mu.Unlock()
	}()
	log := a.r.logSink().Create(ctx, store.LogKey{BuildsetID: a.bs.ID, Job: name, Attempt: n}, a.secrets)
	o := a.run(ctx, name, n, log, log.Redact)
	// A log that could not be written is an error of a build that would
	// otherwise have passed: its output is lost.
	if err := log.Close(); err != nil && o == (scheduler.Outcome{}) {
		return scheduler.Outcome{Err: err}
	}
	return o
}

func (a *attempts) run(ctx context.Context, name string, n int, log io.Writer, redact func(string) string) scheduler.Outcome {
	job := a.spec.Jobs[name]

	// The bastion adds its own PATH, HOME and the like (bastion.BaseEnv).
	env := map[string]string{}
	for k, v := range job.Env {
		env[k] = v
	}
	for _, k := range job.SecretEnv {
		v := a.r.getenv(k)
		if v == "" {
			fmt.Fprintf(log, "sortie: secret_env %s is not set in sortie's environment\n", k)
			return scheduler.Outcome{Err: fmt.Errorf("secret_env %s is not set in sortie's environment", k)}
		}
		env[k] = v
	}
	env["SORTIE_BUILDSET"] = a.bs.ID
	env["SORTIE_PIPELINE"] = a.bs.Pipeline
	env["SORTIE_JOB"] = name
	env["SORTIE_COMMIT"] = a.bs.Commit
	env["SORTIE_ATTEMPT"] = strconv.Itoa(n)

	timeout := job.Timeout
	if job.Bootstrap {
		// The timeout counts from the build's start for the bootstrap job
		// too: a hung install must not hold the pipeline's semaphore
		// forever.
		start := time.Now()
		bctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if timeout > 0 {
			bctx, cancel = context.WithTimeoutCause(ctx, timeout, errBootstrapTimeout)
			defer cancel()
		}
		timedOut := func() bool { return ctx.Err() == nil && errors.Is(context.Cause(bctx), errBootstrapTimeout) }
		src, err := a.checkoutNew(bctx, log)
		if timedOut() {
			fmt.Fprintf(log, "sortie: timed out after %v preparing the bastion\n", timeout)
			return scheduler.Outcome{TimedOut: true}
		}
		if err != nil {
			return outcomeOf(ctx, err, log)
		}
		a.putPlugin(bctx, src, log)
		a.srcMu.Lock()
		a.src = src
		a.srcMu.Unlock()
		env["SORTIE_SRC"] = src
		checkedOut := time.Since(start)
		installed, err := a.r.Bastion.Install(bctx, job.Install, env, log)
		if timedOut() {
			fmt.Fprintf(log, "sortie: timed out after %v installing\n", timeout)
			return scheduler.Outcome{TimedOut: true}
		}
		if err != nil {
			if bastion.IsInfra(err) || ctx.Err() != nil {
				return outcomeOf(ctx, err, log)
			}
			fmt.Fprintf(log, "sortie: install failed: %v\n", err)
			return scheduler.Outcome{ExitCode: 1}
		}
		if o, ok := a.r.Observer.(BastionObserver); ok {
			o.BastionPrepared(name, checkedOut, len(job.Install) > 0, installed)
		}
		if job.Command == "" {
			return scheduler.Outcome{}
		}
		if timeout > 0 {
			timeout = max(timeout-time.Since(start), time.Millisecond)
		}
	}
	src, err := a.checkout(ctx, log)
	if err != nil {
		return outcomeOf(ctx, err, log)
	}
	env["SORTIE_SRC"] = src
	a.spec.Mode.Env(env)
	ansible.Env(env, ansible.PluginDir(src))
	rec := ansible.NewRecorder(a.r.Store, ansible.Target{Buildset: a.bs.ID, Job: name, Attempt: n, Fence: a.r.Semaphores.Fence()})
	rec.Redact = redact
	rec.Start(ctx)
	spec := bastion.Spec{Command: job.Command, Dir: src, Env: env, Timeout: timeout, Grace: a.r.Grace, Events: rec}
	o, err := a.r.Bastion.Run(ctx, spec, log)
	a.recorded(ctx, name, n, rec, log)
	if err != nil {
		return outcomeOf(ctx, err, log)
	}
	return scheduler.Outcome{ExitCode: o.ExitCode, TimedOut: o.TimedOut, Canceled: o.Canceled}
}

// recorded closes an attempt's Recorder: what Ansible reported is in the
// store then, and what went wrong reading it is said in the log. The
// build's result is its command's whatever happened here.
func (a *attempts) recorded(ctx context.Context, name string, n int, rec *ansible.Recorder, log io.Writer) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	out := rec.Close(ctx)
	if out.Note != "" {
		fmt.Fprintf(log, "sortie: %s\n", out.Note)
	}
	if out.Err != nil {
		fmt.Fprintf(log, "sortie: what Ansible reported per host could not be recorded: %v\n", out.Err)
	}
	if o, ok := a.r.Observer.(HostsObserver); ok && out.Recorded {
		o.HostsRecorded(name, n, out)
	}
}

// fileWriter is a Bastion that puts a file in place itself, directories
// above it included, without starting a process: the local bastion, where
// the shell of ansible.InstallCommand took four processes of every
// bootstrap.
type fileWriter interface {
	WriteFile(ctx context.Context, path string, data []byte) error
}

// putPlugin puts Sortie's Ansible callback plugin in the buildset's
// checkout on the bastion (ansible.PluginDir), where every job's
// ANSIBLE_CALLBACK_PLUGINS names it. A failure is said in the log and
// fails nothing: the jobs' results per host are not recorded then.
func (a *attempts) putPlugin(ctx context.Context, src string, log io.Writer) {
	if err := a.writePlugin(ctx, src); err != nil {
		fmt.Fprintf(log, "sortie: the Ansible callback plugin could not be put in the checkout (no results per host will be recorded): %v\n", err)
	}
}

// writePlugin puts the plugin in the checkout src: with the bastion's own
// WriteFile when it has one, else with ansible.InstallCommand's shell.
func (a *attempts) writePlugin(ctx context.Context, src string) error {
	dir := ansible.PluginDir(src)
	if fw, ok := a.r.Bastion.(fileWriter); ok {
		return fw.WriteFile(ctx, ansible.PluginPath(dir), ansible.Plugin())
	}
	var out bytes.Buffer
	o, err := a.r.Bastion.Run(ctx, bastion.Spec{Command: ansible.InstallCommand(dir), Dir: src, Grace: a.r.Grace}, &out)
	if err == nil && o.ExitCode != 0 {
		err = fmt.Errorf("exit %d: %s", o.ExitCode, bytes.TrimSpace(out.Bytes()))
	}
	return err
}

// checkoutNew asks the bastion for the buildset's checkout, from this
// process's mirror, which fetches the commit first if it lacks it (the
// buildset was made by another server).
func (a *attempts) checkoutNew(ctx context.Context, log io.Writer) (string, error) {
	if err := a.r.Mirror.Ensure(ctx, a.bs.Commit); err != nil {
		return "", err
	}
	return a.r.Bastion.Checkout(ctx, a.r.Mirror.Dir, a.bs.ID, a.bs.Commit, log)
}

// checkout is the path of the buildset's checkout. The bootstrap job made
// it; a buildset resumed by another process than the one that ran its
// bootstrap asks the bastion, which reuses the checkout it has.
func (a *attempts) checkout(ctx context.Context, log io.Writer) (string, error) {
	a.srcMu.Lock()
	defer a.srcMu.Unlock()
	if a.src != "" {
		return a.src, nil
	}
	if a.bs.State != store.BuildsetRunning {
		return "", errors.New("no checkout: the bootstrap job did not run")
	}
	src, err := a.checkoutNew(ctx, log)
	if err != nil {
		return "", err
	}
	// Made by an earlier process, maybe by an older Sortie.
	a.putPlugin(ctx, src, log)
	a.src = src
	return src, nil
}

var errBootstrapTimeout = errors.New("bootstrap timed out")

// command is the shell command of a job: run as written, or
// ansible-playbook on the playbook, in mode.
func command(j *config.Job, mode Mode) string {
	if j.Playbook == "" {
		return j.Run
	}
	cmd := "exec ansible-playbook "
	if mode.Check {
		cmd += "--check --diff "
	}
	if mode.Limit != "" {
		cmd += "--limit " + shellQuote(mode.Limit) + " "
	}
	return cmd + shellQuote(j.Playbook)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// outcomeOf classifies a bastion error, noting it in the build's log.
func outcomeOf(ctx context.Context, err error, log io.Writer) scheduler.Outcome {
	fmt.Fprintf(log, "sortie: %v\n", err)
	switch {
	case ctx.Err() != nil:
		return scheduler.Outcome{Canceled: true}
	case bastion.IsInfra(err):
		return scheduler.Outcome{Infra: err}
	}
	return scheduler.Outcome{Err: err}
}
