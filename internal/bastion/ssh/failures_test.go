package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/ssh"
	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
)

// TestKeepaliveToleratesASlowLink: a connection that answers a keepalive
// late, but within three intervals (OpenSSH's ServerAliveCountMax), is
// kept, and the build running over it goes on; one silent for three is
// dropped, and the build is an infrastructure failure. The link is hung
// until a keepalive sent during the hang has waited one interval and a
// half, or until the bastion gives up on it, as the bastion itself
// reports.
func TestKeepaliveToleratesASlowLink(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	// A second between keepalives: the link is hung for one and a half,
	// and the bastion gives up at three, which leaves a second and a half
	// for the test to resume it and the answer to reach the bastion on a
	// loaded machine.
	const interval = time.Second
	b := newBastionKeepalive(t, srv, srv.KnownHosts, interval)
	events := b.Keepalives()
	next := func() ssh.KeepaliveEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(30 * time.Second):
			t.Fatal("no keepalive for 30 s")
		}
		panic("unreachable")
	}
	ctx := context.Background()

	// runHung runs a build that waits for a gate, hangs the link while
	// it runs, right after a keepalive was answered so that none is in
	// flight, and resumes it when resumeOn says so, given each keepalive
	// event of a request sent during the hang, and any drop; then it
	// opens the gate if open says so. It returns the pid of the build's
	// shell too.
	runHung := func(open bool, resumeOn func(ssh.KeepaliveEvent) bool) (bastion.Outcome, int, error) {
		dir := t.TempDir()
		started, gate := filepath.Join(dir, "started"), filepath.Join(dir, "gate")
		done := make(chan struct{})
		var o bastion.Outcome
		var err error
		go func() {
			defer close(done)
			// The build also stops once the test's directory is gone, in
			// case the test ends before it saw the gate.
			o, _, err = run(t, b, ctx, bastion.Spec{Command: fmt.Sprintf(
				"echo $$ > %[1]s.tmp && mv %[1]s.tmp %[1]s; while [ ! -e %[2]s ] && [ -d %[3]s ]; do sleep 0.05; done",
				started, gate, dir)})
		}()
		t.Cleanup(func() {
			os.WriteFile(gate, nil, 0o644)
			<-done
		})
		var pid int
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if p := pids(t, started); len(p) == 1 {
				pid = p[0]
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the build never started")
			}
		}
		for drained := false; !drained; {
			select {
			case <-events: // old news
			default:
				drained = true
			}
		}
		// Keepalives go one at a time: one sent between the answer and
		// the hang would hang unanswered, and none other be sent. Seen,
		// it is let through and the hang made again after the next
		// answer.
		hanging := true
		for tries := 0; ; tries++ {
			if tries == 20 {
				t.Fatal("a keepalive went out before the hang 20 times in a row")
			}
			for !next().Done {
			}
			resume := srv.Hang(t)
			defer resume() // again, harmless, if the test fails while hung
			hung := time.Now()
			for {
				e := next()
				if e.Sent.Before(hung) && !e.Done && !e.Dropped {
					break
				}
				if (!e.Sent.Before(hung) || e.Dropped) && resumeOn(e) {
					hanging = false
					break
				}
			}
			resume()
			if !hanging {
				break
			}
		}
		if open {
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		<-done
		return o, pid, err
	}

	// Silent for one interval and a half: kept. (The bastion gives up at
	// three; the half left is the margin for the link's resumption on a
	// loaded machine.)
	const silence = 3 * interval / 2
	var late time.Time // the keepalive sent during the hang
	o, _, err := runHung(true, func(e ssh.KeepaliveEvent) bool {
		if e.Dropped {
			t.Fatalf("the connection was dropped after %v of silence", e.Waited)
		}
		if late.IsZero() && !e.Done {
			late = e.Sent
			time.Sleep(time.Until(e.Sent.Add(silence))) // the silence the test is about
			return true
		}
		return false
	})
	if err != nil || o.ExitCode != 0 {
		t.Fatalf("build over a link silent for %v (keepalives every %v): %+v %v; want it kept", silence, interval, o, err)
	}
	for {
		if e := next(); e.Sent.Equal(late) && e.Done {
			if e.Dropped || e.Waited < silence {
				t.Fatalf("the keepalive sent during the hang: %+v, want it answered after %v", e, silence)
			}
			break
		}
	}

	// Silent until the bastion gives up: dropped, after three intervals.
	o, lost, err := runHung(false, func(e ssh.KeepaliveEvent) bool {
		if e.Dropped && e.Waited < ssh.KeepaliveMisses*interval {
			t.Errorf("the connection was dropped after %v of silence, want %v", e.Waited, ssh.KeepaliveMisses*interval)
		}
		return e.Dropped
	})
	if err == nil || !bastion.IsInfra(err) {
		t.Fatalf("build over a link the bastion gave up on: %+v %v; want an infrastructure failure", o, err)
	}
	// The next connection ends the build that was lost with the last,
	// still waiting for its gate.
	if gone(lost) {
		t.Fatalf("the lost build (pid %d) ended with its connection: nothing to test", lost)
	}
	if o, _, err := run(t, b, ctx, bastion.Spec{Command: "true"}); err != nil || o.ExitCode != 0 {
		t.Fatalf("build after the drop: %+v %v", o, err)
	}
	assertGone(t, []int{lost}, 1)
}

