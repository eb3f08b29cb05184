// Package sshtest runs a real OpenSSH sshd on loopback for tests.
//
// Start gives each test its own sshd with fresh host and user keys, a
// known_hosts file that pins the host key, and the arguments the OpenSSH
// client needs to reach it non-interactively. Stop and Restart simulate a
// bastion that goes away mid-run and comes back on the same address.
//
// The package is Linux-only: it finds sshd's per-connection processes
// through /proc.
package sshtest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SSHDPath is where the server binary must be: sshd refuses to run unless
// started by an absolute path, because it re-executes itself.
const SSHDPath = "/usr/sbin/sshd"

const (
	// notInstalled is the message for a machine without sshd; .ci/run
	// installs openssh-server, so CI fails with it instead of skipping.
	notInstalled = "sshd not installed: apt-get install openssh-server (see .ci/run)"

	readyTimeout = 10 * time.Second // sshd up and sending its banner
	stopTimeout  = 10 * time.Second // listener gone after SIGTERM, before SIGKILL
	startTries   = 5                // fresh ports tried when the port is taken
)

// Server is a running (or stopped) sshd on 127.0.0.1. Its exported fields
// are set by Start and not changed afterwards; do not modify them.
// Stop and Restart may be called from any goroutine.
type Server struct {
	// Host is the address sshd listens on: "127.0.0.1".
	Host string
	// Port is the TCP port; Restart keeps it.
	Port int
	// User is the current user's name, the only one sshd lets in.
	User string
	// IdentityFile is the path of the client's private key.
	IdentityFile string
	// KnownHosts is the path of an OpenSSH known_hosts file holding the
	// server's real host key for [127.0.0.1]:Port.
	KnownHosts string
	// Dir is the temporary directory holding keys, config and sshd.log.
	Dir string

	config  string // sshd_config path
	logPath string // sshd's stderr, appended to by every run
	hostKey string // "ssh-ed25519 AAAA..." of the real host key

	mu        sync.Mutex
	run       *run   // nil while stopped
	wrongHost string // public key for WrongKnownHosts, made on first use
}

// run is one sshd process, from start to exit.
type run struct {
	proc    *os.Process
	logFrom int64         // offset of this run's output in sshd.log
	exited  chan struct{} // closed once the process is waited for
	waitErr error         // set before exited is closed
}

// Start starts an sshd on a free loopback port and returns once it sends
// its SSH banner. The server is stopped by t.Cleanup. If sshd is not
// installed, Start skips the test, or fails it when the CI environment
// variable is set.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(SSHDPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(notInstalled)
		}
		t.Skip(notInstalled)
	}
	if os.Geteuid() == 0 {
		// sshd running as root chroots its unprivileged child here.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("sshtest: privilege separation directory: %v", err)
		}
	}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("sshtest: current user: %v", err)
	}

	dir := t.TempDir()
	s := &Server{
		Host:         "127.0.0.1",
		User:         u.Username,
		IdentityFile: filepath.Join(dir, "id_ed25519"),
		KnownHosts:   filepath.Join(dir, "known_hosts"),
		Dir:          dir,
		config:       filepath.Join(dir, "sshd_config"),
		logPath:      filepath.Join(dir, "sshd.log"),
	}
	hostKeyFile := filepath.Join(dir, "ssh_host_ed25519_key")
	s.hostKey = keygen(t, hostKeyFile)
	userKey := keygen(t, s.IdentityFile)
	writeFile(t, filepath.Join(dir, "authorized_keys"), userKey+"\n")
	// Registered before the first start so that a failed start is cleaned up
	// too; it runs before t.TempDir's removal.
	t.Cleanup(s.Stop)

	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []string
	for range startTries {
		s.Port = freePort(t)
		writeFile(t, s.config, s.sshdConfig(hostKeyFile))
		writeFile(t, s.KnownHosts, s.knownHostsLine(s.hostKey))
		r, err := s.start()
		if err == nil {
			s.run = r
			return s
		}
		errs = append(errs, err.Error())
		if !bindFailed(err) {
			break
		}
	}
	t.Fatalf("sshtest: start sshd:\n%s", strings.Join(errs, "\n"))
	return nil
}

// Restart starts sshd again on the same port with the same keys, stopping
// it first if it is running, and returns once it sends its banner. It is
// how a test brings a bastion back after an outage made with Stop.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	// The port may still be held briefly (or taken by someone else): retry
	// on a bind failure until the deadline.
	deadline := time.Now().Add(readyTimeout)
	for {
		r, err := s.start()
		if err == nil {
			s.run = r
			return
		}
		if !bindFailed(err) || time.Now().After(deadline) {
			t.Fatalf("sshtest: restart sshd on %s: %v", s.Addr(), err)
		}
		pause(50 * time.Millisecond)
	}
}

// Stop stops sshd and drops every connection it has: it freezes the
// listener and all its descendants (per-connection sshd processes and the
// commands they run), kills the descendants, then sends SIGTERM to the
// listener and waits for it. Stop is idempotent and safe after a failed
// start; Restart starts the server again.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

