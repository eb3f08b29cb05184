package ssh_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/ssh"
	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuf is a log that tests can read while a build writes to it.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newBastion(t *testing.T, srv *sshtest.Server, knownHosts string) *ssh.Bastion {
	t.Helper()
	return newBastionKeepalive(t, srv, knownHosts, 500*time.Millisecond)
}

func newBastionKeepalive(t *testing.T, srv *sshtest.Server, knownHosts string, keepalive time.Duration) *ssh.Bastion {
	t.Helper()
	b, err := ssh.New(ssh.Config{
		Host: srv.Host, Port: srv.Port, User: srv.User, IdentityFile: srv.IdentityFile,
		KnownHosts: knownHosts, Workdir: filepath.Join(t.TempDir(), "bastion"),
		Keepalive: keepalive, DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func run(t *testing.T, b *ssh.Bastion, ctx context.Context, spec bastion.Spec) (bastion.Outcome, string, error) {
	t.Helper()
	var log syncBuf
	o, err := b.Run(ctx, spec, &log)
	return o, log.String(), err
}

func TestRunExitCodesOutputAndEnv(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	ctx := context.Background()
	o, log, err := run(t, b, ctx, bastion.Spec{Command: "echo out; echo err >&2; exit 3"})
	if err != nil || o.ExitCode != 3 || log != "out\nerr\n" {
		t.Fatalf("%+v %v %q", o, err, log)
	}
	secret := "s3cret value with 'quotes' and $dollars"
	o, log, err = run(t, b, ctx, bastion.Spec{
		Command: `printf '%s|%s|%s\n' "$TOKEN" "$SORTIE_JOB" "${SSH_CONNECTION:-unset}"; test -n "$HOME" && test -n "$PATH"`,
		Env:     map[string]string{"TOKEN": secret, "SORTIE_JOB": "a b"},
	})
	if err != nil || o.ExitCode != 0 || log != secret+"|a b|unset\n" {
		t.Fatalf("%+v %v %q", o, err, log)
	}
	// The secret travelled on stdin: no file with it stays behind.
	out, _ := exec.Command("grep", "-rl", "s3cret", b.Workdir()).CombinedOutput()
	if len(out) > 0 {
		t.Fatalf("secret left on the bastion in %s", out)
	}
}

func TestUnknownOrChangedHostKeyIsRefused(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	marker := filepath.Join(t.TempDir(), "ran")
	for name, kh := range map[string]string{"changed": srv.WrongKnownHosts(t), "unknown": srv.UnknownKnownHosts(t)} {
		b := newBastion(t, srv, kh)
		_, _, err := run(t, b, context.Background(), bastion.Spec{Command: "touch " + marker})
		if !bastion.IsInfra(err) {
			t.Fatalf("%s: %v, want an infrastructure error", name, err)
		}
		want := map[string]string{"changed": "CHANGED", "unknown": "is not in"}[name]
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to say %q", name, err, want)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a command ran on a bastion whose host key was not verified")
	}
	if _, err := ssh.New(ssh.Config{Host: "h", User: "u", IdentityFile: srv.IdentityFile}); err == nil || !strings.Contains(err.Error(), "known_hosts is required") {
		t.Fatalf("no known_hosts: %v", err)
	}
}

func pids(t *testing.T, file string) []int {
	t.Helper()
	data, _ := os.ReadFile(file)
	var out []int
	for _, f := range strings.Fields(string(data)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// gone: no such process, or a zombie nobody will reap in this sandbox.
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func assertGone(t *testing.T, ps []int, n int) {
	t.Helper()
	if len(ps) != n {
		t.Fatalf("recorded pids %v, want %d", ps, n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, p := range ps {
		for !gone(p) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still runs on the bastion", p)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// treeStarted is closed once tree(file) has recorded every pid. It stops
// looking when the test ends.
func treeStarted(t *testing.T, file string) <-chan struct{} {
	started, stop, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := os.Stat(file + ".started"); err == nil {
				close(started)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return started
}

// treeSize is the number of pids tree records.
const treeSize = 4

// tree starts two background sleepers (one ignoring TERM), a daemon (fork,
// setsid, fork: out of the build's group and session, and no descendant
// of sshd's) and a sleep in the foreground, recording every pid. It
// touches <file>.started once all are recorded: the children write their
// own, whenever they get to it.
func tree(file string) string {
	return fmt.Sprintf(`sleep 300 & echo $! >> %[1]s
sh -c 'trap "" TERM; echo $$ >> %[1]s; exec sleep 300' &
( setsid sh -c 'sh -c "echo \$\$ >> %[1]s; exec sleep 300" &' & )
echo $$ >> %[1]s
until [ "$(wc -l < %[1]s)" -ge %[2]d ]; do sleep 0.01; done
touch %[1]s.started
sleep 300`, file, treeSize)
}

func TestTimeoutEndsTheWholeTree(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	file := filepath.Join(t.TempDir(), "pids")
	// The timeout comes once the whole tree (a daemon among it) is up,
	// however long a loaded machine takes to start it over SSH.
	o, _, err := run(t, b, context.Background(), bastion.Spec{Command: tree(file), Expire: treeStarted(t, file), Grace: 300 * time.Millisecond})
	if err != nil || !o.TimedOut {
		t.Fatalf("%+v %v", o, err)
	}
	assertGone(t, pids(t, file), treeSize)

	// And spec.Timeout's own timer.
	o, _, err = run(t, b, context.Background(), bastion.Spec{Command: "sleep 300", Timeout: 200 * time.Millisecond, Grace: 300 * time.Millisecond})
	if err != nil || !o.TimedOut || o.ExitCode != -1 {
		t.Fatalf("a build of sleep 300 with a timeout of 200ms: %+v %v", o, err)
	}
}

func TestCancelEndsTheWholeTree(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	file := filepath.Join(t.TempDir(), "pids")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := treeStarted(t, file)
	go func() {
		select {
		case <-started:
			cancel()
		case <-ctx.Done():
		}
	}()
	o, _, err := run(t, b, ctx, bastion.Spec{Command: tree(file), Grace: 300 * time.Millisecond})
	if err != nil || !o.Canceled {
		t.Fatalf("%+v %v", o, err)
	}
	assertGone(t, pids(t, file), treeSize)
}

func TestStragglersOfASuccessfulBuildAreEnded(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	file := filepath.Join(t.TempDir(), "pids")
	for _, exit := range []int{0, 4} {
		os.Remove(file)
		cmd := fmt.Sprintf(`sleep 300 & echo $! >> %[1]s
sh -c 'trap "" TERM; echo $$ >> %[1]s; exec sleep 300' &
until [ "$(wc -l < %[1]s)" -ge 2 ]; do sleep 0.01; done; exit %[2]d`, file, exit)
		o, log, err := run(t, b, context.Background(), bastion.Spec{Command: cmd, Grace: 300 * time.Millisecond})
		if err != nil || o.ExitCode != exit || o.TimedOut || o.Canceled {
			t.Fatalf("exit %d: %+v %v", exit, o, err)
		}
		if !strings.Contains(log, "sortie: ending the processes the job left behind") {
			t.Errorf("the sweep did not say what it did: %q", log)
		}
		assertGone(t, pids(t, file), 2)
	}
}

func TestDroppedConnectionIsAnInfraFailureAndReconnects(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	file := filepath.Join(t.TempDir(), "pids")
	result := make(chan error, 1)
	go func() {
		_, _, err := run(t, b, context.Background(), bastion.Spec{Command: tree(file)})
		result <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(file + ".started"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the build never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Stop()
	select {
	case err := <-result:
		if !bastion.IsInfra(err) {
			t.Fatalf("%v, want an infrastructure error", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the build did not notice its connection dropped")
	}
	// While the bastion is down, every attempt is an infrastructure failure.
	if _, _, err := run(t, b, context.Background(), bastion.Spec{Command: "true"}); !bastion.IsInfra(err) {
		t.Fatalf("bastion down: %v", err)
	}
	srv.Restart(t)
	o, _, err := run(t, b, context.Background(), bastion.Spec{Command: "echo back"})
	if err != nil || o.ExitCode != 0 {
		t.Fatalf("after restart: %+v %v", o, err)
	}
	// The reconnect ended what the dropped build left running.
	assertGone(t, pids(t, file), treeSize)
}

func TestCheckoutShipsOnlyWhatTheBastionLacks(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	random := make([]byte, 100_000)
	rand.Read(random)
	big := hex.EncodeToString(random) // incompressible: the bundle cannot shrink it
	repo, shas := sourcetest.Repo(t, map[string]string{"big.txt": big, "v": "1"}, map[string]string{"v": "2"})
	ctx := context.Background()
	var log syncBuf
	dir1, err := b.Checkout(ctx, repo, "bs-1", shas[0], &log)
	if err != nil {
		t.Fatal(err, log.String())
	}
	_, first := b.Shipped()
	dir2, err := b.Checkout(ctx, repo, "bs-2", shas[1], &log)
	if err != nil {
		t.Fatal(err, log.String())
	}
	bundles, total := b.Shipped()
	second := total - first
	if bundles != 2 || first < 1000 || second*10 > first {
		t.Fatalf("shipped %d bytes then %d bytes (%d bundles): the second must carry only the new objects", first, second, bundles)
	}
	t.Logf("first bundle %d bytes, second %d bytes", first, second)
	// A third buildset at a commit the bastion has sends nothing.
	if _, err := b.Checkout(ctx, repo, "bs-3", shas[0], &log); err != nil {
		t.Fatal(err)
	}
	if n, _ := b.Shipped(); n != 2 {
		t.Fatalf("%d bundles after a checkout of a known commit", n)
	}
	for i, d := range []string{dir1, dir2} {
		out, _ := exec.Command("git", "-C", d, "rev-parse", "HEAD").Output()
		v, _ := os.ReadFile(filepath.Join(d, "v"))
		if strings.TrimSpace(string(out)) != shas[i] || string(v) != fmt.Sprint(i+1) {
			t.Errorf("checkout %s: HEAD %s, v %q", d, out, v)
		}
	}
	// Reusing a buildset's checkout works; a different commit is refused.
	if d, err := b.Checkout(ctx, repo, "bs-1", shas[0], &log); err != nil || d != dir1 {
		t.Fatalf("reuse: %q %v", d, err)
	}
	if _, err := b.Checkout(ctx, repo, "bs-1", shas[1], &log); err == nil {
		t.Fatal("bs-1 was checked out again at another commit")
	}
}

func TestConcurrentCheckoutsAndFinish(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	repo, shas := sourcetest.Repo(t, map[string]string{"v": "1"}, map[string]string{"v": "2"}, map[string]string{"v": "3"})
	ctx := context.Background()
	var wg sync.WaitGroup
	dirs := make([]string, 6)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var log syncBuf
			d, err := b.Checkout(ctx, repo, fmt.Sprint("bs-", i), shas[i%3], &log)
			if err != nil {
				t.Errorf("checkout %d: %v\n%s", i, err, log.String())
			}
			dirs[i] = d
		}()
	}
	wg.Wait()
	for i, d := range dirs {
		v, _ := os.ReadFile(filepath.Join(d, "v"))
		if string(v) != fmt.Sprint(i%3+1) {
			t.Errorf("bs-%d sees v=%q", i, v)
		}
	}
	// Finish bs-0..bs-3 keeping 2: the oldest finished go, unfinished stay.
	for i := range 4 {
		if err := b.Finish(ctx, fmt.Sprint("bs-", i), 2); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond) // distinct mtimes for "newest"
	}
	for i, d := range dirs {
		_, err := os.Stat(d)
		if exists, want := err == nil, i >= 2; exists != want {
			t.Errorf("bs-%d exists=%v, want %v", i, exists, want)
		}
	}
}

func TestInstallOnceAcrossSortieProcesses(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	workdir := filepath.Join(t.TempDir(), "shared")
	counter := filepath.Join(t.TempDir(), "count")
	// Two bastions on one workdir: two Sortie processes sharing a bastion.
	mk := func() *ssh.Bastion {
		b, err := ssh.New(ssh.Config{Host: srv.Host, Port: srv.Port, User: srv.User, IdentityFile: srv.IdentityFile,
			KnownHosts: srv.KnownHosts, Workdir: workdir})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	bs := []*ssh.Bastion{mk(), mk()}
	cmds := []string{"sleep 0.3", "echo $MARK >> " + counter}
	var wg sync.WaitGroup
	installed := make([]bool, 4)
	for i := range installed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var log syncBuf
			ok, err := bs[i%2].Install(context.Background(), cmds, map[string]string{"MARK": "x"}, &log)
			if err != nil {
				t.Errorf("install %d: %v\n%s", i, err, log.String())
			}
			installed[i] = ok
		}()
	}
	wg.Wait()
	data, _ := os.ReadFile(counter)
	if string(data) != "x\n" {
		t.Fatalf("install commands ran %q, want once", data)
	}
	n := 0
	for _, ok := range installed {
		if ok {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d installs said installed, want 1", n)
	}
	var log syncBuf
	if _, err := bs[0].Install(context.Background(), []string{"exit 5"}, nil, &log); err == nil || bastion.IsInfra(err) || !strings.Contains(log.String(), "install failed: exit status 5") {
		t.Fatalf("failing install: %v\n%s", err, log.String())
	}
}

// A cancel that comes while the build is still starting (before it wrote
// its pid file) must still end it.
func TestCancelRightAfterStart(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	dir := t.TempDir()
	for i, delay := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond} {
		file := filepath.Join(dir, fmt.Sprint("pids", i))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan bastion.Outcome, 1)
		go func() {
			// The grace is also how long a cancel waits for the build's
			// pid: ample for a slow session; sleep ends at TERM.
			o, _, _ := run(t, b, ctx, bastion.Spec{Command: fmt.Sprintf("echo $$ >> %s; exec sleep 300", file), Grace: 5 * time.Second})
			done <- o
		}()
		time.Sleep(delay) // the moment of the cancel is what this test varies
		cancel()
		select {
		case o := <-done:
			if !o.Canceled {
				t.Fatalf("delay %v: %+v", delay, o)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("delay %v: a cancel right after the start was lost", delay)
		}
		for _, p := range pids(t, file) {
			deadline := time.Now().Add(5 * time.Second)
			for !gone(p) {
				if time.Now().After(deadline) {
					t.Fatalf("delay %v: process %d still runs", delay, p)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
}

type failingLog struct{ n int }

func (f *failingLog) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk full")
}

// A log that cannot be written must not stall the build: the session is
// drained, or the remote job blocks on a full channel forever.
func TestFailingLogDoesNotHangTheBuild(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	var log failingLog
	done := make(chan error, 1)
	go func() {
		o, err := b.Run(context.Background(), bastion.Spec{Command: "head -c 8000000 /dev/zero; exit 3"}, &log)
		if err == nil && o.ExitCode != 3 {
			err = fmt.Errorf("exit %d", o.ExitCode)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a build whose log failed never finished")
	}
	if log.n != 1 {
		t.Errorf("the log was written %d times after failing", log.n)
	}
}
