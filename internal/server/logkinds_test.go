package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
)

// forEachLogKind runs fn for each way a server keeps build logs: files
// beside SQLite (the default), chunks in SQLite, chunks in PostgreSQL. The
// log API must answer alike for all.
func forEachLogKind(t *testing.T, fn func(t *testing.T, opt envOpt)) {
	t.Run("files", func(t *testing.T) { fn(t, envOpt{}) })
	t.Run("chunks-sqlite", func(t *testing.T) { fn(t, envOpt{chunks: true}) })
	t.Run("chunks-postgres", func(t *testing.T) { fn(t, envOpt{db: pgtest.NewDatabase(t), chunks: true}) })
}

// readerServer is a second Server on st, made but never run: it
// dispatches nothing, and serves its API (reads, logs) through an
// httptest server, as another node of a cluster would. It returns its URL.
func readerServer(t *testing.T, st store.Store, cfgDir string) string {
	t.Helper()
	cfg, err := config.Load(cfgDir)
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	b := local.New(filepath.Join(state, "bastion"))
	sems := &semaphore.Client{Store: st, Owner: "reader"}
	mirror := &source.Mirror{Dir: filepath.Join(state, "mirror.git"), URL: cfg.Source.URL}
	srv, err := New(Options{
		ConfigPath: cfgDir, Config: cfg, StateDir: state, Store: st, Semaphores: sems, Bastion: b, Mirror: mirror,
		Runner: &buildset.Runner{Store: st, Bastion: b, Mirror: mirror, Semaphores: sems},
		Getenv: func(string) string { return "" },
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return hs.URL
}

// sse is one Server-Sent Event, with its id.
type sse struct{ id, event, data string }

// followSSE follows url's event stream until the test ends.
func followSSE(t *testing.T, url, lastID string) <-chan sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow %s: %d", url, resp.StatusCode)
	}
	ch := make(chan sse, 100)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		var ev sse
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimPrefix(v, " ")
			switch k {
			case "":
				if ev != (sse{}) {
					ch <- ev
				}
				ev = sse{}
			case "id":
				ev.id = v
			case "event":
				ev.event = v
			case "data":
				ev.data = v
			}
		}
	}()
	return ch
}

func nextSSE(t *testing.T, ch <-chan sse) sse {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the event stream ended")
		}
		return ev
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
	}
	return sse{}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestLogAttempts: a build's attempts, recorded and written by hand
// through each kind of sink, are served by another Server alike: whole,
// ?tail, ?lines, ?attempt, and followed with Last-Event-ID across the
// retry ("attempt" event) to the "end" event, live as lines are flushed.
func TestLogAttempts(t *testing.T) { forEachLogKind(t, testLogAttempts) }

