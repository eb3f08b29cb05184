package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
	"github.com/sortie-ci/sortie/internal/trigger"
)

// A coordinator starts goroutines (managers, triggers, runs, the lease):
// none may outlive the tests (pgtest.Main checks, and stops the PostgreSQL
// cluster it may have started).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// harness is a coordinator on a real SQLite store, the local bastion and
// a real git repository, whose config a test can swap.
type harness struct {
	t      *testing.T
	c      *Coordinator
	st     store.Store
	runner *buildset.Runner
	repo   string
	state  string
	cfg    atomic.Pointer[config.Config]
	log    *syncWriter
}

// newHarness makes a coordinator over yaml (after a source section naming
// a fresh repository), with its test signals on, not started, on a SQLite
// store of its own. It is stopped, and its store closed, when the test
// ends.
func newHarness(t *testing.T, yaml string) *harness {
	t.Helper()
	return newHarnessWith(t, yaml, harnessOptions{})
}

// harnessOptions change a harness from newHarness's.
type harnessOptions struct {
	// store is the store to use (closed by the caller); nil means a SQLite
	// store in the harness's state dir.
	store store.Store
	// repo is the source repository; "" means a fresh one.
	repo string
	// clock drives cron and polling; nil means the system clock.
	clock trigger.Clock
	// leaderTTL and leaderRetry shorten the elector's; leaderClock, when
	// set, is its clock.
	leaderTTL, leaderRetry time.Duration
	leaderClock            trigger.Clock
	// node names the server; "" means the host name alone on its store,
	// and a name of its own beside others on a shared one (two live
	// servers may not share a name).
	node string
	// lease is the owner's lease; 0 means semaphore.DefaultLease.
	lease time.Duration
	// grace is how long Stop lets builds run on; 0 means 5s.
	grace time.Duration
}

// newHarnessWith is newHarness with o.
func newHarnessWith(t *testing.T, yaml string, o harnessOptions) *harness {
	t.Helper()
	repo := o.repo
	if repo == "" {
		repo, _ = sourcetest.Repo(t, map[string]string{"README": "x\n"})
	}
	h := &harness{t: t, repo: repo, state: t.TempDir(), log: &syncWriter{}}
	h.setConfig(yaml)
	ctx := context.Background()
	st := o.store
	if st == nil {
		sq, err := sqlite.Open(ctx, filepath.Join(h.state, "sortie.db"))
		if err != nil {
			t.Fatal(err)
		}
		st = sq
	}
	h.st = st
	node := o.node
	if node == "" && o.store != nil {
		node = "node-" + filepath.Base(filepath.Dir(h.state)) + "-" + filepath.Base(h.state)
	}
	owner := NewOwner()
	b := local.New(filepath.Join(h.state, "bastion"))
	b.Owner = owner
	h.runner = &buildset.Runner{
		Store: st, Bastion: b, Semaphores: &semaphore.Client{Store: st, Owner: owner, Lease: o.lease},
		Mirror: &source.Mirror{Dir: filepath.Join(h.state, "mirror.git"), URL: repo},
		LogDir: filepath.Join(h.state, "logs"), Poll: 10 * time.Millisecond, Grace: time.Second,
	}
	c, err := New(Options{
		Store: st, Runner: h.runner, StateDir: h.state, Config: h.cfg.Load, Node: node,
		Log: slog.New(slog.NewTextHandler(h.log, nil)), Grace: cmp.Or(o.grace, 5*time.Second),
		// Passes by their wake-ups only (and by hand): no tick decides
		// anything behind a test's back.
		Tick:  time.Hour,
		Clock: o.clock, LeaderTTL: o.leaderTTL, LeaderRetry: o.leaderRetry, LeaderClock: o.leaderClock,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.TestSignals.Init()
	h.c = c
	t.Cleanup(func() {
		c.Stop(context.Background())
		if o.store == nil {
			st.Close()
		}
		if t.Failed() {
			t.Logf("coordinator log:\n%s", h.log)
		}
	})
	return h
}

// setConfig parses yaml as the config in force.
func (h *harness) setConfig(yaml string) {
	h.t.Helper()
	cfg, err := config.Parse("sortie.yaml", []byte(fmt.Sprintf("source: {url: %q}\n%s", h.repo, yaml)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.cfg.Store(cfg)
}

func (h *harness) start() {
	h.t.Helper()
	if err := h.c.Start(h.t.Context()); err != nil {
		h.t.Fatal(err)
	}
}

// create makes a QUEUED buildset without waking the managers.
func (h *harness) create(pipeline string) *store.Buildset {
	h.t.Helper()
	bs, err := h.runner.Create(h.t.Context(), h.cfg.Load(), buildset.Event{Pipeline: pipeline})
	if err != nil {
		h.t.Fatal(err)
	}
	return bs
}

// submit makes a buildset through the coordinator.
func (h *harness) submit(pipeline string) *store.Buildset {
	h.t.Helper()
	bs, err := h.c.Submit(h.t.Context(), buildset.Event{Pipeline: pipeline})
	if err != nil {
		h.t.Fatal(err)
	}
	return bs
}

func (h *harness) pass() {
	h.t.Helper()
	if err := h.c.Pass(h.t.Context()); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) get(id string) *store.Buildset {
	h.t.Helper()
	bs, err := h.st.GetBuildset(h.t.Context(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return bs
}

// waitCtx bounds a wait for a signal.
func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitSignal waits for sig to carry want, dropping the values before it.
func waitSignal[T comparable](t *testing.T, what string, sig *TestSignal[T], want T) {
	t.Helper()
	ctx := waitCtx(t)
	for {
		v, err := sig.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if v == want {
			return
		}
	}
}

// waitEnded waits for the Ended event of buildset id, and returns it;
// events of other buildsets before it are kept in seen.
func (h *harness) waitEnded(id string, seen map[string][]Ended) Ended {
	h.t.Helper()
	if evs := seen[id]; len(evs) > 0 {
		return evs[0]
	}
	ctx := waitCtx(h.t)
	for {
		ev, err := h.c.TestSignals.Ended.Wait(ctx)
		if err != nil {
			h.t.Fatalf("waiting for the end of %s: %v (it is %s)", id, err, h.get(id).State)
		}
		seen[ev.Buildset] = append(seen[ev.Buildset], ev)
		if ev.Buildset == id {
			return ev
		}
	}
}

// gate is a file a job waits for.
type gate string

func newGate(t *testing.T) gate { return gate(filepath.Join(t.TempDir(), "gate")) }

func (g gate) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(string(g), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wait is the shell loop that waits for the gate, or until its directory
// is gone (the test over: a job can outlive a node the test killed).
func (g gate) wait() string {
	return fmt.Sprintf(`while [ ! -e %q ] && [ -d %q ]; do sleep 0.01; done`, string(g), filepath.Dir(string(g)))
}

// syncWriter is a log buffer safe for concurrent writes.
type syncWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	return len(p), nil
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.buf)
}