// TestMissingDirIsInfra: a build whose directory cannot be entered on the
// bastion (its checkout is gone) is an infrastructure failure, retried,
// not a FAILURE of the job; a job that itself exits 97 is still the job's
// status.
func TestMissingDirIsInfra(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	ctx := context.Background()
	o, log, err := run(t, b, ctx, bastion.Spec{Command: "true", Dir: "/nonexistent/sortie/src/x"})
	if err == nil || !bastion.IsInfra(err) || !strings.Contains(log, "cannot enter /nonexistent/sortie/src/x") {
		t.Fatalf("missing dir: %+v %v %q; want an infrastructure failure", o, err, log)
	}
	o, _, err = run(t, b, ctx, bastion.Spec{Command: "exit 97"})
	if err != nil || o.ExitCode != 97 {
		t.Fatalf("exit 97: %+v %v; want the job's status", o, err)
	}
}

// heldProxy forwards TCP connections to addr, each only once release is
// closed: a dial through it stays in the middle for as long as the test
// wants. accepted receives each connection as it arrives; ended is
// closed once the first forwarded connection has been closed by both ends.
type heldProxy struct {
	addr     string
	accepted chan struct{}
	ended    chan struct{}
}

func startHeldProxy(t *testing.T, target string, release <-chan struct{}) *heldProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &heldProxy{addr: ln.Addr().String(), accepted: make(chan struct{}, 1), ended: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	keep := func(c net.Conn) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns { // a failed test may have left them open
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		in, err := ln.Accept()
		if err != nil {
			return
		}
		keep(in)
		defer in.Close()
		p.accepted <- struct{}{}
		<-release
		out, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		keep(out)
		defer out.Close()
		var copies sync.WaitGroup
		copies.Add(2)
		go func() { defer copies.Done(); io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
		go func() { defer copies.Done(); io.Copy(in, out); in.(*net.TCPConn).CloseWrite() }()
		copies.Wait()
		close(p.ended)
	}()
	return p
}

// TestCloseDuringDial: a Close that comes while the first connection is
// being dialled wins. The dial's connection is closed as soon as it is
// made, the build that asked for it gets an infrastructure error, and no
// watcher of that connection outlives Close (goleak checks in TestMain).
func TestCloseDuringDial(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	release := make(chan struct{})
	proxy := startHeldProxy(t, srv.Addr(), release)
	host, port, _ := net.SplitHostPort(proxy.addr)
	portN, _ := strconv.Atoi(port)
	b, err := ssh.New(ssh.Config{
		Host: host, Port: portN, User: srv.User, IdentityFile: srv.IdentityFile,
		KnownHosts: srv.KnownHostsFor(t, proxy.addr), Workdir: filepath.Join(t.TempDir(), "bastion"),
		Keepalive: 500 * time.Millisecond, DialTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		o   bastion.Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := b.Run(context.Background(), bastion.Spec{Command: "true"}, io.Discard)
		done <- result{o, err}
	}()
	select {
	case <-proxy.accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the bastion never dialled")
	}
	if err := b.Close(); err != nil { // returns at once: nothing is connected yet
		t.Fatal(err)
	}
	close(release)
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Run never returned after Close")
	}
	var infra *bastion.InfraError
	if !errors.As(r.err, &infra) || !strings.Contains(r.err.Error(), "closed") {
		t.Fatalf("Run after a Close during its dial: %+v, %v; want an InfraError saying the bastion is closed", r.o, r.err)
	}
	select {
	case <-proxy.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection dialled during Close was kept open")
	}
}
