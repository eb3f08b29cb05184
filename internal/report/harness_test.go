package report_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/report"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
	"github.com/sortie-ci/sortie/internal/trigger/triggertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds every wait of a test for something the worker does.
const wait = 20 * time.Second

const publicURL = "https://deploy.example.org"

var t0 = time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)

// harness is a worker on a real SQLite store, on a fake clock: a test
// records buildsets' state changes as the runner does (with their
// deliveries), moves the clock, wakes the worker and waits for its tries.
type harness struct {
	t      *testing.T
	st     *sqlite.Store
	clock  *triggertest.Clock
	env    map[string]string
	envMu  sync.Mutex
	w      *report.Worker
	tries  chan report.Try
	runner *buildset.Runner
	// owner is the fence of the process that runs the buildsets, once
	// registered (fence).
	owner store.Fence
}

// fence is the right to write of the process that runs the buildsets,
// registered the first time.
func (h *harness) fence() store.Fence {
	h.t.Helper()
	if h.owner.Owner == "" {
		f, err := h.st.RegisterOwner(h.t.Context(), store.RegisterOwnerParams{ID: "o-test", Kind: store.OwnerNode, Lease: 24 * time.Hour})
		if err != nil {
			h.t.Fatal(err)
		}
		h.owner = f
	}
	return h.owner
}

type harnessOption func(*report.Options)

func newHarness(t *testing.T, env map[string]string, opts ...harnessOption) *harness {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &harness{t: t, st: st, clock: triggertest.NewClock(t0), env: env, tries: make(chan report.Try, 100)}
	h.runner = &buildset.Runner{Store: st, Now: h.clock.Now}
	opt := report.Options{
		Store: st, Name: "srv-test", Now: h.clock.Now,
		Getenv: func(k string) string {
			h.envMu.Lock()
			defer h.envMu.Unlock()
			return h.env[k]
		},
		Timeout: 2 * time.Second, Lease: time.Minute, Poll: time.Hour, // woken by the test, never by the poll
		Backoff: report.Backoff{Base: 10 * time.Second, Max: time.Minute, GiveUp: time.Hour},
		Jitter:  func(d time.Duration) time.Duration { return d },
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnTry:   func(tr report.Try) { h.tries <- tr },
	}
	for _, o := range opts {
		o(&opt)
	}
	h.w, err = report.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.w.Stop(context.Background()) })
	return h
}

func (h *harness) setenv(k, v string) {
	h.envMu.Lock()
	defer h.envMu.Unlock()
	h.env[k] = v
}

// next waits for the worker's next try.
func (h *harness) next() report.Try {
	h.t.Helper()
	select {
	case tr := <-h.tries:
		return tr
	case <-time.After(wait):
		h.t.Fatal("no try within", wait)
		return report.Try{}
	}
}

// advance moves the clock and wakes the worker, as a poll would.
func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	h.w.Wake()
}

// reporters are the reporters of each event, as a pipeline's report
// freezes them.
type reporters map[buildset.ReportEvent][]buildset.ReporterSpec

// all reports every event to each of rs.
func all(rs ...buildset.ReporterSpec) reporters {
	out := reporters{}
	for _, ev := range []buildset.ReportEvent{buildset.ReportStart, buildset.ReportSuccess, buildset.ReportFailure, buildset.ReportCancel} {
		out[ev] = rs
	}
	return out
}

// buildset makes a QUEUED buildset of pipeline deploy at commit, with
// jobs boot and base, whose spec reports to rs.
func (h *harness) buildset(id, commit string, rs reporters) *buildset.Spec {
	h.t.Helper()
	for _, list := range rs {
		for i := range list {
			list[i].PublicURL = publicURL
		}
	}
	spec := &buildset.Spec{Pipeline: "deploy", Jobs: map[string]buildset.JobSpec{"boot": {Bootstrap: true}, "base": {}}, Reports: rs}
	b, err := json.Marshal(spec)
	if err != nil {
		h.t.Fatal(err)
	}
	err = h.st.CreateBuildset(h.t.Context(), store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: id, Pipeline: "deploy", Commit: commit, State: store.BuildsetQueued, CreatedAt: h.clock.Now(), Spec: b, Plan: []byte("{}")},
		Jobs:     []string{"boot", "base"},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return spec
}

