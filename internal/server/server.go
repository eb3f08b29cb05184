// Package server is `sortie serve`: a long-running process that turns
// trigger events (push webhooks, cron, polling, operators) into buildsets,
// lets the pipelines' managers decide which run (internal/pipeline), runs
// them (internal/buildset), and serves the HTTP API and metrics.
//
// Everything is in the store before it is acted on, so a server killed at
// any moment and started again goes on where it was: it ends what its dead
// predecessor left running on the bastion, releases that process's
// semaphores, retries the builds that were lost, and runs the queue on.
package server

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/flock"
	"github.com/sortie-ci/sortie/internal/pipeline"
	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger"
)

// DefaultGrace is how long a shutdown lets running builds finish before it
// cancels them.
const DefaultGrace = 5 * time.Minute

// Options configure a Server. The parts (store, bastion, ...) are made by
// the caller, which closes them after Run returns.
type Options struct {
	// ConfigPath is what Reload loads.
	ConfigPath string
	// Config is the config loaded at start.
	Config *config.Config
	// StateDir holds the server's lock, its owner file and the logs.
	StateDir string
	// Listen overrides server.listen when set; ":0" picks a port (see Addr).
	Listen string

	Store store.Store
	// Semaphores is this process's client; New sets its OnGrant to feed
	// the metrics.
	Semaphores *semaphore.Client
	Bastion    bastion.Bastion
	Mirror     *source.Mirror
	// Runner is the template of every run: its Store, Bastion, Mirror,
	// Semaphores and LogDir are set; the server copies it per buildset.
	Runner *buildset.Runner

	// Getenv reads tokens and webhook secrets; nil means os.Getenv.
	Getenv func(string) string
	// Clock drives cron and polling; nil means the system clock.
	Clock trigger.Clock
	// Log gets the server's own log; nil means slog.Default().
	Log *slog.Logger
	// Grace is how long a shutdown waits for running builds; 0 means
	// DefaultGrace.
	Grace time.Duration
	// Tick is how often the managers look at the queue even when nothing
	// woke them; 0 means one second.
	Tick time.Duration
}

// Server is a running `sortie serve`. Make it with New, then call Run.
type Server struct {
	opt Options
	log *slog.Logger
	st  store.Store
	// reads is st as the read paths (API, pages, logs) see it: they
	// decide nothing and write nothing.
	reads reader
	owner string

	reloadMu  sync.Mutex
	cfgMu     sync.RWMutex
	cfg       *config.Config
	loadedAt  time.Time
	reloadErr *ReloadError

	tokens atomic.Pointer[tokenSet]
	pauses atomic.Pointer[map[string]store.Pause]

	kick  chan struct{}
	drain chan struct{}
	ready atomic.Bool
	// draining is set once a shutdown has begun: no new buildset is made.
	draining atomic.Bool

	runsMu sync.Mutex
	runs   map[string]*run
	runsWG sync.WaitGroup
	// runCtx is the parent of every run; cancelled when the grace runs out.
	runCtx    context.Context
	cancelRun context.CancelCauseFunc

	trigMu     sync.Mutex
	trigCancel context.CancelFunc
	trigWG     sync.WaitGroup

	// lastPlan is the managers' latest decision, for the API.
	planMu   sync.Mutex
	lastPlan pipeline.Plan

	metrics *metrics
	// slots are the executor's build slots, limits.max_parallel, shared by
	// every buildset this server runs (SPEC §1: builds at once on this
	// executor); a reload resizes them.
	slots *scheduler.Pool
	ui    http.Handler
	addr  atomic.Value // string
	lock  *os.File
}

// reader is what the read paths of the server read from the store.
type reader interface {
	GetBuildset(ctx context.Context, id string) (*store.Buildset, error)
	ListBuildsets(ctx context.Context, f store.Filter) ([]*store.Buildset, error)
	ActiveBuildsets(ctx context.Context) ([]*store.Buildset, error)
	Builds(ctx context.Context, buildsetID string) ([]*store.Build, error)
	Attempts(ctx context.Context, buildsetID, job string) ([]*store.Attempt, error)
	JobDurations(ctx context.Context, jobs []string) (map[string]time.Duration, error)
	Holders(ctx context.Context) ([]store.Holder, error)
	Waiters(ctx context.Context) ([]store.Waiter, error)
	ExpiredOwners(ctx context.Context, now time.Time) ([]string, error)
}