// Addr returns "127.0.0.1:PORT".
func (s *Server) Addr() string {
	return net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// SSHArgs returns arguments for the OpenSSH client that reach the server
// non-interactively, checking its host key strictly against KnownHosts and
// reading no ssh_config. The last one is user@host, so a remote command can
// be appended: exec.Command("ssh", append(s.SSHArgs(), "true")...).
func (s *Server) SSHArgs() []string {
	return []string{
		"-F", "none",
		"-p", strconv.Itoa(s.Port),
		"-i", s.IdentityFile,
		"-o", "UserKnownHostsFile=" + s.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "IdentitiesOnly=yes",
		s.User + "@" + s.Host,
	}
}

// WrongKnownHosts writes and returns the path of a known_hosts file that
// holds a different ed25519 key for [127.0.0.1]:Port, as if the host key
// had changed.
func (s *Server) WrongKnownHosts(t testing.TB) string {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrongHost == "" {
		s.wrongHost = keygen(t, filepath.Join(s.Dir, "wrong_host_ed25519_key"))
	}
	path := filepath.Join(s.Dir, "known_hosts.wrong")
	writeFile(t, path, s.knownHostsLine(s.wrongHost))
	return path
}

// KnownHostsFor writes and returns the path of a known_hosts file that
// holds the server's real host key for addr ("host:port"), for a client
// that reaches the server through a forwarder listening there.
func (s *Server) KnownHostsFor(t testing.TB, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	key := s.hostKey
	s.mu.Unlock()
	path := filepath.Join(s.Dir, "known_hosts."+port)
	writeFile(t, path, fmt.Sprintf("[%s]:%s %s\n", host, port, key))
	return path
}

// UnknownKnownHosts writes and returns the path of an empty known_hosts
// file, for a client that has never seen the server.
func (s *Server) UnknownKnownHosts(t testing.TB) string {
	t.Helper()
	path := filepath.Join(s.Dir, "known_hosts.empty")
	writeFile(t, path, "")
	return path
}

func (s *Server) sshdConfig(hostKeyFile string) string {
	return strings.Join([]string{
		"Port " + strconv.Itoa(s.Port),
		"ListenAddress " + s.Host,
		"HostKey " + hostKeyFile,
		"AuthorizedKeysFile " + filepath.Join(s.Dir, "authorized_keys"),
		"PidFile " + filepath.Join(s.Dir, "sshd.pid"),
		"StrictModes no",
		"UsePAM no",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"AllowUsers " + s.User,
		"MaxSessions 100",
		// A deploy user's shell should start light. bash sources ~/.bashrc
		// for every command run over SSH unless SHLVL says it is nested;
		// this machine's root .bashrc runs pyenv init (~90 ms a build).
		"SetEnv SHLVL=1",
		"MaxStartups 100:30:200",
		"LogLevel ERROR",
		"Subsystem sftp internal-sftp",
	}, "\n") + "\n"
}

func (s *Server) knownHostsLine(key string) string {
	return fmt.Sprintf("[%s]:%d %s\n", s.Host, s.Port, key)
}

// start runs sshd and waits until it sends its banner. On failure the
// process is stopped and the error carries this run's sshd output.
// s.mu must be held.
func (s *Server) start() (*run, error) {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sshd log: %w", err)
	}
	defer logf.Close() // sshd holds its own descriptor
	fi, err := logf.Stat()
	if err != nil {
		return nil, fmt.Errorf("sshd log: %w", err)
	}
	r := &run{logFrom: fi.Size(), exited: make(chan struct{})}

	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", s.config)
	// A file, not a pipe: per-connection sshd processes inherit stderr, and
	// with a pipe Wait would not return until every connection had ended.
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Keeps terminal signals meant for go test away from sshd; Stop
		// ends it. Note that the per-connection processes are not in this
		// group: sshd calls setsid() in each, and again for each command.
		Setpgid: true,
	}
	// If the test binary dies (panic, timeout) before cleanup, the
	// listener must not outlive it.
	DieWithParent(cmd.SysProcAttr)
	started := make(chan error, 1)
	// The goroutine lives exactly as long as sshd and is waited for through
	// r.exited by stop. It keeps its OS thread because Pdeathsig fires when
	// the thread that started the child exits, not the process.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		r.waitErr = cmd.Wait()
		close(r.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", SSHDPath, err)
	}
	r.proc = cmd.Process

	if err := waitReady(s.Addr(), r.exited, time.Now().Add(readyTimeout)); err != nil {
		r.stop()
		return nil, &startError{err: err, log: s.logSince(r.logFrom)}
	}
	return r, nil
}

// stopLocked stops the current run, if any. s.mu must be held.
func (s *Server) stopLocked() {
	if s.run != nil {
		s.run.stop()
		s.run = nil
	}
}

func (s *Server) logSince(off int64) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(reading sshd log: %v)", err)
	}
	if off > int64(len(b)) {
		off = 0
	}
	return string(b[off:])
}

