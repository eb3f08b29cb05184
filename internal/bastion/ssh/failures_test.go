package ssh_test

import (
	"context"
	"errors"
	"io"
	"net"
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

// TestKeepaliveToleratesASlowLink: a connection that answers keepalives
// late, but within three intervals (OpenSSH's ServerAliveCountMax), is
// kept, and the build running over it goes on; one silent for longer is
// dropped, and the build is an infrastructure failure.
func TestKeepaliveToleratesASlowLink(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts) // keepalive every 500ms
	ctx := context.Background()

	runHung := func(hang time.Duration) (bastion.Outcome, error) {
		done := make(chan struct{})
		var o bastion.Outcome
		var err error
		go func() {
			defer close(done)
			o, _, err = run(t, b, ctx, bastion.Spec{Command: "sleep 2"})
		}()
		time.Sleep(300 * time.Millisecond) // the build runs
		resume := srv.Hang(t)
		time.Sleep(hang)
		resume()
		<-done
		return o, err
	}
	// Silent for two intervals: kept.
	if o, err := runHung(time.Second); err != nil || o.ExitCode != 0 {
		t.Fatalf("build over a link silent for 2 keepalive intervals: %+v %v; want it kept", o, err)
	}
	// Silent for four and a half: dropped.
	o, err := runHung(2250 * time.Millisecond)
	if err == nil || !bastion.IsInfra(err) {
		t.Fatalf("build over a link silent for 4.5 keepalive intervals: %+v %v; want an infrastructure failure", o, err)
	}
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