// run is one buildset this process runs.
type run struct {
	bs     *store.Buildset
	cancel context.CancelCauseFunc
	builds atomic.Value // buildset.BuildCanceler
}

// ReloadError is why the last reload was refused.
type ReloadError struct {
	At     time.Time `json:"at"`
	Errors []string  `json:"errors"`
}

func (e *ReloadError) Error() string { return strings.Join(e.Errors, "\n") }

// New checks the options and makes a server.
func New(opt Options) (*Server, error) {
	if opt.Config == nil || opt.Store == nil || opt.Semaphores == nil || opt.Bastion == nil || opt.Mirror == nil || opt.Runner == nil {
		return nil, errors.New("server: Config, Store, Semaphores, Bastion, Mirror and Runner are required")
	}
	if opt.Getenv == nil {
		opt.Getenv = os.Getenv
	}
	if opt.Clock == nil {
		opt.Clock = trigger.SystemClock()
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Grace <= 0 {
		opt.Grace = DefaultGrace
	}
	if opt.Tick <= 0 {
		opt.Tick = time.Second
	}
	s := &Server{
		opt: opt, log: opt.Log, st: opt.Store, reads: opt.Store, owner: opt.Semaphores.Owner,
		cfg: opt.Config, loadedAt: time.Now().UTC(),
		kick: make(chan struct{}, 1), drain: make(chan struct{}),
		runs: map[string]*run{}, metrics: newMetrics(), slots: scheduler.NewPool(opt.Config.Limits.MaxParallel),
	}
	opt.Semaphores.OnGrant = s.metrics.granted
	s.tokens.Store(readTokens(opt.Config, opt.Getenv))
	empty := map[string]store.Pause{}
	s.pauses.Store(&empty)
	return s, nil
}

// SetUI mounts the web pages at /; call it before Run.
func (s *Server) SetUI(h http.Handler) { s.ui = h }

// Config returns the config in force.
func (s *Server) Config() *config.Config {
	s.cfgMu.RLock()
	defer s.cfgMu.RUnlock()
	return s.cfg
}

// Addr is the address the API listens on, once Run has started listening.
func (s *Server) Addr() string {
	a, _ := s.addr.Load().(string)
	return a
}

// Run takes the state dir's lock, recovers what a dead predecessor left,
// serves until ctx is done, then shuts down in two steps: it stops taking
// work and lets running builds finish within the grace period, then
// cancels them; it always waits for them. It returns nil after a shutdown
// asked by ctx.
func (s *Server) Run(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	lock, err := flock.Lock(lctx, filepath.Join(s.opt.StateDir, "serve.lock"))
	cancel()
	if err != nil {
		return fmt.Errorf("another sortie serve holds %s: %w", s.opt.StateDir, err)
	}
	s.lock = lock
	defer lock.Close()

	listen := s.opt.Listen
	if listen == "" {
		listen = s.Config().Server.Listen
	}
	if listen == "" {
		listen = "127.0.0.1:8080"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.addr.Store(ln.Addr().String())
	httpSrv := newHTTPServer(s.Handler(), DefaultTimeouts())
	httpDone := make(chan error, 1)
	go func() { httpDone <- httpSrv.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "owner", s.owner)

	s.runCtx, s.cancelRun = context.WithCancelCause(context.WithoutCancel(ctx))
	// A state dir that is full makes recovery wait (not ready) rather
	// than exit: once space is freed it goes on.
	err = store.Persist(ctx.Done(), time.Second,
		func(err error) { s.log.Error("recovery waits until the state can be written", "err", err) },
		func() { s.log.Info("the state can be written again: recovery goes on") },
		func() error { return s.recover(ctx) })
	if err != nil {
		httpSrv.Close()
		<-httpDone
		return fmt.Errorf("recover: %w", err)
	}
	if err := s.loadPauses(ctx); err != nil {
		httpSrv.Close()
		<-httpDone
		return err
	}
	s.reloadMu.Lock() // a reload restarts the triggers only once they run
	s.startTriggers(s.Config())
	s.ready.Store(true)
	s.reloadMu.Unlock()
	dispatchDone := make(chan struct{})
	dctx, stopDispatch := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(dispatchDone)
		s.dispatch(dctx)
	}()
	s.log.Info("ready")

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-httpDone:
	}

	// Shutdown, step one: take no more work, let running builds finish.
	s.reloadMu.Lock()
	s.draining.Store(true)
	s.ready.Store(false)
	s.stopTriggers()
	s.reloadMu.Unlock()
	s.log.Info("shutting down: no new builds start; waiting for running ones", "grace", s.opt.Grace)
	stopDispatch()
	<-dispatchDone
	close(s.drain)
	waited := make(chan struct{})
	go func() {
		s.runsWG.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-time.After(s.opt.Grace):
		// Step two: cancel what still runs, and wait for it.
		s.log.Warn("grace period over: cancelling running builds")
		s.cancelRun(errShutdown)
		<-waited
	}
	sctx, cancelShut := context.WithTimeout(context.Background(), 5*time.Second)
	httpSrv.Shutdown(sctx)
	cancelShut()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	s.log.Info("stopped")
	return nil
}

