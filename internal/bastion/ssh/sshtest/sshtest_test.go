package sshtest_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// sshClient returns the path of the OpenSSH client, which .ci/run installs.
func sshClient(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("ssh")
	if err != nil {
		const msg = "ssh not installed: apt-get install openssh-client (see .ci/run)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// ssh runs the OpenSSH client against s with extra options placed first
// (ssh keeps the first value it sees for an option) and returns its
// combined output.
func ssh(t *testing.T, s *sshtest.Server, opts []string, command string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	args := append(append(opts, s.SSHArgs()...), command)
	out, err := exec.CommandContext(ctx, sshClient(t), args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("ssh %q: %v", command, ctx.Err())
	}
	return string(out), err
}

func mustEcho(t *testing.T, s *sshtest.Server) {
	t.Helper()
	out, err := ssh(t, s, nil, "echo hello")
	if err != nil || out != "hello\n" {
		t.Fatalf("ssh echo hello: %v, output %q", err, out)
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	s := sshtest.Start(t)
	if s.Host != "127.0.0.1" || s.Addr() != "127.0.0.1:"+strconv.Itoa(s.Port) {
		t.Errorf("Host %q, Port %d, Addr %q", s.Host, s.Port, s.Addr())
	}
	mustEcho(t, s)
}

func TestWrongHostKey(t *testing.T) {
	t.Parallel()
	s := sshtest.Start(t)
	out, err := ssh(t, s, []string{"-o", "UserKnownHostsFile=" + s.WrongKnownHosts(t)}, "echo hello")
	if err == nil {
		t.Fatalf("ssh with a changed host key succeeded: %q", out)
	}
	if !strings.Contains(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") &&
		!strings.Contains(out, "Host key verification failed") {
		t.Errorf("ssh with a changed host key: %v, output:\n%s", err, out)
	}
	if strings.Contains(out, "hello") {
		t.Errorf("command ran despite a changed host key:\n%s", out)
	}
}

func TestUnknownHostKey(t *testing.T) {
	t.Parallel()
	s := sshtest.Start(t)
	out, err := ssh(t, s, []string{"-o", "UserKnownHostsFile=" + s.UnknownKnownHosts(t)}, "echo hello")
	if err == nil || !strings.Contains(out, "Host key verification failed") {
		t.Errorf("ssh to an unknown host: %v, output:\n%s", err, out)
	}
}

func TestStopDropsConnectionAndRestartAccepts(t *testing.T) {
	t.Parallel()
	s := sshtest.Start(t)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// The remote shell prints its pid and becomes sleep, so the test knows
	// which process must die with the connection.
	cmd := exec.CommandContext(ctx, sshClient(t), append(s.SSHArgs(), "echo $$; exec sleep 30")...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		cancel()
		_ = cmd.Wait()
		t.Fatalf("reading remote pid: %v; ssh stderr:\n%s", err, stderr.String())
	}
	remotePid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("remote pid: %v", err)
	}

	s.Stop()
	err = cmd.Wait()
	if ctx.Err() != nil {
		t.Fatalf("ssh kept running after Stop until killed: %v", ctx.Err())
	}
	if err == nil {
		t.Fatalf("ssh sleep 30 succeeded although sshd was stopped")
	}
	waitDead(t, remotePid)
	if c, err := net.Dial("tcp", s.Addr()); err == nil {
		c.Close()
		t.Fatalf("%s still accepts connections after Stop", s.Addr())
	}
	s.Stop() // idempotent

	port := s.Port
	s.Restart(t)
	if s.Port != port {
		t.Errorf("Restart moved the port from %d to %d", port, s.Port)
	}
	mustEcho(t, s) // same host key: KnownHosts still matches
	s.Restart(t)   // while running
	mustEcho(t, s)
}

// waitDead polls until pid has exited: gone, or a zombie nobody reaps
// (PID 1 in some sandboxes does not reap orphans).
func waitDead(t *testing.T, pid int) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err == nil {
			i := strings.LastIndexByte(string(b), ')')
			if f := strings.Fields(string(b[i+1:])); len(f) > 0 && f[0] == "Z" {
				return
			}
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("remote command (pid %d) survived Stop: %s", pid, b)
		}
	}
}

func TestTwoServers(t *testing.T) {
	t.Parallel()
	a := sshtest.Start(t)
	b := sshtest.Start(t)
	if a.Port == b.Port {
		t.Fatalf("both servers on port %d", a.Port)
	}
	mustEcho(t, a)
	mustEcho(t, b)
	// Each client trusts only its own server's key.
	out, err := ssh(t, b, []string{"-o", "UserKnownHostsFile=" + a.KnownHosts}, "echo hello")
	if err == nil {
		t.Errorf("b accepted with a's known_hosts: %q", out)
	}
}

// BenchmarkSSHTrue measures a full OpenSSH client round trip: connect, key
// exchange, authentication, run `true`.
func BenchmarkSSHTrue(b *testing.B) {
	s := sshtest.Start(b)
	client := sshClient(b)
	args := append(s.SSHArgs(), "true")
	for b.Loop() {
		if out, err := exec.Command(client, args...).CombinedOutput(); err != nil {
			b.Fatalf("ssh true: %v\n%s", err, out)
		}
	}
}