// stop ends the listener and every process below it, and waits for the
// listener. Killing the listener's process group is not enough: sshd puts
// each connection in a session of its own, and SIGTERM to a `sshd -D`
// closes the listening socket but leaves established connections running.
func (r *run) stop() {
	select {
	case <-r.exited:
		return
	default:
	}
	// Freeze first so that nothing forks while the tree is collected: a
	// stopped listener accepts nothing, a stopped sshd starts no command.
	if r.proc.Signal(syscall.SIGSTOP) == nil {
		for _, pid := range freezeDescendants(r.proc.Pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	_ = r.proc.Signal(syscall.SIGTERM)
	_ = r.proc.Signal(syscall.SIGCONT)
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-r.exited:
	case <-timer.C:
		_ = r.proc.Signal(syscall.SIGKILL)
		<-r.exited
	}
}

// freezeDescendants sends SIGSTOP to every descendant of pid, rescanning
// until no new one appears, and returns them. Stopped processes stay alive
// (they cannot exit or be reaped), so their pids stay theirs until killed.
func freezeDescendants(pid int) []int {
	frozen := map[int]bool{}
	var order []int
	for {
		found := false
		for _, p := range descendants(pid) {
			if !frozen[p] {
				frozen[p] = true
				order = append(order, p)
				_ = syscall.Kill(p, syscall.SIGSTOP)
				found = true
			}
		}
		if !found {
			return order
		}
	}
}

// descendants lists the processes below pid, read from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := parentOf(p); ok {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// parentOf reads the parent pid from /proc/PID/stat, whose second field
// (the command name in parentheses) may itself hold spaces and parentheses.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	fields := strings.Fields(string(b[i+1:])) // state, ppid, ...
	if len(fields) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(fields[1])
	return ppid, err == nil
}

// waitReady polls addr until it accepts a connection and sends an SSH
// banner, the process exits, or the deadline passes.
func waitReady(addr string, exited <-chan struct{}, deadline time.Time) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	for {
		err := probe(addr, deadline)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errExited
		case <-timeout.C:
			return fmt.Errorf("no SSH banner on %s within %v: %w", addr, readyTimeout, err)
		case <-tick.C:
		}
	}
}

// probe connects, reads the server's banner and sends one back, so that
// sshd sees a well-behaved client hang up rather than logging a failed
// key exchange.
func probe(addr string, deadline time.Time) error {
	conn, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read banner: %w", err)
	}
	if !strings.HasPrefix(line, "SSH-") {
		return fmt.Errorf("not an SSH banner: %q", line)
	}
	_, _ = conn.Write([]byte("SSH-2.0-sshtest_probe\r\n"))
	return nil
}

var errExited = fmt.Errorf("sshd exited")

// startError is a failed start with sshd's own output.
type startError struct {
	err error
	log string
}

func (e *startError) Error() string {
	return fmt.Sprintf("%v\nsshd output:\n%s", e.err, e.log)
}

// bindFailed reports whether sshd could not bind its port, the one failure
// worth retrying.
func bindFailed(err error) bool {
	se, ok := err.(*startError)
	return ok && (strings.Contains(se.log, "Address already in use") ||
		strings.Contains(se.log, "Cannot bind any address"))
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before sshd binds it; callers retry on a bind failure.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("sshtest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// keygen makes an ed25519 key pair at path and returns the public key as
// "ssh-ed25519 AAAA...", without the comment.
func keygen(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sshtest", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("sshtest: ssh-keygen %s: %v\n%s", path, err, out)
	}
	pub, err := os.ReadFile(path + ".pub")
	if err != nil {
		t.Fatalf("sshtest: %v", err)
	}
	f := strings.Fields(string(pub))
	if len(f) < 2 {
		t.Fatalf("sshtest: malformed public key %s: %q", path+".pub", pub)
	}
	return f[0] + " " + f[1]
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("sshtest: %v", err)
	}
}

// pause waits between retries of a bind that failed; there is no event to
// wait on for a port becoming free.
func pause(d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	<-timer.C
}

// Hang stops (SIGSTOP) the sshd processes that serve established
// connections, so that they answer nothing, as a congested or hung link
// would; the listener and the commands the connections run are left alone.
// It returns what resumes them (SIGCONT); the test must call it.
func (s *Server) Hang(t testing.TB) (resume func()) {
	t.Helper()
	s.mu.Lock()
	r := s.run
	s.mu.Unlock()
	if r == nil {
		t.Fatal("sshtest: Hang: the server is stopped")
	}
	var stopped []int
	for _, pid := range descendants(r.proc.Pid) {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err == nil && strings.HasPrefix(string(comm), "sshd") {
			if syscall.Kill(pid, syscall.SIGSTOP) == nil {
				stopped = append(stopped, pid)
			}
		}
	}
	if len(stopped) == 0 {
		t.Fatal("sshtest: Hang: no connection to hang")
	}
	return func() {
		for _, pid := range stopped {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
}
