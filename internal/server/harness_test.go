package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
	"github.com/sortie-ci/sortie/internal/trigger"
)

const testToken = "test-token-1"

// A server starts goroutines (managers, triggers, runs, HTTP): none may
// outlive the tests (pgtest.Main checks, and stops the PostgreSQL cluster
// the tests on PostgreSQL may have started).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// env is a real server on loopback: SQLite, the local bastion, a real git
// repository, real HTTP.
type env struct {
	t      *testing.T
	srv    *Server
	url    string
	repo   string
	dir    string // config dir
	state  string
	cancel context.CancelFunc
	done   chan error
	envs   map[string]string
	logBuf *syncBuffer
}

type syncBuffer struct {
	mu chan struct{}
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu <- struct{}{}
	defer func() { <-s.mu }()
	return s.b.String()
}

type envOpt struct {
	clock trigger.Clock
	env   map[string]string
	grace time.Duration
	// db is a PostgreSQL database's URL; "" is a SQLite file in the
	// state dir.
	db string
	// chunks keeps the build logs in the store (logs.Chunks), not in
	// files.
	chunks bool
	// node names the server; "" means the host name.
	node string
}

// start writes cfg (with source.url set to a fresh repository) and starts
// a server on it. The server stops at the end of the test.
func start(t *testing.T, cfg string, opt envOpt) *env {
	t.Helper()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "hello\n", "docs/index.md": "docs\n", "playbooks/a.yaml": "a\n"})
	e := &env{t: t, repo: repo, dir: t.TempDir(), state: t.TempDir(), envs: map[string]string{"SORTIE_TOKENS": testToken}}
	for k, v := range opt.env {
		e.envs[k] = v
	}
	e.writeConfig(cfg)
	e.boot(opt)
	return e
}

func (e *env) writeConfig(cfg string) {
	e.t.Helper()
	full := fmt.Sprintf("source: {url: %q, branch: main}\n%s", e.repo, cfg)
	if err := os.WriteFile(filepath.Join(e.dir, "sortie.yaml"), []byte(full), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) boot(opt envOpt) {
	t := e.t
	t.Helper()
	cfg, err := config.Load(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := openStore(ctx, opt.db, e.state)
	if err != nil {
		t.Fatal(err)
	}
	owner := coordinator.NewOwner()
	b := local.New(filepath.Join(e.state, "bastion"))
	b.Owner = owner
	// Not started: the server's coordinator starts it.
	sems := &semaphore.Client{Store: st, Owner: owner}
	mirror := &source.Mirror{Dir: filepath.Join(e.state, "mirror.git"), URL: cfg.Source.URL}
	getenv := func(k string) string { return e.envs[k] }
	runner := &buildset.Runner{
		Store: st, Bastion: b, Mirror: mirror, Semaphores: sems, LogDir: filepath.Join(e.state, "logs"),
		Getenv: getenv, Poll: 20 * time.Millisecond, Grace: time.Second,
	}
	if opt.chunks {
		runner.Logs = logs.Chunks{Store: st}
	}
	e.logBuf = &syncBuffer{mu: make(chan struct{}, 1)}
	srv, err := New(Options{
		ConfigPath: e.dir, Config: cfg, StateDir: e.state, Listen: "127.0.0.1:0", Node: opt.node, Version: "v-test",
		Store: st, Semaphores: sems, Bastion: b, Mirror: mirror, Runner: runner,
		Getenv: getenv, Clock: opt.clock, Grace: opt.grace, Tick: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(e.logBuf, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	rctx, cancel := context.WithCancel(ctx)
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() {
		e.done <- srv.Run(rctx)
		sems.Stop()
		st.Close()
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !srv.ready.Load() {
		select {
		case err := <-e.done:
			t.Fatalf("server stopped: %v\n%s", err, e.logBuf)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready\n%s", e.logBuf)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.url = "http://" + srv.Addr()
	t.Cleanup(e.stop)
}

// openStore opens the PostgreSQL database at db, or without one the state
// dir's SQLite file.
func openStore(ctx context.Context, db, state string) (store.Store, error) {
	if db != "" {
		return postgres.Open(ctx, db)
	}
	return sqlite.Open(ctx, filepath.Join(state, "sortie.db"))
}

// stop shuts the server down and waits for it.
func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("server: %v", err)
		}
	case <-time.After(60 * time.Second):
		e.t.Errorf("server did not stop\n%s", e.logBuf)
	}
}

// do calls the API; body may be nil. It returns the status and the body.
func (e *env) do(method, path string, body any, token string) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// trigger makes a buildset through the API and returns its id.
func (e *env) trigger(pipeline string, body map[string]any) string {
	e.t.Helper()
	code, out := e.do("POST", "/api/v1/pipelines/"+pipeline+"/trigger", body, testToken)
	if code != http.StatusAccepted {
		e.t.Fatalf("trigger %s: %d %s", pipeline, code, out)
	}
	var r struct{ Buildset string }
	json.Unmarshal(out, &r)
	return r.Buildset
}

// buildset reads a buildset through the API.
func (e *env) buildset(id string) *BuildsetJSON {
	e.t.Helper()
	code, out := e.do("GET", "/api/v1/buildsets/"+id, nil, "")
	if code != http.StatusOK {
		e.t.Fatalf("get %s: %d %s", id, code, out)
	}
	var bs BuildsetJSON
	if err := json.Unmarshal(out, &bs); err != nil {
		e.t.Fatal(err)
	}
	return &bs
}

// wait polls a buildset until cond holds or 30s pass.
func (e *env) wait(id string, what string, cond func(*BuildsetJSON) bool) *BuildsetJSON {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		bs := e.buildset(id)
		if cond(bs) {
			return bs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("buildset %s: timed out waiting until %s; it is %s %s\n%s", id, what, bs.State, bs.Result, e.logBuf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) waitDone(id string) *BuildsetJSON {
	e.t.Helper()
	return e.wait(id, "done", func(b *BuildsetJSON) bool { return b.State == "DONE" })
}

// jobs lists the jobs of a buildset's builds.
func jobs(bs *BuildsetJSON) []string {
	var out []string
	for _, b := range bs.Builds {
		out = append(out, b.Job)
	}
	return out
}

// gate is a file a job waits for: `while [ ! -e GATE ]; do sleep 0.02; done`,
// or until the gate's directory is gone (the test over: a job can outlive
// a server the test stopped).
type gate string

func newGate(t *testing.T) gate { return gate(filepath.Join(t.TempDir(), "gate")) }

func (g gate) open(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(string(g), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (g gate) wait() string {
	return fmt.Sprintf(`while [ ! -e %q ] && [ -d %q ]; do sleep 0.02; done`, string(g), filepath.Dir(string(g)))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var _ = strings.Contains
