// Package buildset makes and runs buildsets: it resolves the commit and
// freezes the job graph into the store (Create), then runs the graph with
// the scheduler on a bastion, recording every state change before acting
// on it (Run). `sortie run` and `sortie serve` both drive buildsets here.
package buildset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

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

// Runner makes and runs buildsets. Its fields are set before use.
type Runner struct {
	Store      store.Store
	Bastion    bastion.Bastion
	Mirror     *source.Mirror
	Semaphores *semaphore.Client
	// LogDir holds the build logs: <LogDir>/<buildset>/<job>.<attempt>.log.
	LogDir string
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
}

// Create resolves the commit and freezes the graph into a QUEUED buildset.
// A buildset error of SPEC §2.2 (a hard dependency the pipeline does not
// run) still makes a buildset, DONE with CONFIG_ERROR, its message in Error
// and no builds; Create then returns it with an error wrapping
// *graph.MissingDependencyError. An unknown pipeline or commit makes
// nothing.
func (r *Runner) Create(ctx context.Context, cfg *config.Config, ev Event) (*store.Buildset, error) {
	if _, ok := cfg.Pipelines[ev.Pipeline]; !ok {
		return nil, &graph.UnknownPipelineError{Pipeline: ev.Pipeline}
	}
	if err := r.Mirror.Update(ctx); err != nil {
		return nil, fmt.Errorf("create buildset: %w", err)
	}
	rev := ev.Rev
	if rev == "" {
		rev = cfg.Source.Branch
	}
	commit, err := r.Mirror.Resolve(ctx, rev)
	if err != nil {
		return nil, fmt.Errorf("create buildset: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("create buildset: %w", err)
	}
	bs := &store.Buildset{
		ID: id.String(), Pipeline: ev.Pipeline, Commit: commit, Files: ev.Files,
		State: store.BuildsetQueued, CreatedAt: r.now(),
	}
	plan, planErr := graph.Select(cfg, ev.Pipeline, ev.Files)
	var jobs []string
	if planErr == nil {
		if bs.Plan, err = json.Marshal(plan); err != nil {
			return nil, fmt.Errorf("create buildset: %w", err)
		}
		for _, j := range plan.Jobs {
			jobs = append(jobs, j.Name)
		}
	} else {
		bs.Plan = []byte("null")
	}
	if err := r.Store.CreateBuildset(ctx, bs, jobs); err != nil {
		return nil, fmt.Errorf("create buildset: %w", err)
	}
	if planErr != nil {
		if err := r.Store.FinishBuildset(ctx, bs.ID, store.ConfigError, planErr.Error(), r.now()); err != nil {
			return nil, fmt.Errorf("create buildset: %w", err)
		}
		bs.State, bs.Result, bs.Error = store.BuildsetDone, store.ConfigError, planErr.Error()
		return bs, fmt.Errorf("buildset %s: %w", bs.ID, planErr)
	}
	return bs, nil
}

// Run runs a QUEUED buildset to its end and returns its result. It waits
// for the pipeline semaphore first, holds it until the last build ends,
// and releases every semaphore of the buildset whatever happens. Cancel
// ctx (with scheduler.ErrCanceled as cause, or any other) to cancel it.
func (r *Runner) Run(ctx context.Context, cfg *config.Config, bs *store.Buildset) (store.Result, error) {
	bg := context.WithoutCancel(ctx)
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
	plan, err := Plan(bs)
	if err != nil {
		r.Store.FinishBuildset(bg, bs.ID, store.Error, err.Error(), r.now())
		return store.Error, err
	}
	// Whatever happens below, nothing of this buildset stays held.
	defer r.Store.ReleaseBuildset(bg, bs.ID)

	pl := cfg.Pipelines[bs.Pipeline]
	if pl != nil && pl.Semaphore.Name != "" {
		sems := map[string]int{pl.Semaphore.Name: cfg.Semaphores[pl.Semaphore.Name].Max}
		if err := r.Semaphores.Wait(ctx, bs.ID, sems, r.poll()); err != nil {
			if ctx.Err() != nil {
				return r.cancelQueued(bg, bs, plan)
			}
			return r.fail(bg, bs, fmt.Errorf("acquire pipeline semaphore %s: %w", pl.Semaphore.Name, err))
		}
	}
	if err := r.Store.StartBuildset(bg, bs.ID, r.Semaphores.Owner, r.now()); err != nil {
		return r.fail(bg, bs, err)
	}
	if r.Observer != nil {
		r.Observer.BuildsetStarted(bs, plan)
	}

	specs := map[string]scheduler.JobSpec{}
	for _, j := range plan.Jobs {
		job := cfg.Jobs[j.Name]
		if job == nil {
			return r.fail(bg, bs, fmt.Errorf("job %s of the frozen graph is not in the config", j.Name))
		}
		sems := map[string]int{}
		for _, s := range job.Semaphores {
			sems[s.Name] = cfg.Semaphores[s.Name].Max
		}
		specs[j.Name] = scheduler.JobSpec{Semaphores: sems, Attempts: job.Attempts}
	}
	remaining, err := r.remaining(ctx, cfg, plan)
	if err != nil {
		return r.fail(bg, bs, err)
	}
	maxPar := cfg.Limits.MaxParallel
	if r.MaxParallel > 0 {
		maxPar = r.MaxParallel
	}
	att := &attempts{r: r, cfg: cfg, bs: bs, secrets: secrets(cfg, r.getenv)}
	loop := &scheduler.Loop{
		Plan: plan, Jobs: specs, MaxParallel: maxPar, Remaining: remaining, Buildset: bs.ID,
		Runner: att, Semaphores: r.Semaphores, Recorder: &recorder{r: r, bs: bs}, Now: r.now, Poll: r.poll(),
	}
	result, runErr := loop.Run(ctx)
	keep := r.KeepCheckouts
	if keep <= 0 {
		keep = DefaultKeepCheckouts
	}
	if err := r.Bastion.Finish(bg, bs.ID, keep); err != nil && runErr == nil && result == store.Success {
		// The deploy itself is done; a cleanup failure is worth saying, not
		// worth failing it.
		fmt.Fprintf(os.Stderr, "sortie: buildset %s: clean up checkouts: %v\n", bs.ID, err)
	}
	msg := ""
	if runErr != nil {
		msg = runErr.Error()
	}
	if err := r.Store.FinishBuildset(bg, bs.ID, result, msg, r.now()); err != nil {
		return store.Error, errors.Join(runErr, err)
	}
	return result, runErr
}

func (r *Runner) poll() time.Duration {
	if r.Poll > 0 {
		return r.Poll
	}
	return 250 * time.Millisecond
}

func (r *Runner) fail(ctx context.Context, bs *store.Buildset, err error) (store.Result, error) {
	r.Store.FinishBuildset(ctx, bs.ID, store.Error, err.Error(), r.now())
	return store.Error, err
}

// cancelQueued ends a buildset cancelled before it started: every build
// CANCELED, never started.
func (r *Runner) cancelQueued(ctx context.Context, bs *store.Buildset, plan *graph.Plan) (store.Result, error) {
	for _, j := range plan.Jobs {
		r.Store.FinishBuild(ctx, bs.ID, j.Name, store.Canceled, "buildset cancelled while queued", r.now())
	}
	if err := r.Store.FinishBuildset(ctx, bs.ID, store.Canceled, "", r.now()); err != nil {
		return store.Error, err
	}
	return store.Canceled, nil
}

// remaining weighs each job by its history (median of recent successes),
// else its duration_hint, else equally, and returns the longest remaining
// path from each.
func (r *Runner) remaining(ctx context.Context, cfg *config.Config, plan *graph.Plan) (map[string]time.Duration, error) {
	names := make([]string, len(plan.Jobs))
	for i, j := range plan.Jobs {
		names[i] = j.Name
	}
	hist, err := r.Store.JobDurations(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("job durations: %w", err)
	}
	hint := graph.HintWeights(cfg, plan)
	return plan.Remaining(func(job string) time.Duration {
		if d, ok := hist[job]; ok {
			return d
		}
		return hint(job)
	}), nil
}

// LogPath is where an attempt's log is written: one directory per
// buildset, one file per attempt.
func (r *Runner) LogPath(buildset, job string, attempt int) string {
	return filepath.Join(r.LogDir, buildset, job+"."+strconv.Itoa(attempt)+".log")
}

// secrets are the values of every secret_env of the config, redacted from
// every log.
func secrets(cfg *config.Config, getenv func(string) string) []string {
	var out []string
	for _, j := range cfg.Jobs {
		for _, name := range j.SecretEnv {
			if v := getenv(name); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// recorder writes every state change to the store before the scheduler
// acts on it, then tells the observer.
type recorder struct {
	r  *Runner
	bs *store.Buildset
}

func (rc *recorder) AttemptStarted(ctx context.Context, job string, n int, at time.Time) error {
	err := rc.r.Store.StartAttempt(ctx, &store.Attempt{
		BuildsetID: rc.bs.ID, Job: job, Number: n, Owner: rc.r.Semaphores.Owner,
		StartedAt: at, Log: rc.r.LogPath(rc.bs.ID, job, n),
	})
	if err == nil && rc.r.Observer != nil {
		rc.r.Observer.AttemptStarted(job, n, at)
	}
	return err
}

func (rc *recorder) AttemptFinished(ctx context.Context, job string, n int, res store.Result, msg string, at time.Time) error {
	return rc.r.Store.FinishAttempt(ctx, rc.bs.ID, job, n, res, msg, at)
}

func (rc *recorder) BuildFinished(ctx context.Context, job string, res store.Result, reason string, at time.Time) error {
	err := rc.r.Store.FinishBuild(ctx, rc.bs.ID, job, res, reason, at)
	if err == nil && rc.r.Observer != nil {
		rc.r.Observer.BuildFinished(job, res, reason, at)
	}
	return err
}

// attempts runs attempts on the bastion: the scheduler's Runner.
type attempts struct {
	r       *Runner
	cfg     *config.Config
	bs      *store.Buildset
	secrets []string

	mu  sync.Mutex
	src string // the checkout, once the bootstrap job made it
}

func (a *attempts) RunAttempt(ctx context.Context, name string, n int) scheduler.Outcome {
	log := logs.Create(a.r.LogPath(a.bs.ID, name, n), a.secrets)
	o := a.run(ctx, name, n, log)
	// A log that could not be written is an error of a build that would
	// otherwise have passed: its output is lost.
	if err := log.Close(); err != nil && o == (scheduler.Outcome{}) {
		return scheduler.Outcome{Err: err}
	}
	return o
}

func (a *attempts) run(ctx context.Context, name string, n int, log io.Writer) scheduler.Outcome {
	job := a.cfg.Jobs[name]

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
		src, err := a.r.Bastion.Checkout(bctx, a.r.Mirror.Dir, a.bs.ID, a.bs.Commit, log)
		if timedOut() {
			fmt.Fprintf(log, "sortie: timed out after %v preparing the bastion\n", timeout)
			return scheduler.Outcome{TimedOut: true}
		}
		if err != nil {
			return outcomeOf(ctx, err, log)
		}
		a.mu.Lock()
		a.src = src
		a.mu.Unlock()
		env["SORTIE_SRC"] = src
		_, err = a.r.Bastion.Install(bctx, job.Install, env, log)
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
		if job.Run == "" && job.Playbook == "" {
			return scheduler.Outcome{}
		}
		if timeout > 0 {
			timeout = max(timeout-time.Since(start), time.Millisecond)
		}
	}
	a.mu.Lock()
	src := a.src
	a.mu.Unlock()
	if src == "" {
		return scheduler.Outcome{Err: errors.New("no checkout: the bootstrap job did not run")}
	}
	env["SORTIE_SRC"] = src
	spec := bastion.Spec{Command: command(job), Dir: src, Env: env, Timeout: timeout, Grace: a.r.Grace}
	o, err := a.r.Bastion.Run(ctx, spec, log)
	if err != nil {
		return outcomeOf(ctx, err, log)
	}
	return scheduler.Outcome{ExitCode: o.ExitCode, TimedOut: o.TimedOut, Canceled: o.Canceled}
}

var errBootstrapTimeout = errors.New("bootstrap timed out")

// command is the shell command of a job: run as written, or
// ansible-playbook on the playbook.
func command(j *config.Job) string {
	if j.Playbook != "" {
		return "exec ansible-playbook " + shellQuote(j.Playbook)
	}
	return j.Run
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