var errShutdown = errors.New("sortie serve shut down")

// ownersFile lists the owner ids of server processes on this state dir
// whose leftovers may not be recovered yet: the current one, and any that
// died before their successor finished recovering them.
func (s *Server) ownersFile() string { return filepath.Join(s.opt.StateDir, "serve.owners") }

func readOwners(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if o := strings.TrimSpace(sc.Text()); o != "" {
			out = append(out, o)
		}
	}
	return out, sc.Err()
}

func writeOwners(path string, owners []string) error {
	err := writeOwnersFile(path, owners)
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

func writeOwnersFile(path string, owners []string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	for _, o := range owners {
		fmt.Fprintln(f, o)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// recover takes over what earlier server processes on this state dir left.
// Holding the state dir's lock proves they are dead. In order, each step
// safe to repeat if this process dies too: note this process as one to
// recover (so a crash during recovery loses nothing), end their process
// trees on the bastion, release their semaphores, adopt their buildsets
// and run them on, then forget them.
func (s *Server) recover(ctx context.Context) error {
	dead, err := readOwners(s.ownersFile())
	if err != nil {
		return err
	}
	dead = slices.DeleteFunc(dead, func(o string) bool { return o == s.owner })
	if err := writeOwners(s.ownersFile(), append(slices.Clone(dead), s.owner)); err != nil {
		return err
	}
	isDead := map[string]bool{}
	for _, o := range dead {
		isDead[o] = true
		s.log.Info("recovering after an earlier server process", "owner", o)
		if err := s.opt.Bastion.KillOwner(ctx, o, s.opt.Runner.Grace); err != nil {
			return fmt.Errorf("end the builds of %s: %w", o, err)
		}
		if err := semaphore.ReleaseDead(ctx, s.st, o); err != nil {
			return err
		}
	}
	active, err := s.st.ActiveBuildsets(ctx)
	if err != nil {
		return err
	}
	// Adopt them all before launching any: a running one's pipeline
	// semaphore, kept for it by ReleaseDead, moves to this process with
	// it, and the running ones are launched first (they hold what they
	// need; the admitted ones wait behind them).
	var adopted []*store.Buildset
	for _, bs := range active {
		if bs.State == store.BuildsetQueued || !isDead[bs.Owner] {
			continue
		}
		if err := s.st.SetBuildsetOwner(ctx, bs.ID, s.owner); err != nil {
			return err
		}
		bs.Owner = s.owner
		adopted = append(adopted, bs)
	}
	slices.SortStableFunc(adopted, func(a, b *store.Buildset) int {
		return cmp.Compare(stateOrder(a.State), stateOrder(b.State))
	})
	for _, bs := range adopted {
		s.log.Info("resuming buildset", "buildset", bs.ID, "pipeline", bs.Pipeline, "state", bs.State)
		s.launch(bs)
	}
	return writeOwners(s.ownersFile(), []string{s.owner})
}

// stateOrder puts running buildsets before admitted ones.
func stateOrder(st store.BuildsetState) int {
	if st == store.BuildsetRunning {
		return 0
	}
	return 1
}

func (s *Server) loadPauses(ctx context.Context) error {
	list, err := s.st.Pauses(ctx)
	if err != nil {
		return err
	}
	m := map[string]store.Pause{}
	for _, p := range list {
		m[p.Pipeline] = p
	}
	s.pauses.Store(&m)
	return nil
}

// paused returns the pause of a pipeline (or of all), nil if it runs.
func (s *Server) paused(pipeline string) *store.Pause {
	m := *s.pauses.Load()
	if p, ok := m[""]; ok {
		return &p
	}
	if p, ok := m[pipeline]; ok {
		return &p
	}
	return nil
}

// wake asks the managers to look at the queue now.
func (s *Server) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// launch runs a buildset in a goroutine the server owns.
func (s *Server) launch(bs *store.Buildset) {
	s.runsMu.Lock()
	if _, ok := s.runs[bs.ID]; ok {
		s.runsMu.Unlock()
		return
	}
	ctx, cancel := context.WithCancelCause(s.runCtx)
	r := &run{bs: bs, cancel: cancel}
	s.runs[bs.ID] = r
	s.runsWG.Add(1)
	s.runsMu.Unlock()

	runner := *s.opt.Runner
	obs := s.metrics.observer(bs)
	runner.Observer = obs
	go func() {
		defer s.runsWG.Done()
		defer cancel(nil)
		defer obs.done()
		result, err := runner.RunWith(ctx, bs, buildset.RunOptions{
			Hold:   func() bool { return s.paused(bs.Pipeline) != nil },
			Drain:  s.drain,
			Builds: func(b buildset.BuildCanceler) { r.builds.Store(b) },
			Slots:  s.slots,
			// A write the store refuses (a full disk) is waited for until
			// the server goes down for good, an operator's cancel included.
			GiveUp: s.runCtx.Done(),
		})
		s.runsMu.Lock()
		delete(s.runs, bs.ID)
		s.runsMu.Unlock()
		switch {
		case errors.Is(err, buildset.ErrDrained):
			s.log.Info("buildset left for the next start", "buildset", bs.ID)
			return
		case errors.Is(err, store.ErrUnavailable):
			// Its end is not in the store: say nothing of a result the
			// store does not have. The next start resumes it.
			s.log.Error("buildset left unfinished in the store, which cannot be written; the next start resumes it", "buildset", bs.ID, "err", err)
			return
		case err != nil:
			s.log.Error("buildset ended", "buildset", bs.ID, "pipeline", bs.Pipeline, "result", result, "err", err)
		default:
			s.log.Info("buildset ended", "buildset", bs.ID, "pipeline", bs.Pipeline, "result", result)
		}
		s.metrics.buildsetDone(bs.Pipeline, result)
		s.wake()
	}()
}

// cancelBuildset cancels a buildset: a running one through its context, a
// queued one at once. It returns store.ErrNotFound or store.ErrConflict
// (already finished).
func (s *Server) cancelBuildset(ctx context.Context, id, by string) error {
	// The store first: a run whose end is recorded may not have left the
	// list of runs yet, and a finished buildset cannot be cancelled.
	bs, err := s.st.GetBuildset(ctx, id)
	if err != nil {
		return err
	}
	if bs.State == store.BuildsetDone {
		return store.ErrConflict
	}
	s.runsMu.Lock()
	r := s.runs[id]
	s.runsMu.Unlock()
	if r != nil {
		s.log.Info("cancel", "buildset", id, "by", by)
		r.cancel(scheduler.ErrCanceled)
		return nil
	}
	if bs.State != store.BuildsetQueued {
		// Admitted or running but not by this process (another server
		// on the same database, or one being recovered).
		return fmt.Errorf("buildset %s is run by %s: %w", id, bs.Owner, store.ErrConflict)
	}
	s.log.Info("cancel", "buildset", id, "by", by)
	err = s.finishQueued(ctx, id, store.Canceled, scheduler.ReasonBuildsetCancelled, "cancelled by "+by+" while queued")
	s.wake()
	return err
}

// cancelBuild cancels the running attempt of one build.
func (s *Server) cancelBuild(id, job string) bool {
	s.runsMu.Lock()
	r := s.runs[id]
	s.runsMu.Unlock()
	if r == nil {
		return false
	}
	b, _ := r.builds.Load().(buildset.BuildCanceler)
	return b != nil && b.CancelBuild(job)
}

// finishQueued ends a buildset that never started: every build gets
// result with reason, and the buildset result with errMsg ("": reason). A
// buildset that ended meanwhile is a store.ErrConflict.
func (s *Server) finishQueued(ctx context.Context, id string, result store.Result, reason, errMsg string) error {
	ended, err := s.opt.Runner.End(ctx, nil, store.EndBuildsetParams{
		ID: id, Result: result, Error: cmp.Or(errMsg, reason), BuildResult: result, Reason: reason, At: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	if !ended {
		return fmt.Errorf("buildset %s has ended already: %w", id, store.ErrConflict)
	}
	if bs, err := s.st.GetBuildset(ctx, id); err == nil {
		s.metrics.buildsetDone(bs.Pipeline, result)
	}
	return nil
}
