package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/bastion/ssh"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
)

const defaultStateDir = ".sortie"

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "--config PATH --pipeline NAME [--commit REV] [--files F ...] [--check] [--limit PATTERN] [--report FILE] [--max-parallel N] [--quiet] [--state-dir DIR] [--database URL]", stderr)
	path := fs.String("config", "", "config file, or directory of *.yaml files")
	pipeline := fs.String("pipeline", "", "pipeline to run")
	commit := fs.String("commit", "", "commit or ref to deploy (default: the head of source.branch)")
	report := fs.String("report", "", "write the buildset report (JSON) to this file")
	maxPar := fs.Int("max-parallel", 0, "builds running at once (default: limits.max_parallel)")
	stateDir := fs.String("state-dir", defaultStateDir, "where the database (SQLite), mirror, logs and local bastion live")
	dbFlag := fs.String("database", "", databaseUsage)
	check := fs.Bool("check", false, "check mode: playbooks run with --check --diff, run: jobs get SORTIE_CHECK=1; nothing should change")
	limit := fs.String("limit", "", "an Ansible host pattern: playbooks run with --limit, run: jobs get SORTIE_LIMIT")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile (pprof) of the run to this file")
	quiet := fs.Bool("quiet", false, "print only the buildset's first line, the builds that did not succeed, their log tails and the result")
	var files filesFlag
	fs.Var(&files, "files", "changed files (repeat, or separate with commas); none means every job")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *pipeline == "" {
		return usageError("run: --pipeline is required")
	}
	if *maxPar < 0 {
		return usageError("run: --max-parallel must be at least 1 (or 0: limits.max_parallel)")
	}
	db, err := database("run", *dbFlag)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return usageError("run: --cpuprofile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if _, ok := cfg.Pipelines[*pipeline]; !ok {
		_, err := planFor(cfg, *pipeline, nil)
		return usageError("%v", err)
	}
	mode := buildset.Mode{Check: *check, Limit: *limit}
	if err := mode.Allowed(*pipeline, cfg.Pipelines[*pipeline]); err != nil {
		return usageError("run: %v", err)
	}
	if cfg.Source.URL == "" {
		return usageError("run: %s: source.url is not set; say which repository to deploy", *path)
	}
	// A dead `sortie run` is not resumed, only reaped by whoever comes
	// next (coordinator.Reaper). Locally its builds are found by their
	// tag alone, to spare a record per build.
	var evFiles []string
	if files.set {
		evFiles = append([]string{}, files.files...)
	}
	ev := buildset.Event{Pipeline: *pipeline, Rev: *commit, Files: evFiles, Mode: mode, Fetched: true}
	// The mirror's fetch waits on the remote, the store's opening on the
	// disk: the fetch runs while the store opens and the coordinator
	// starts.
	abs, err := absStateDir(*stateDir)
	if err != nil {
		return err
	}
	mirror := newMirror(abs, cfg)
	fetched := goFetch(ctx, &buildset.Runner{Mirror: mirror}, cfg, ev)
	defer fetched.stop()
	// The graph and its spec need the config only: they are made on the
	// other core while the store opens (some 25 ms on 10,000 jobs). Started
	// after the fetch, which needs little of a core to start git and would
	// otherwise wait for one.
	var prep *buildset.Prepared
	prepared := goBackground(ctx, func(context.Context) error { prep = buildset.Prepare(cfg, ev); return nil })
	defer prepared.stop()
	env, err := openEnv(ctx, abs, db, cfg, coordinator.NewOwner(), false, mirror)
	if err != nil {
		return err
	}
	defer env.Close()
	env.runner.MaxParallel = *maxPar
	// The buildset made below runs at once, from the plan and spec just
	// made rather than from its stored copies decoded again.
	env.runner.Fresh = &buildset.Fresh{}
	env.sems.Precedence = cfg.Pipelines[*pipeline].Precedence.Rank()
	prog := newProgress(stdout, *quiet)
	env.runner.Observer = prog
	// The same coordinator as a server's, as a run: it registers this
	// process as an owner of kind run, runs the reaper (a dead process's
	// builds ended, its semaphores freed, a dead run's buildsets ended),
	// and decides the turn of this run's buildset as a server's managers
	// would. Its log is for trouble only; the progress is the run's.
	ver, _ := buildVersion()
	coord, err := coordinator.New(coordinator.Options{
		Kind: store.OwnerRun, Store: env.store, Runner: env.runner, StateDir: env.stateDir,
		AnyHost: !cfg.Bastion.Local(), Version: ver, Config: func() *config.Config { return cfg }, Say: stderr,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	if err := coord.Start(ctx); err != nil {
		return err
	}
	defer coord.Stop(context.WithoutCancel(ctx))

	// Pinned to this process, so that a server sharing the store does not
	// start it first.
	ev.PinnedTo = env.sems.Owner
	var bs *store.Buildset
	if err = fetched.wait(); err == nil {
		// With Sortie's mirror there, the bastion makes its own (on a
		// first run) while the buildset is made, rather than in the
		// bootstrap, which then finds it; what fails here is the
		// bootstrap's to say.
		bastionReady := goBackground(ctx, env.runner.PrepareBastion)
		_ = prepared.wait()
		bs, err = env.runner.CreatePrepared(ctx, cfg, ev, prep)
		_ = bastionReady.wait()
	}
	var missing *graph.MissingDependencyError
	switch {
	case errors.As(err, &missing):
		if werr := writeReport(ctx, env.store, bs.ID, *report); werr != nil {
			return werr
		}
		return &exitError{code: 2, msg: err.Error()}
	case err != nil:
		return sourceError("run", cfg, *commit, err)
	}
	if bs.Result == store.Skipped {
		fmt.Fprintf(stdout, "buildset %s: nothing to deploy: %s; it ends SKIPPED, and nothing was done on the bastion\n", bs.ID, bs.Error)
		return writeReport(ctx, env.store, bs.ID, *report)
	}

	prog.Start()
	// A pause set by a server on this store holds new builds here too.
	pauses := watchPauses(ctx, env.store, *pipeline, prog.Note, time.Second)
	// Its turn is decided as a server's managers decide; Ctrl-C while it
	// waits ends it CANCELED.
	result, runErr := coord.RunOwn(ctx, bs, coordinator.RunOwnOptions{Hold: pauses.Held, Say: prog.Note})
	pauses.stop()
	prog.Stop()
	// The store's log is copied into its file while the report is made
	// and written, rather than when the store closes.
	if c, ok := env.store.(checkpointer); ok {
		checkpointed := goBackground(context.WithoutCancel(ctx), c.Checkpoint)
		defer func() { _ = checkpointed.wait() }()
	}
	rep, err := buildset.MakeReport(context.WithoutCancel(ctx), env.store, bs.ID)
	if err != nil {
		return err
	}
	prog.Summary(rep)
	hosts, err := buildset.MakeHosts(context.WithoutCancel(ctx), env.store, bs.ID)
	if err != nil {
		return err
	}
	prog.Hosts(hosts)
	prog.Failures(rep, storeTail(ctx, env.store, bs.ID))
	// The buildset has ended: the report just read is the one to write,
	// not worth reading again (a thousand builds take milliseconds).
	if err := saveReport(rep, *report); err != nil {
		return err
	}
	if runErr != nil {
		fmt.Fprintf(stderr, "sortie: buildset %s: %v\n", bs.ID, runErr)
	}
	if result != store.Success {
		return exitCode(1)
	}
	return nil
}

// runEnv is what a command that runs buildsets opens on a state dir.
type runEnv struct {
	// stateDir is the state dir, absolute.
	stateDir string
	store    store.Store
	sems     *semaphore.Client
	runner   *buildset.Runner
	closers  []io.Closer
}

// openEnv opens the state dir for a process named owner. The bastion tags
// and records the builds' processes under that owner, for whoever finds
// this process dead to end them with KillOwner before taking its
// semaphores; on the local bastion, without recorded, it tags them only
// (see local.Bastion.Untracked). The store is the one db names (see
// database): <stateDir>/sortie.db when db is "". The semaphore client (the
// lease) is made but not started: a server's coordinator starts it, a
// `sortie run` once it has said what it is (Identity).
func openEnv(ctx context.Context, stateDir, db string, cfg *config.Config, owner string, recorded bool, mirror *source.Mirror) (*runEnv, error) {
	abs, err := absStateDir(stateDir)
	if err != nil {
		return nil, err
	}
	if mirror == nil {
		mirror = newMirror(abs, cfg)
	}
	st, err := openStore(ctx, db, abs)
	if err != nil {
		return nil, err
	}
	var b bastion.Bastion
	var closers []io.Closer
	if cb := cfg.Bastion; cb.Local() {
		workdir := cb.Workdir
		if workdir == "" {
			workdir = filepath.Join(abs, "bastion")
		}
		lb := local.New(workdir)
		lb.Owner, lb.Untracked = owner, !recorded
		b = lb
	} else {
		remote, err := ssh.New(ssh.Config{
			Host: cb.Host, Port: cb.Port, User: cb.User, IdentityFile: cb.IdentityFile,
			KnownHosts: cb.KnownHosts, Workdir: cb.Workdir, AgentSocket: os.Getenv("SSH_AUTH_SOCK"), Owner: owner,
		})
		if err != nil {
			st.Close()
			return nil, &exitError{code: 2, msg: fmt.Sprintf("bastion %s (%s): %v", cb.Host, cb.Pos, err)}
		}
		b = remote
		closers = append(closers, remote)
	}
	runner := &buildset.Runner{
		Store:   st,
		Mirror:  mirror,
		Bastion: b,
		LogDir:  filepath.Join(abs, "logs"),
	}
	runner.Semaphores = &semaphore.Client{Store: st, Owner: owner}
	if isPostgres(db) {
		// Several processes share this database: a log kept there is
		// read from any of them, also after its writer died.
		runner.Logs = storeLogs(st, runner.Semaphores.Fence)
	}
	return &runEnv{stateDir: abs, store: st, sems: runner.Semaphores, closers: closers, runner: runner}, nil
}

// absStateDir makes the state dir if it is missing and returns its
// absolute path.
func absStateDir(stateDir string) (string, error) {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return "", fmt.Errorf("state dir: %w", err)
	}
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		return "", fmt.Errorf("state dir: %w", err)
	}
	return abs, nil
}

