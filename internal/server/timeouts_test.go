package server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testTimeouts are small, so that the tests of the timeouts wait little.
var testTimeouts = Timeouts{ReadHeader: time.Second, Read: 400 * time.Millisecond, Write: 400 * time.Millisecond, Idle: 400 * time.Millisecond}

// serveWith serves the handler of e's server on an HTTP server of its own,
// made as Run makes it but with timeouts to, and returns its address.
func serveWith(t *testing.T, e *env, to Timeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := newHTTPServer(e.srv.Handler(), to)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// waitClosed reads conn until the server closes it, and fails if it is
// still open after limit, the test's own bound, far above the server's
// timeouts.
func waitClosed(t *testing.T, conn net.Conn, limit time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s", limit)
	}
}

// stall opens a connection to addr and sends head, a request whose body
// is cut short, then nothing.
func stall(t *testing.T, addr, head string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	return conn
}

// stalledPause is a pause request whose body never ends.
var stalledPause = "POST /api/v1/pause HTTP/1.1\r\nHost: sortie\r\nAuthorization: Bearer " + testToken +
	"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"reason\": "

// TestSlowBodyCut: a client that sends its headers and then stalls its
// body has its connection closed once the read timeout has run out.
func TestSlowBodyCut(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	addr := serveWith(t, e, testTimeouts)
	for _, head := range []string{
		stalledPause,
		"POST /webhooks/github HTTP/1.1\r\nHost: sortie\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=" + strings.Repeat("ab", 32) +
			"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"ref\": ",
	} {
		waitClosed(t, stall(t, addr, head), 15*time.Second)
	}
	if code, out := e.do("GET", "/api/v1/status", nil, ""); code != 200 || !strings.Contains(string(out), `"paused": null`) {
		t.Errorf("status after a cut pause request: %d %s", code, out)
	}
}

// TestIdleConnectionCut: a kept-alive connection with no request is closed
// once the idle timeout has run out.
func TestIdleConnectionCut(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	addr := serveWith(t, e, testTimeouts)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: sortie\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("healthz: %d, close %v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("an idle connection: read %v, want EOF (closed by the server)", err)
	}
}

// TestLogFollowerOutlivesTimeouts: a client following a log stays
// connected, and gets every line and the end, long past the server's read
// and write timeouts.
func TestLogFollowerOutlivesTimeouts(t *testing.T) {
	g := newGate(t)
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  talk:
    run: 'echo first-line; %s; echo second-line'
pipelines:
  p:
    jobs: [boot, talk]
`, g.wait()), envOpt{})
	t.Cleanup(func() { g.open(t) })
	addr := serveWith(t, e, testTimeouts)
	id := e.trigger("p", nil)

	resp, err := http.Get("http://" + addr + "/api/v1/buildsets/" + id + "/builds/talk/log?follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("follow: %d", resp.StatusCode)
	}
	events := make(chan [2]string, 100) // event, data
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var event, data string
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "":
				if data != "" || event != "" {
					events <- [2]string{event, data}
				}
				event, data = "", ""
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	next := func(what string) [2]string {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the stream ended before %s", what)
			}
			return ev
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s within 30s", what)
		}
		return [2]string{}
	}
	if ev := next("the first line"); !strings.HasSuffix(ev[1], "| first-line") {
		t.Fatalf("first event %q, want the first line", ev)
	}
	// A stalled request made now is cut once the read timeout has run
	// out; by then the follower's request, older, is past its read and
	// write timeouts too.
	waitClosed(t, stall(t, addr, stalledPause), 15*time.Second)
	g.open(t)
	if ev := next("the second line"); !strings.HasSuffix(ev[1], "| second-line") {
		t.Fatalf("second event %q, want the second line", ev)
	}
	if ev := next("the end"); ev != [2]string{"end", "SUCCESS"} {
		t.Fatalf("last event %q, want end SUCCESS", ev)
	}
}
