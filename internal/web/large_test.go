package web

// The pages stay fast with a 500-job buildset and a 100 MB log.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
)

// bigConfig is a pipeline of n jobs besides the bootstrap job: job i needs
// job i/3 (a tree about seven waves deep, the widest wave some 300 jobs)
// and, for every fifth, job i/2 too.
func bigConfig(n int) string {
	var b strings.Builder
	b.WriteString("jobs:\n  boot: {bootstrap: true, run: \"true\"}\n")
	var names []string
	for i := range n {
		name := fmt.Sprintf("service-%03d", i)
		names = append(names, name)
		var deps []string
		if i >= 3 {
			deps = append(deps, fmt.Sprintf("service-%03d", i/3))
		}
		if i%5 == 0 && i >= 2 && i/2 != i/3 {
			deps = append(deps, fmt.Sprintf("service-%03d", i/2))
		}
		fmt.Fprintf(&b, "  %s: {run: \"true\", duration_hint: %ds, dependencies: [%s]}\n", name, 10+i%50, strings.Join(deps, ", "))
	}
	fmt.Fprintf(&b, "pipelines:\n  deploy: {jobs: [boot, %s]}\n", strings.Join(names, ", "))
	return b.String()
}

// timeGet fetches path a few times and returns the fastest time and the
// body.
func timeGet(t *testing.T, url string) (time.Duration, []byte) {
	t.Helper()
	best := time.Duration(1 << 62)
	var body []byte
	for range 3 {
		start := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", url, resp.StatusCode, body)
		}
		best = min(best, time.Since(start))
	}
	return best, body
}

// TestLargeBuildset renders a 500-job buildset, a third of its builds done
// and a third running, and a build whose log is 100 MB.
func TestLargeBuildset(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 100 MB log")
	}
	const jobs = 500
	u := startUI(t, bigConfig(jobs))
	// Paused, the buildset stays queued: the test sets its builds' states.
	u.Post("/api/v1/pause", map[string]string{"reason": "test"}, http.StatusOK)
	id := u.Trigger("deploy", nil)
	ctx := context.Background()
	bs := u.Buildset(id)
	if len(bs.Builds) != jobs+1 {
		t.Fatalf("%d builds", len(bs.Builds))
	}
	logDir := t.TempDir()
	start := time.Now().Add(-10 * time.Minute)
	// The builds are written as a `sortie run` on the store would.
	fence, err := u.Store.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "test", Kind: store.OwnerRun, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range bs.Builds {
		at := start.Add(time.Duration(i) * time.Second)
		switch i % 3 {
		case 0, 1:
			a := &store.Attempt{BuildsetID: id, Job: b.Job, Number: 1, Owner: "test", StartedAt: at, Log: filepath.Join(logDir, b.Job+".log")}
			if err := u.Store.StartAttempt(ctx, store.StartAttemptParams{Attempt: a, Fence: fence}); err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 {
				end := at.Add(time.Duration(5+i%40) * time.Second)
				if err := u.Store.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: id, Job: b.Job, Number: 1, Result: store.Success, Error: "", At: end, Fence: fence}); err != nil {
					t.Fatal(err)
				}
				if err := u.Store.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: id, Job: b.Job, Result: store.Success, Reason: "", At: end, Fence: fence}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// A 100 MB log for the running build of service-000 (index 1).
	big := bs.Builds[1].Job
	f, err := os.Create(filepath.Join(logDir, big+".log"))
	if err != nil {
		t.Fatal(err)
	}
	var chunk bytes.Buffer
	for i := 0; chunk.Len() < 1<<20; i++ {
		fmt.Fprintf(&chunk, "2026-01-02T03:04:05.123456789Z | \x1b[32mok\x1b[0m: [host%05d] => line of a long playbook run <%d>\n", i, i)
	}
	for range 100 {
		f.Write(chunk.Bytes())
	}
	f.Close()

	d, body := timeGet(t, u.URL+"/buildsets/"+id)
	doc, err := parseHTML(body)
	if err != nil {
		t.Fatal(err)
	}
	checkPage(t, "/buildsets/"+id, doc)
	if n := len(doc.byID(t, "graph").all(sel("g", "node"))); n != jobs+1 {
		t.Errorf("%d nodes, want %d", n, jobs+1)
	}
	if n := len(doc.byID(t, "timeline").all(sel("rect", "bar"))); n != jobs+1 {
		t.Errorf("%d bars, want %d", n, jobs+1)
	}
	states := map[string]int{}
	for _, n := range doc.byID(t, "graph").all(sel("g", "node")) {
		states[n.attr("data-state")]++
	}
	if states["SUCCESS"] != 167 || states["RUNNING"] != 167 || states["WAITING"] != 167 {
		t.Errorf("states %v", states)
	}
	t.Logf("buildset page of %d jobs: %v, %d KB", jobs+1, d.Round(time.Millisecond), len(body)>>10)

	d, body = timeGet(t, u.URL+"/buildsets/"+id+"/builds/"+big)
	doc, err = parseHTML(body)
	if err != nil {
		t.Fatal(err)
	}
	pre := doc.byID(t, "log")
	lines := len(pre.all(sel("span", "line")))
	t.Logf("build page with a 100 MB log: %v, %d KB, %d lines rendered", d.Round(time.Millisecond), len(body)>>10, lines)
	if len(body) > 2<<20 || lines == 0 || lines > 5000 {
		t.Errorf("the build page of a 100 MB log: %d bytes, %d lines", len(body), lines)
	}
	if pre.attr("data-offset") != fmt.Sprint(100*chunk.Len()) {
		t.Errorf("data-offset %s, want the log's size %d", pre.attr("data-offset"), 100*chunk.Len())
	}
	doc.byID(t, "log-truncated")
	d, _ = timeGet(t, u.URL+"/")
	t.Logf("status page: %v", d.Round(time.Millisecond))
	d, _ = timeGet(t, u.URL+"/history?job=service-499")
	t.Logf("history filtered by job: %v", d.Round(time.Millisecond))
}

