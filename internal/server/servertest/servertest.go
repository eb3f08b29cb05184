// Package servertest runs a real `sortie serve` on loopback for the tests
// of other packages: SQLite, the semaphores, the local bastion, a real git
// repository and real HTTP, with an optional UI mounted.
//
// Start writes a config after a source section naming a fresh repository,
// serves it on 127.0.0.1:0 until the test ends, and gives helpers to call
// the API and wait for buildsets. Jobs can wait on a Gate, so a test
// decides when their states change. (internal/server's own tests have
// their own harness: they cannot import this package, which imports
// server.)
package servertest

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
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
	"github.com/sortie-ci/sortie/internal/trigger"
)

// Token is the API token SORTIE_TOKENS holds unless Options say otherwise.
const Token = "servertest-token"

// DefaultFiles are the repository's files when Options.Files is nil.
var DefaultFiles = map[string]string{"README": "hello\n", "docs/index.md": "docs\n", "playbooks/site.yaml": "site\n"}

// Options tune Start; the zero value serves the API alone.
type Options struct {
	// Files are the first commit of the repository; nil means DefaultFiles.
	Files map[string]string
	// UI, when set, makes the handler mounted with SetUI.
	UI func(*server.Server) http.Handler
	// Clock drives cron and polling; nil means the system clock.
	Clock trigger.Clock
	// Env is what the server's Getenv reads; SORTIE_TOKENS defaults to
	// Token (or to Options.Token when set).
	Env map[string]string
	// Token is the token the helpers send; "" means Token.
	Token string
	// Grace is how long a shutdown waits for running builds; 0 means 2s.
	Grace time.Duration
	// Tick is how often the managers look at the queue; 0 means 50ms.
	Tick time.Duration
	// Gates open when the test ends, before the server stops, so that a
	// failing test does not leave a job waiting through the shutdown.
	Gates []Gate
}

// Server is a running server and what it is made of.
type Server struct {
	URL   string // http://127.0.0.1:port
	Repo  string // the git repository the config's source names
	Dir   string // the config directory (sortie.yaml)
	State string // the state directory
	Srv   *server.Server
	Store store.Store
	Log   *LogBuffer // the server's log

	t      testing.TB
	token  string
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
}

