// Package server is `sortie serve`'s HTTP side: the API, its
// authentication, live logs (SSE), webhooks in (verified here), metrics
// and the data of the web pages. What runs when is decided by
// internal/coordinator, which a Server makes, starts and stops, and calls
// for every effect (a trigger, a push, a cancel, a pause); the server
// decides nothing.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/flock"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger"
)

// DefaultGrace is how long a shutdown lets running builds finish before it
// cancels them.
const DefaultGrace = coordinator.DefaultGrace

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
	// Node names this server among those sharing the store; "" means the
	// host name. Version is recorded with it.
	Node, Version string

	Store store.Store
	// Semaphores is this process's client, not started: the coordinator
	// starts it once the state dir is locked, and stops it. New sets its
	// OnGrant to feed the metrics.
	Semaphores *semaphore.Client
	Bastion    bastion.Bastion
	Mirror     *source.Mirror
	// Runner is the template of every run: its Store, Bastion, Mirror,
	// Semaphores and LogDir are set; the coordinator copies it per
	// buildset.
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
	// LeaderTTL and LeaderRetry are the coordinator's (0: its defaults):
	// how long a leader's term lasts unrenewed, how often a follower asks
	// to lead. Tests shorten them.
	LeaderTTL, LeaderRetry time.Duration
	// Notices, when set, wakes the claims of buildsets when another
	// server sharing the store admits one or releases a dead one's (a
	// PostgreSQL store's notifications); see coordinator.Options.
	Notices coordinator.Notices
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
	// coord decides what runs when; the API calls it for every effect.
	coord *coordinator.Coordinator

	reloadMu  sync.Mutex
	cfgMu     sync.RWMutex
	cfg       *config.Config
	loadedAt  time.Time
	reloadErr *ReloadError

	tokens atomic.Pointer[tokenSet]

	ready   atomic.Bool
	metrics *metrics
	ui      http.Handler
	addr    atomic.Value // string
	lock    *os.File
}

// reader is what the read paths of the server read from the store.
type reader interface {
	GetBuildset(ctx context.Context, id string) (*store.Buildset, error)
	GetBuildsetLight(ctx context.Context, id string) (*store.Buildset, error)
	ListBuildsets(ctx context.Context, f store.Filter) ([]*store.Buildset, error)
	// ChangedBuildsets from a zero cursor: the active buildsets, without
	// their plans and specs, which the pages of queues do not show.
	ChangedBuildsets(ctx context.Context, since store.BuildsetCursor) (*store.BuildsetChanges, error)
	Builds(ctx context.Context, buildsetID string) ([]*store.Build, error)
	Build(ctx context.Context, buildsetID, job string) (*store.Build, error)
	Attempts(ctx context.Context, buildsetID, job string) ([]*store.Attempt, error)
	JobDurations(ctx context.Context, jobs []string) (map[string]time.Duration, error)
	Holders(ctx context.Context) ([]store.Holder, error)
	Waiters(ctx context.Context) ([]store.Waiter, error)
	Owners(ctx context.Context, f store.OwnerFilter) ([]store.Owner, error)
	Leader(ctx context.Context) (*store.Term, error)
	ReportDeliveries(ctx context.Context, buildsetID string) ([]*store.ReportDelivery, error)
	// Logs kept in the store (logs.Open reads files by their path).
	logs.ChunkReader
	BuildHosts(ctx context.Context, buildsetID, job string) (*store.BuildHosts, error)
	BuildsetHosts(ctx context.Context, buildsetID string) ([]*store.BuildHosts, error)
}

// ReloadError is why the last reload was refused.
type ReloadError struct {
	At     time.Time `json:"at"`
	Errors []string  `json:"errors"`
}

func (e *ReloadError) Error() string { return strings.Join(e.Errors, "\n") }

// New checks the options and makes a server, and its coordinator.
func New(opt Options) (*Server, error) {
	if opt.Config == nil || opt.Store == nil || opt.Semaphores == nil || opt.Bastion == nil || opt.Mirror == nil || opt.Runner == nil {
		return nil, errors.New("server: Config, Store, Semaphores, Bastion, Mirror and Runner are required")
	}
	if opt.Getenv == nil {
		opt.Getenv = os.Getenv
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	s := &Server{
		opt: opt, log: opt.Log, st: opt.Store, reads: opt.Store, owner: opt.Semaphores.Owner,
		cfg: opt.Config, loadedAt: time.Now().UTC(), metrics: newMetrics(),
	}
	reports, err := s.newReportWorker()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.metrics.reg.MustRegister(newOutboxCollector(opt.Store))
	coord, err := coordinator.New(coordinator.Options{
		Store: opt.Store, Runner: opt.Runner, StateDir: opt.StateDir, Config: s.Config, Node: opt.Node, Version: opt.Version,
		Clock: opt.Clock, Log: opt.Log, Grace: opt.Grace, Tick: opt.Tick, AnyHost: !opt.Config.Bastion.Local(),
		LeaderTTL: opt.LeaderTTL, LeaderRetry: opt.LeaderRetry, Notices: opt.Notices,
		Observer: coordObserver{m: s.metrics, st: opt.Store}, Reports: reports,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.coord = coord
	s.metrics.reg.MustRegister(newNodesCollector(s))
	opt.Semaphores.OnGrant = s.metrics.granted
	s.tokens.Store(readTokens(opt.Config, opt.Getenv))
	return s, nil
}

// Coordinator is the server's coordinator: what decides what runs when.
func (s *Server) Coordinator() *coordinator.Coordinator { return s.coord }

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

// Run takes the state dir's lock, starts the coordinator (which recovers
// what a dead predecessor left), serves until ctx is done, then stops the
// coordinator, which shuts down in two steps: it stops taking work and
// lets running builds finish within the grace period, then cancels them;
// it always waits for them. It returns nil after a shutdown asked by ctx.
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

	// Subscribed before the coordinator starts: the ends of its recovery
	// and first reaping are counted too.
	stopCounting := s.countEnds()
	defer stopCounting()
	// A state dir that is full makes the start wait (not ready) rather
	// than exit: once space is freed it goes on.
	if err := s.coord.Start(ctx); err != nil {
		httpSrv.Close()
		<-httpDone
		return err
	}
	s.ready.Store(true)
	s.log.Info("ready")

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-httpDone:
	}

	s.ready.Store(false)
	s.coord.Stop(context.WithoutCancel(ctx))
	sctx, cancelShut := context.WithTimeout(context.Background(), 5*time.Second)
	httpSrv.Shutdown(sctx)
	cancelShut()
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	s.log.Info("stopped")
	return nil
}

// countEnds counts every buildset end the coordinator publishes in the
// metrics, from a goroutine of its own, until the function it returns is
// called; that function waits for the goroutine, then counts what is left.
func (s *Server) countEnds() (stop func()) {
	sub := s.coord.Ended()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := sub.Next(ctx)
			if err != nil {
				return
			}
			s.metrics.buildsetDone(ev.Pipeline, ev.Result)
		}
	}()
	return func() {
		cancel()
		<-done
		for _, ev := range sub.Take() {
			s.metrics.buildsetDone(ev.Pipeline, ev.Result)
		}
		sub.Close()
	}
}