// fakeSource serves one buildset from memory, for the benchmark.
type fakeSource struct {
	cfg *config.Config
	bs  *server.BuildsetJSON
}

func (f *fakeSource) Config() *config.Config { return f.cfg }
func (f *fakeSource) Status(context.Context) (*server.StatusJSON, error) {
	return nil, store.ErrNotFound
}
func (f *fakeSource) Nodes(context.Context) (*server.NodesJSON, error) {
	return nil, store.ErrNotFound
}
func (f *fakeSource) Buildset(_ context.Context, id string) (*server.BuildsetJSON, error) {
	if id != f.bs.ID {
		return nil, store.ErrNotFound
	}
	return f.bs, nil
}
func (f *fakeSource) Build(context.Context, string, string) (*server.BuildJSON, error) {
	return nil, store.ErrNotFound
}
func (f *fakeSource) History(context.Context, server.HistoryQuery) (*server.HistoryPage, error) {
	return &server.HistoryPage{}, nil
}
func (f *fakeSource) JobHistory(context.Context, string, int) ([]server.HistoryRow, error) {
	return nil, nil
}
func (f *fakeSource) JobMedian(context.Context, string) (time.Duration, bool, error) {
	return 0, false, nil
}
func (f *fakeSource) LogTail(context.Context, string, string, int, int64) (*server.LogTail, error) {
	return nil, store.ErrNotFound
}
func (f *fakeSource) LogLines(context.Context, string, string, int) ([]string, int, error) {
	return nil, 0, nil
}
func (f *fakeSource) JobMedians(context.Context, []string) (map[string]time.Duration, error) {
	return nil, nil
}
func (f *fakeSource) Commits(context.Context, []string) (map[string]source.Commit, error) {
	return nil, nil
}
func (f *fakeSource) Reports(context.Context, string) ([]server.ReportJSON, error) {
	return nil, nil
}

// fakeBuildset is a 500-job buildset, a third done, a third running.
func fakeBuildset(tb testing.TB) *fakeSource {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sortie.yaml"), []byte("source: {url: /nonexistent}\n"+bigConfig(500)), 0o644); err != nil {
		tb.Fatal(err)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		tb.Fatal(err)
	}
	plan, err := graph.Select(cfg, "deploy", nil)
	if err != nil {
		tb.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rep := &buildset.Report{ID: "bs-1", Pipeline: "deploy", Commit: strings.Repeat("a", 40), Result: "RUNNING", StartedAt: buildset.TimeOf(&t0)}
	for i, j := range plan.Jobs {
		b := buildset.BuildReport{Job: j.Name}
		if i%3 != 2 {
			s := t0.Add(time.Duration(i) * time.Second)
			b.StartedAt, b.Attempt = buildset.TimeOf(&s), 1
			if i%3 == 0 {
				e := s.Add(time.Duration(5+i%40) * time.Second)
				b.FinishedAt, b.Result = buildset.TimeOf(&e), "SUCCESS"
			}
		}
		rep.Builds = append(rep.Builds, b)
	}
	return &fakeSource{cfg: cfg, bs: &server.BuildsetJSON{Report: rep, State: "RUNNING", Cause: "bench", Plan: plan, CreatedAt: buildset.TimeOf(&t0)}}
}

// BenchmarkBuildsetPage500 renders the page of a 500-job buildset (the
// store left out).
func BenchmarkBuildsetPage500(b *testing.B) {
	h := New(fakeBuildset(b))
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/buildsets/bs-1", nil))
		if w.Code != 200 {
			b.Fatalf("%d: %s", w.Code, w.Body)
		}
	}
}

// BenchmarkRenderLog renders the 256 KiB a build page shows of a log.
func BenchmarkRenderLog(b *testing.B) {
	var chunk bytes.Buffer
	for i := 0; chunk.Len() < 256<<10; i++ {
		fmt.Fprintf(&chunk, "2026-01-02T03:04:05.123456789Z | \x1b[0;32mok: [host%05d]\x1b[0m => {\"changed\": false, \"msg\": \"<%d> & more\"}\n", i, i)
	}
	b.SetBytes(int64(chunk.Len()))
	for b.Loop() {
		renderLog(chunk.Bytes())
	}
}
