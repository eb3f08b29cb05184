package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// These tests run the API clients (the real binary) against a real
// `sortie serve` (the same binary) on loopback.

const clientTestToken = "client-test-token"

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// clientServer is a `sortie serve` process for the client tests.
type clientServer struct {
	url  string
	dir  string // the config's dir, also where the jobs leave marks
	log  *lockedBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startClientServer writes the config (source.url set to a fresh git
// repository) and starts `sortie serve --listen 127.0.0.1:0`, learning its
// port from the "listening addr=" line of its log. The server is stopped
// (SIGTERM, then waited for) when the test ends. extra are more flags of
// serve.
func startClientServer(t *testing.T, yaml string, extra ...string) *clientServer {
	t.Helper()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("source: {url: %q, branch: main}\n%s", repo, yaml))
	s := &clientServer{dir: dir, log: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(sortieBin(t), append([]string{"serve", "--config", cfg, "--listen", "127.0.0.1:0",
		"--state-dir", filepath.Join(dir, "state"), "--grace", "1s"}, extra...)...)
	s.cmd.Env = append(os.Environ(), "SORTIE_TOKENS=other-token, "+clientTestToken)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stdout = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.log.Write([]byte(line + "\n"))
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop(t) })
	select {
	case a := <-addr:
		s.url = "http://" + a
	case <-s.done:
		t.Fatalf("sortie serve exited before listening:\n%s", s.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("sortie serve did not listen within 30s:\n%s", s.log)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("sortie serve not ready within 30s:\n%s", s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *clientServer) stop(t *testing.T) {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Errorf("sortie serve did not stop within 30s of SIGTERM:\n%s", s.log)
		s.cmd.Process.Kill()
		<-s.done
	}
}

// kill kills s with SIGKILL, as a crash or a lost host would end it, and
// waits for it.
func (s *clientServer) kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// client runs the binary as an API client of s, with the token unless env
// says otherwise, and a deadline.
func (s *clientServer) client(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sortieBin(t), append(args, "--server", s.url)...)
	cmd.Env = append(append(os.Environ(), "SORTIE_TOKEN="+clientTestToken, "USER=tester"), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case ctx.Err() != nil:
		t.Fatalf("sortie %v did not end within 2m\n%s%s\nserver log:\n%s", args, out.String(), errb.String(), s.log)
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// trigger triggers a pipeline without waiting and returns the buildset id.
func (s *clientServer) trigger(t *testing.T, pipeline string) string {
	t.Helper()
	r := s.client(t, nil, "trigger", "--pipeline", pipeline)
	id := strings.TrimSpace(r.stdout)
	if r.code != 0 || id == "" || strings.Contains(id, "\n") {
		t.Fatalf("trigger %s: exit %d\n%s%s", pipeline, r.code, r.stdout, r.stderr)
	}
	return id
}

// getBuildset reads a buildset straight from the API.
func (s *clientServer) getBuildset(t *testing.T, id string) remoteBuildset {
	t.Helper()
	resp, err := http.Get(s.url + "/api/v1/buildsets/" + id)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var bs remoteBuildset
	if err := json.NewDecoder(resp.Body).Decode(&bs); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET buildset %s: %d %v", id, resp.StatusCode, err)
	}
	return bs
}

func (s *clientServer) waitDone(t *testing.T, id string) remoteBuildset {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		bs := s.getBuildset(t, id)
		if bs.State == "DONE" {
			return bs
		}
		if time.Now().After(deadline) {
			t.Fatalf("buildset %s still %s after 1m\nserver log:\n%s", id, bs.State, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFile waits for a mark a job leaves.
func waitFile(t *testing.T, path string, s *clientServer) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared\nserver log:\n%s", path, s.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClientAgainstServer(t *testing.T) {
	t.Parallel()
	marks := t.TempDir()
	s := startClientServer(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, install: ["true"]}
  hello: {run: 'echo hello-from-job; echo second-line'}
  fail: {run: 'echo about to fail; exit 3'}
  needy: {run: "true", dependencies: [hello]}
  gated:
    timeout: 60s
    run: |
      echo gated-start
      touch %[1]s/started-$SORTIE_BUILDSET
      %[2]s
      echo gated-done
pipelines:
  deploy: {jobs: [hello]}
  broken: {jobs: [fail]}
  unrunnable: {jobs: [needy]}
  gate: {manager: independent, jobs: [gated]}
`, marks, waitFor(marks+"/gate-$SORTIE_BUILDSET", marks)))

	var okID, failID string
	t.Run("TriggerWaitSuccess", func(t *testing.T) {
		rep := filepath.Join(t.TempDir(), "r.json")
		r := s.client(t, nil, "trigger", "--pipeline", "deploy", "--wait", "--report", rep)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s%s\nserver log:\n%s", r.code, r.stdout, r.stderr, s.log)
		}
		okID = strings.SplitN(r.stdout, "\n", 2)[0]
		if !regexp.MustCompile(`(?m)^hello +SUCCESS +\S+ +1`).MatchString(r.stdout) ||
			!strings.Contains(r.stdout, "buildset "+okID+": SUCCESS") || !strings.Contains(r.stdout, "critical path as run: boot -> hello") {
			t.Fatalf("summary:\n%s", r.stdout)
		}
		var got remoteBuildset
		data, err := os.ReadFile(rep)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &got); err != nil || got.ID != okID || got.Result != "SUCCESS" || len(got.Builds) != 2 || len(got.Commit) != 40 {
			t.Fatalf("report (%v):\n%s", err, data)
		}
	})

	t.Run("TriggerWaitFailure", func(t *testing.T) {
		r := s.client(t, nil, "trigger", "--pipeline", "broken", "--wait")
		failID = strings.SplitN(r.stdout, "\n", 2)[0]
		if r.code != 1 || !regexp.MustCompile(`(?m)^fail +FAILURE`).MatchString(r.stdout) || !strings.Contains(r.stdout, ": FAILURE") {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("TriggerConfigError", func(t *testing.T) {
		// needy needs hello, which the pipeline does not run: a buildset
		// error. The buildset exists (CONFIG_ERROR); exit 2 as sortie run.
		rep := filepath.Join(t.TempDir(), "r.json")
		r := s.client(t, nil, "trigger", "--pipeline", "unrunnable", "--wait", "--report", rep)
		id := strings.TrimSpace(strings.SplitN(r.stdout, "\n", 2)[0])
		if r.code != 2 || id == "" || !strings.Contains(r.stderr, "needy needs hello") {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		data, err := os.ReadFile(rep)
		if err != nil || !strings.Contains(string(data), `"CONFIG_ERROR"`) || !strings.Contains(string(data), id) {
			t.Fatalf("report (%v):\n%s", err, data)
		}
	})

	t.Run("TriggerUnknownPipeline", func(t *testing.T) {
		r := s.client(t, nil, "trigger", "--pipeline", "nope")
		if r.code != 2 || !strings.Contains(r.stderr, `no pipeline "nope"`) {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("NoToken", func(t *testing.T) {
		r := s.client(t, []string{"SORTIE_TOKEN="}, "trigger", "--pipeline", "deploy")
		if r.code != 1 || !strings.Contains(r.stderr, "SORTIE_TOKEN is not set") || !strings.Contains(r.stderr, "HTTP 401") {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = s.client(t, []string{"SORTIE_TOKEN=wrong"}, "pause")
		if r.code != 1 || !strings.Contains(r.stderr, "refused the token in SORTIE_TOKEN") {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		// Reads are public by default.
		if r := s.client(t, []string{"SORTIE_TOKEN="}, "status"); r.code != 0 {
			t.Fatalf("status without a token: exit %d\n%s", r.code, r.stderr)
		}
	})

	t.Run("Logs", func(t *testing.T) {
		if okID == "" {
			t.Skip("no buildset")
		}
		r := s.client(t, nil, "logs", okID, "hello")
		// Each line of a log is "<RFC 3339 time> | <the job's line>".
		if r.code != 0 || !regexp.MustCompile(`\| hello-from-job\n.* \| second-line\n$`).MatchString(r.stdout) {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = s.client(t, nil, "logs", okID, "nosuchjob")
		if r.code != 1 || !strings.Contains(r.stderr, "has no build of nosuchjob") {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("LogsFollow", func(t *testing.T) {
		id := s.trigger(t, "gate")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, sortieBin(t), "logs", id, "gated", "-f", "--server", s.url)
		var out, errb lockedBuffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFile(t, filepath.Join(marks, "started-"+id), s)
		// The line printed before the gate opens arrives while the job runs.
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), "| gated-start\n") {
			if time.Now().After(deadline) {
				t.Fatalf("logs -f printed nothing while the job ran:\n%s%s\nserver log:\n%s", out.String(), errb.String(), s.log)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if strings.Contains(out.String(), "gated-done") {
			t.Fatal("the job went past its gate")
		}
		os.WriteFile(filepath.Join(marks, "gate-"+id), nil, 0o644)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("logs -f: %v\n%s%s", err, out.String(), errb.String())
		}
		if !regexp.MustCompile(`^\S+ \| gated-start\n\S+ \| gated-done\n$`).MatchString(out.String()) || !strings.Contains(errb.String(), "gated ended: SUCCESS") {
			t.Fatalf("stdout %q\nstderr %q", out.String(), errb.String())
		}
	})

	t.Run("LogsFollowFailure", func(t *testing.T) {
		if failID == "" {
			t.Skip("no buildset")
		}
		r := s.client(t, nil, "logs", "--follow", failID, "fail")
		if r.code != 1 || !regexp.MustCompile(`^\S+ \| about to fail\n$`).MatchString(r.stdout) || !strings.Contains(r.stderr, "fail ended: FAILURE") {
			t.Fatalf("exit %d\n%q\n%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("Cancel", func(t *testing.T) {
		id := s.trigger(t, "gate")
		waitFile(t, filepath.Join(marks, "started-"+id), s)
		r := s.client(t, nil, "cancel", id)
		if r.code != 0 || !strings.Contains(r.stdout, "cancelling buildset "+id) {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		bs := s.waitDone(t, id)
		if bs.Result != "CANCELED" {
			t.Fatalf("result %s", bs.Result)
		}
		for _, b := range bs.Builds {
			if b.Job == "gated" && b.Result != "CANCELED" {
				t.Fatalf("gated: %s (%s)", b.Result, b.Reason)
			}
		}
		r = s.client(t, nil, "cancel", id)
		if r.code != 1 || !strings.Contains(r.stderr, "already finished") {
			t.Fatalf("second cancel: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("PauseStatusResume", func(t *testing.T) {
		r := s.client(t, nil, "pause", "--reason", "maint")
		if r.code != 0 {
			t.Fatalf("pause: exit %d\n%s", r.code, r.stderr)
		}
		id := s.trigger(t, "deploy")
		r = s.client(t, nil, "status")
		if r.code != 0 {
			t.Fatalf("status: exit %d\n%s", r.code, r.stderr)
		}
		for _, want := range []string{"ALL PIPELINES PAUSED by tester: maint", "\ndeploy ", "serial", "\nbroken ", "\ngate ", "independent", "queued", id} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("status lacks %q:\n%s", want, r.stdout)
			}
		}
		r = s.client(t, nil, "status", "--json")
		var st cliStatus
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Paused == nil || st.Paused.Reason != "maint" || st.Paused.By != "tester" {
			t.Fatalf("status --json (%v):\n%s", err, r.stdout)
		}
		if bs := s.getBuildset(t, id); bs.State != "QUEUED" {
			t.Fatalf("buildset made while paused is %s", bs.State)
		}
		r = s.client(t, nil, "resume")
		if r.code != 0 || !strings.Contains(r.stdout, "resumed all pipelines") {
			t.Fatalf("resume: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if bs := s.waitDone(t, id); bs.Result != "SUCCESS" {
			t.Fatalf("after resume: %s", bs.Result)
		}
		r = s.client(t, nil, "status")
		if r.code != 0 || strings.Contains(r.stdout, "PAUSED") {
			t.Fatalf("status after resume: exit %d\n%s", r.code, r.stdout)
		}
	})

	t.Run("ReloadAndRerun", func(t *testing.T) {
		r := s.client(t, nil, "reload")
		if r.code != 0 || !strings.Contains(r.stdout, "reloaded") {
			t.Fatalf("reload: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if failID == "" {
			t.Skip("no failed buildset")
		}
		r = s.client(t, nil, "rerun", failID, "--wait")
		if r.code != 1 || !regexp.MustCompile(`(?m)^fail +FAILURE`).MatchString(r.stdout) {
			t.Fatalf("rerun: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if rid := strings.SplitN(r.stdout, "\n", 2)[0]; s.getBuildset(t, rid).RerunOf != failID {
			t.Fatalf("rerun %s is not a rerun of %s", rid, failID)
		}
	})
}

// The errors that need no server, in-process.
func TestClientUsageAndUnreachable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status", "--server", dead}, 1, "cannot reach the sortie server at " + dead},
		{[]string{"trigger", "--pipeline", "deploy", "--server", dead}, 1, "is `sortie serve` running there?"},
		{[]string{"trigger", "--server", dead}, 2, "--pipeline is required"},
		{[]string{"logs", "only-one", "--server", dead}, 2, "want BUILDSET JOB"},
		{[]string{"logs", "a", "b", "c", "--server", dead}, 2, `unexpected argument "c"`},
		{[]string{"cancel", "--server", dead}, 2, "want BUILDSET"},
		{[]string{"status", "--server", "localhost:8080"}, 2, "want a URL like"},
	} {
		var stdout, stderr bytes.Buffer
		got := code(run(context.Background(), tc.args, &stdout, &stderr), &stderr)
		if got != tc.code || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("sortie %v: exit %d, want %d with %q\n%s", tc.args, got, tc.code, tc.want, stderr.String())
		}
	}
}

func TestClientReadEvents(t *testing.T) {
	t.Parallel()
	stream := "retry: 250\n\n: a comment\nid: 1:6\ndata: first\n\nid: 1:13\ndata: two\ndata: lines\n\n" +
		"event: attempt\ndata: 2\n\nid: 2:4\ndata: x\r\n\r\nevent: end\ndata: FAILURE\n\nid: 9:9\ndata: after the end\n\n"
	var out, errb bytes.Buffer
	lastID, retry := "", time.Second
	result, ended, err := readEvents(strings.NewReader(stream), &out, &errb, &lastID, &retry)
	if err != nil || !ended || result != "FAILURE" {
		t.Fatalf("result %q ended %v err %v", result, ended, err)
	}
	if out.String() != "first\ntwo\nlines\nx\n" || lastID != "2:4" || retry != 250*time.Millisecond || !strings.Contains(errb.String(), "attempt 2") {
		t.Fatalf("out %q lastID %q retry %v stderr %q", out.String(), lastID, retry, errb.String())
	}
	// A stream cut short: no end, the last id kept for Last-Event-ID.
	out.Reset()
	_, ended, err = readEvents(strings.NewReader("id: 1:3\ndata: ab\n\nid: 1:9\ndata: cut"), &out, &errb, &lastID, &retry)
	if ended || err != nil || out.String() != "ab\n" || lastID != "1:3" {
		t.Fatalf("ended %v err %v out %q lastID %q", ended, err, out.String(), lastID)
	}
}