func testLogAttempts(t *testing.T, opt envOpt) {
	ctx := t.Context()
	state, cfgDir := t.TempDir(), t.TempDir()
	st, err := openStore(ctx, opt.db, state)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var sink logs.Sink = logs.Files{Dir: filepath.Join(state, "logs")}
	if opt.chunks {
		sink = logs.Chunks{Store: st, Tick: make(chan time.Time)} // flushed by hand
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "sortie.yaml"), []byte("source: {url: /nowhere}\njobs: {j: {bootstrap: true, run: 'true'}}\npipelines: {p: {jobs: [j]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := readerServer(t, st, cfgDir)
	now := time.Now().UTC()
	bs := &store.Buildset{ID: "bs-logs", Pipeline: "p", Commit: "c0ffee", CreatedAt: now}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs, Jobs: []string{"j"}}))
	writer, err := st.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "writer", Kind: store.OwnerNode, Lease: time.Hour})
	must(err)
	must(st.StartBuildset(ctx, store.StartBuildsetParams{ID: bs.ID, Fence: writer, At: now}))
	start := func(n int) logs.Log {
		k := store.LogKey{BuildsetID: bs.ID, Job: "j", Attempt: n}
		must(st.StartAttempt(ctx, store.StartAttemptParams{Fence: writer, Attempt: &store.Attempt{
			BuildsetID: bs.ID, Job: "j", Number: n, Owner: "writer", StartedAt: now, Log: sink.Path(k)}}))
		return sink.Create(ctx, k, []string{"s3cret"})
	}
	logURL := url + "/api/v1/buildsets/" + bs.ID + "/builds/j/log"

	l1 := start(1)
	fmt.Fprint(l1, "one\ntwo s3cret\n")
	must(l1.Flush())
	ev := followSSE(t, logURL, "")
	first := nextSSE(t, ev)
	if !strings.HasSuffix(first.data, "| one") || !strings.HasPrefix(first.id, "1:") {
		t.Fatalf("first event %+v, want line one with an id 1:<offset>", first)
	}
	if e := nextSSE(t, ev); !strings.HasSuffix(e.data, "| two ***") {
		t.Fatalf("second event %+v, want line two, redacted", e)
	}
	fmt.Fprint(l1, "three\nfour")
	must(l1.Flush())
	if e := nextSSE(t, ev); !strings.HasSuffix(e.data, "| three") {
		t.Fatalf("live event %+v, want line three", e)
	}
	must(l1.Close()) // "four", the partial line, written whole
	must(st.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: bs.ID, Job: "j", Number: 1, Result: store.Lost, At: now, Fence: writer}))
	l2 := start(2)
	fmt.Fprint(l2, "again\n")
	must(l2.Close())
	must(st.FinishAttemptAndBuild(ctx,
		store.FinishAttemptParams{BuildsetID: bs.ID, Job: "j", Number: 2, Result: store.Success, At: now, Fence: writer},
		store.FinishBuildParams{BuildsetID: bs.ID, Job: "j", Result: store.Success, At: now, Fence: writer}))
	var rest []sse
	for e := nextSSE(t, ev); ; e = nextSSE(t, ev) {
		rest = append(rest, e)
		if e.event == "end" {
			break
		}
	}
	got := ""
	for _, e := range rest {
		got += fmt.Sprintf("[%s %s %s]", e.event, e.id, logs.Text(e.data))
	}
	whole1 := get(t, logURL+"?attempt=1")
	want := fmt.Sprintf("[ 1:%d four][attempt  2][ 2:%d again][end  SUCCESS]", len(whole1), len(get(t, logURL)))
	if got != want {
		t.Errorf("followed to the end: %s, want %s", got, want)
	}
	// A client reconnecting after line one resumes with line two.
	again := followSSE(t, logURL, first.id)
	var texts []string
	for e := nextSSE(t, again); e.event != "end"; e = nextSSE(t, again) {
		texts = append(texts, e.event+logs.Text(e.data))
	}
	if strings.Join(texts, ",") != "two ***,three,four,attempt2,again" {
		t.Errorf("resumed from %s: %q", first.id, texts)
	}
	line := `\d{4}-\d\d-\d\dT[\d:.]+Z \| `
	if !regexp.MustCompile(`^` + line + `one\n` + line + `two \*\*\*\n` + line + `three\n` + line + `four\n$`).MatchString(whole1) {
		t.Errorf("whole attempt 1: %q", whole1)
	}
	if got := get(t, logURL+"?attempt=1&lines=2"); !regexp.MustCompile(`^` + line + `three\n` + line + `four\n$`).MatchString(got) {
		t.Errorf("?lines=2: %q", got)
	}
	if got := get(t, logURL+"?attempt=1&tail=10"); got != "" {
		t.Errorf("?tail=10: %q, want nothing (no line starts in the last 10 bytes)", got)
	}
	if got, want := get(t, logURL+"?attempt=1&tail=40"), whole1[strings.LastIndex(whole1[:len(whole1)-1], "\n")+1:]; got != want {
		t.Errorf("?tail=40: %q, want the last line %q", got, want)
	}
	if got := get(t, logURL); !regexp.MustCompile(`^` + line + `again\n$`).MatchString(got) {
		t.Errorf("latest attempt: %q", got)
	}
}

// TestLogFromAnotherServer: one server runs a build on PostgreSQL, its log
// in chunks; a second Server on the same database (its own pool, never
// run) follows it live, and serves it whole, byte for byte as the writer
// does.
func TestLogFromAnotherServer(t *testing.T) {
	db := pgtest.NewDatabase(t)
	g := newGate(t)
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  talk: {run: 'echo first-line; %s; for i in $(seq 1 2000); do echo "line $i"; done'}
pipelines:
  p: {jobs: [boot, talk]}
`, g.wait()), envOpt{db: db, chunks: true})
	release(t, g)
	other, err := postgres.Open(t.Context(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	url := readerServer(t, other, e.dir)
	id := e.trigger("p", nil)
	logURL := "/api/v1/buildsets/" + id + "/builds/talk/log"
	ev := followSSE(t, url+logURL, "")
	if first := nextSSE(t, ev); !strings.HasSuffix(first.data, "| first-line") {
		t.Fatalf("first event from the other server: %+v", first)
	}
	if b := buildOf(t, e.buildset(id), "talk"); b.Result != "" {
		t.Fatalf("talk finished before its gate: %s", b.Result)
	}
	g.open(t)
	n := 0
	for e := nextSSE(t, ev); e.event != "end"; e = nextSSE(t, ev) {
		if n++; !strings.HasSuffix(e.data, fmt.Sprintf("| line %d", n)) {
			t.Fatalf("event %d: %+v", n, e)
		}
	}
	if n != 2000 {
		t.Errorf("%d lines followed, want 2000", n)
	}
	e.waitDone(id)
	_, mine := e.do("GET", logURL, nil, "")
	if theirs := get(t, url+logURL); theirs != string(mine) || strings.Count(theirs, "\n") != 2001 {
		t.Errorf("the other server's log (%d bytes) differs from the writer's (%d bytes)", len(theirs), len(mine))
	}
}