// Start writes cfg (after a source section naming a fresh repository) and
// serves it on 127.0.0.1:0 until the test ends. At the end it opens
// opt.Gates, then stops the server and waits for it. Later cleanups run
// first: whatever the test starts after the server (a browser) stops
// before the server does.
func Start(t testing.TB, cfg string, opt Options) *Server {
	t.Helper()
	files := opt.Files
	if files == nil {
		files = DefaultFiles
	}
	repo, _ := sourcetest.Repo(t, files)
	s := &Server{Repo: repo, Dir: t.TempDir(), State: t.TempDir(), Log: &LogBuffer{}, t: t, token: opt.Token}
	if s.token == "" {
		s.token = Token
	}
	env := map[string]string{"SORTIE_TOKENS": s.token}
	for k, v := range opt.Env {
		env[k] = v
	}
	grace, tick := opt.Grace, opt.Tick
	if grace == 0 {
		grace = 2 * time.Second
	}
	if tick == 0 {
		tick = 50 * time.Millisecond
	}
	s.WriteConfig(cfg)
	c, err := config.Load(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(s.State, "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	s.Store = st
	owner := coordinator.NewOwner()
	b := local.New(filepath.Join(s.State, "bastion"))
	b.Owner = owner
	// Not started: the server's coordinator starts it.
	sems := &semaphore.Client{Store: st, Owner: owner}
	mirror := &source.Mirror{Dir: filepath.Join(s.State, "mirror.git"), URL: c.Source.URL}
	getenv := func(k string) string { return env[k] }
	runner := &buildset.Runner{
		Store: st, Bastion: b, Mirror: mirror, Semaphores: sems, LogDir: filepath.Join(s.State, "logs"),
		Getenv: getenv, Poll: 20 * time.Millisecond, Grace: time.Second,
	}
	srv, err := server.New(server.Options{
		ConfigPath: s.Dir, Config: c, StateDir: s.State, Listen: "127.0.0.1:0",
		Store: st, Semaphores: sems, Bastion: b, Mirror: mirror, Runner: runner,
		Getenv: getenv, Clock: opt.Clock, Grace: grace, Tick: tick,
		Log: slog.New(slog.NewTextHandler(s.Log, nil)),
	})
	if err != nil {
		sems.Stop()
		st.Close()
		t.Fatal(err)
	}
	s.Srv = srv
	if opt.UI != nil {
		srv.SetUI(opt.UI(srv))
	}
	rctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.done = make(chan error, 1)
	go func() {
		s.done <- srv.Run(rctx)
		sems.Stop()
		st.Close()
	}()
	t.Cleanup(s.Stop)
	// Registered after Stop, this runs before it.
	t.Cleanup(func() {
		for _, g := range opt.Gates {
			os.WriteFile(string(g), nil, 0o644)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-s.done:
			s.done <- err // for Stop
			t.Fatalf("server stopped: %v\n%s", err, s.Log)
		default:
		}
		if a := srv.Addr(); a != "" {
			s.URL = "http://" + a
			if resp, err := http.Get(s.URL + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return s
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready\n%s", s.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the server down and waits for it; it fails the test if the
// server returns an error or does not stop within a minute. Calling it
// again does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cancel := s.cancel
	s.cancel = nil
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("server: %v", err)
		}
	case <-time.After(60 * time.Second):
		s.t.Errorf("server did not stop\n%s", s.Log)
	}
}

// WriteConfig replaces sortie.yaml with cfg after the source section; the
// server reads it on its next reload.
func (s *Server) WriteConfig(cfg string) {
	s.t.Helper()
	full := fmt.Sprintf("source: {url: %q, branch: main}\n%s", s.Repo, cfg)
	if err := os.WriteFile(filepath.Join(s.Dir, "sortie.yaml"), []byte(full), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

// Do calls the API with token (none if ""); body, if not nil, is sent as
// JSON. It returns the status and the response body.
func (s *Server) Do(method, path string, body any, token string) (int, []byte) {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, s.URL+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// Post calls the API with the token and fails the test unless the status
// is want; it returns the response body.
func (s *Server) Post(path string, body any, want int) []byte {
	s.t.Helper()
	code, out := s.Do("POST", path, body, s.token)
	if code != want {
		s.t.Fatalf("POST %s: %d %s, want %d", path, code, out, want)
	}
	return out
}

// Trigger makes a buildset of pipeline through the API (body may be nil)
// and returns its id.
func (s *Server) Trigger(pipeline string, body any) string {
	s.t.Helper()
	var r struct{ Buildset string }
	if err := json.Unmarshal(s.Post("/api/v1/pipelines/"+pipeline+"/trigger", body, http.StatusAccepted), &r); err != nil {
		s.t.Fatalf("trigger %s: %v", pipeline, err)
	}
	return r.Buildset
}

// Buildset reads a buildset.
func (s *Server) Buildset(id string) *server.BuildsetJSON {
	s.t.Helper()
	bs, err := s.Srv.Buildset(context.Background(), id)
	if err != nil {
		s.t.Fatal(err)
	}
	return bs
}

// Wait polls a buildset until cond holds, and returns it; after 30s it
// fails the test, saying it waited until what.
func (s *Server) Wait(id, what string, cond func(*server.BuildsetJSON) bool) *server.BuildsetJSON {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		bs := s.Buildset(id)
		if cond(bs) {
			return bs
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("buildset %s: timed out waiting until %s; it is %s %s\n%s", id, what, bs.State, bs.Result, s.Log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitDone waits until the buildset is DONE.
func (s *Server) WaitDone(id string) *server.BuildsetJSON {
	s.t.Helper()
	return s.Wait(id, "done", func(b *server.BuildsetJSON) bool { return b.State == "DONE" })
}

// WaitStarted waits until job's build of buildset id runs.
func (s *Server) WaitStarted(id, job string) {
	s.t.Helper()
	s.Wait(id, job+" runs", func(b *server.BuildsetJSON) bool {
		for _, br := range b.Builds {
			if br.Job == job {
				return br.StartedAt.Get() != nil && br.FinishedAt.Get() == nil
			}
		}
		return false
	})
}

// Gate is a file a job waits for (see Wait). Pass it in Options.Gates so
// that it opens when the test ends, before the server stops.
type Gate string

// NewGate makes a gate, closed.
func NewGate(t testing.TB) Gate { return Gate(filepath.Join(t.TempDir(), "gate")) }

// Wait is the shell loop that waits for the gate, or until the gate's
// directory is gone (the test over: a job can outlive a server the test
// stopped or killed).
func (g Gate) Wait() string {
	return fmt.Sprintf(`while [ ! -e %q ] && [ -d %q ]; do sleep 0.02; done`, string(g), filepath.Dir(string(g)))
}

// Open opens the gate.
func (g Gate) Open(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(string(g), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// LogBuffer is a buffer that goroutines may write at once.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