// newMirror is the mirror of cfg's repository in the state dir abs,
// an absolute path (absStateDir).
func newMirror(abs string, cfg *config.Config) *source.Mirror {
	return &source.Mirror{Dir: filepath.Join(abs, "mirror.git"), URL: cfg.Source.URL}
}

// checkpointer is a store that can copy its write-ahead log into its file
// ahead of closing (sqlite.Store.Checkpoint).
type checkpointer interface {
	Checkpoint(ctx context.Context) error
}

// background is work a command has done in a goroutine of its own while
// it does other work: a mirror's fetch, the bastion's preparation.
type background struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// goBackground starts f. Its caller waits for it, or stops it, before
// returning.
func goBackground(ctx context.Context, f func(context.Context) error) *background {
	ctx, cancel := context.WithCancel(ctx)
	b := &background{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		b.err = f(ctx)
	}()
	return b
}

// goFetch starts runner.UpdateMirror for ev.
func goFetch(ctx context.Context, runner *buildset.Runner, cfg *config.Config, ev buildset.Event) *background {
	return goBackground(ctx, func(ctx context.Context) error { return runner.UpdateMirror(ctx, cfg, ev) })
}

// wait returns f's error once it has ended.
func (b *background) wait() error {
	<-b.done
	return b.err
}