// start starts a buildset as the runner does, with its start's deliveries,
// and wakes the worker.
func (h *harness) start(id string, spec *buildset.Spec) {
	h.t.Helper()
	reports, err := spec.Deliveries(buildset.ReportStart, h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.st.StartBuildset(h.t.Context(), store.StartBuildsetParams{ID: id, Fence: h.fence(), At: h.clock.Now(), Reports: reports}); err != nil {
		h.t.Fatal(err)
	}
	h.w.Wake()
}

// finish runs each job to its result, 30 seconds each, then ends the
// buildset through the runner's End (which records the end's deliveries)
// and wakes the worker. The clock moves once, by the jobs' whole time,
// before anything is written: the worker, which may run at any moment,
// sees the time before or after, never one in between.
func (h *harness) finish(id string, result store.Result, jobs map[string]store.Result) {
	h.t.Helper()
	ctx := h.t.Context()
	var ran []string
	for _, job := range []string{"boot", "base"} {
		if _, ok := jobs[job]; ok {
			ran = append(ran, job)
		}
	}
	at := h.clock.Now()
	h.clock.Advance(time.Duration(len(ran)) * 30 * time.Second)
	for _, job := range ran {
		res := jobs[job]
		if err := h.st.StartAttempt(ctx, store.StartAttemptParams{Fence: h.fence(), Attempt: &store.Attempt{BuildsetID: id, Job: job, Number: 1, Owner: h.fence().Owner, StartedAt: at}}); err != nil {
			h.t.Fatal(err)
		}
		at = at.Add(30 * time.Second)
		if err := h.st.FinishAttemptAndBuild(ctx,
			store.FinishAttemptParams{BuildsetID: id, Job: job, Number: 1, Result: res, At: at, Fence: h.fence()},
			store.FinishBuildParams{BuildsetID: id, Job: job, Result: res, At: at, Fence: h.fence()}); err != nil {
			h.t.Fatal(err)
		}
	}
	ended, err := h.runner.End(ctx, nil, store.EndBuildsetParams{
		ID: id, Result: result, BuildResult: store.Skipped, Reason: "dependency failed", At: h.clock.Now(),
	})
	if err != nil || !ended {
		h.t.Fatalf("end %s: %v, %v", id, ended, err)
	}
	h.w.Wake()
}

func (h *harness) deliveries(id string) []*store.ReportDelivery {
	h.t.Helper()
	ds, err := h.st.ReportDeliveries(h.t.Context(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return ds
}

// receiver is a hand-written fake of a service that receives deliveries:
// check says what the real one would answer to a request (its path,
// method, headers and body, as its API documents them), and failures
// queued by the test come first.
type receiver struct {
	t     *testing.T
	check func(r *http.Request, body []byte) (status int, answer string)
	srv   *httptest.Server

	mu       sync.Mutex
	fail     []failure
	requests []request
	// hang is closed to let hanging requests go.
	hang chan struct{}
	// arrived gets a value as each request arrives.
	arrived chan struct{}
}

// failure is one way the receiver fails a request on purpose: a status
// (with its Retry-After), or no answer until the client gives up.
type failure struct {
	status     int
	retryAfter string
	body       string
	hang       bool
	// thenAccept makes the receiver take the request (check runs) but
	// answer with status anyway: the answer is lost.
	thenAccept bool
}

type request struct {
	method, path, rawPath string
	header                http.Header
	body                  []byte
}

func newReceiver(t *testing.T, check func(r *http.Request, body []byte) (int, string)) *receiver {
	rc := &receiver{t: t, check: check, hang: make(chan struct{}), arrived: make(chan struct{}, 1000)}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(func() {
		close(rc.hang)
		rc.srv.Close()
	})
	return rc
}

func (rc *receiver) URL() string { return rc.srv.URL }

func (rc *receiver) failNext(f ...failure) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.fail = append(rc.fail, f...)
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.requests = append(rc.requests, request{method: r.Method, path: r.URL.Path, rawPath: r.URL.EscapedPath(), header: r.Header.Clone(), body: body})
	var f *failure
	if len(rc.fail) > 0 {
		f = &rc.fail[0]
		rc.fail = rc.fail[1:]
	}
	rc.mu.Unlock()
	rc.arrived <- struct{}{}
	if f != nil && f.hang {
		select {
		case <-r.Context().Done():
		case <-rc.hang:
		}
		return
	}
	if f != nil && !f.thenAccept {
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		http.Error(w, f.body, f.status)
		return
	}
	status, answer := rc.check(r, body)
	if f != nil {
		status, answer = f.status, f.body
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, answer)
}

func (rc *receiver) got() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.requests...)
}

// refusedURL is an http URL on which nothing listens.
func refusedURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}