// stop cancels f if it still runs and waits for it.
func (b *background) stop() {
	b.cancel()
	<-b.done
}

func (e *runEnv) Close() {
	for _, c := range e.closers {
		c.Close()
	}
	e.sems.Stop()
	e.store.Close()
}

func writeReport(ctx context.Context, st buildset.ReportSource, id, path string) error {
	if path == "" {
		return nil
	}
	rep, err := buildset.MakeReport(context.WithoutCancel(ctx), st, id)
	if err != nil {
		return err
	}
	return saveReport(rep, path)
}

// saveReport writes rep to path as JSON, replacing the file at once;
// nothing when path is "".
func saveReport(rep *buildset.Report, path string) error {
	if path == "" {
		return nil
	}
	// As json.MarshalIndent(rep, "", "  ") writes it, faster.
	data := rep.AppendIndented(nil)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return os.Rename(tmp, path)
}

func cmdHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("history", "[--state-dir DIR] [--database URL] [--pipeline NAME] [--limit N] [--json]", stderr)
	stateDir := fs.String("state-dir", defaultStateDir, "the state dir of the runs")
	dbFlag := fs.String("database", "", databaseUsage)
	pipeline := fs.String("pipeline", "", "only this pipeline")
	limit := fs.Int("limit", 20, "how many buildsets, newest first")
	asJSON := fs.Bool("json", false, "print JSON: {\"buildsets\": [report, ...]}")
	if err := parse(fs, args); err != nil {
		return err
	}
	db, err := database("history", *dbFlag)
	if err != nil {
		return err
	}
	if !isPostgres(db) {
		path := sqlitePath(db, *stateDir)
		if _, err := os.Stat(path); err != nil {
			return usageError("history: no runs in %s (no %s)", *stateDir, path)
		}
	}
	st, err := openStore(ctx, db, *stateDir)
	if err != nil {
		return err
	}
	defer st.Close()
	list, err := st.ListBuildsets(ctx, store.Filter{Pipeline: *pipeline, Limit: *limit})
	if err != nil {
		return err
	}
	reports := []*buildset.Report{}
	for _, bs := range list {
		rep, err := buildset.MakeReport(ctx, st, bs.ID)
		if err != nil {
			return err
		}
		reports = append(reports, rep)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"buildsets": reports})
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tPIPELINE\tCOMMIT\tRESULT\tDURATION\tBUILDS\tID\tMODE")
	for _, r := range reports {
		started, dur := "-", "-"
		if s := r.StartedAt.Get(); s != nil {
			started = s.Local().Format("2006-01-02 15:04:05")
			if f := r.FinishedAt.Get(); f != nil {
				dur = f.Sub(*s).Round(10 * time.Millisecond).String()
			}
		}
		builds := buildCounts(r)
		if r.Result == string(store.Skipped) && len(r.Builds) == 0 {
			builds = "nothing to deploy: " + r.Error
		}
		mode := (buildset.Mode{Check: r.Check, Limit: r.Limit}).String()
		fmt.Fprintf(tw, "%s\t%s\t%.12s\t%s\t%s\t%s\t%s\t%s\n", started, r.Pipeline, r.Commit, r.Result, dur, builds, r.ID, mode)
	}
	return tw.Flush()
}

// buildCounts summarises builds by result, e.g. "5 SUCCESS, 1 FAILURE";
// builds without a result yet count as RUNNING (an attempt started) or
// WAITING.
func buildCounts(r *buildset.Report) string {
	counts := map[string]int{}
	var order []string
	for _, b := range r.Builds {
		res := b.Result
		if res == "" || res == string(store.Retry) || res == string(store.Lost) {
			res = string(store.BuildWaiting)
			if b.Attempt > 0 {
				res = string(store.BuildRunning)
			}
		}
		if counts[res] == 0 {
			order = append(order, res)
		}
		counts[res]++
	}
	parts := make([]string, len(order))
	for i, res := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[res], res)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
