package ssh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/ssh"
	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
)

// uniqueOwner is an owner id made of prefix and a random suffix. A
// KillOwner ends the owner's processes wherever they run on the bastion's
// host, and the tests of every package share this one.
func uniqueOwner(prefix string) string { return prefix + "-" + bastion.NewRunID()[:12] }

// ownerBastion is a bastion of srv with owner id owner on workdir.
func ownerBastion(t *testing.T, srv *sshtest.Server, workdir, owner string) *ssh.Bastion {
	t.Helper()
	b, err := ssh.New(ssh.Config{
		Host: srv.Host, Port: srv.Port, User: srv.User, IdentityFile: srv.IdentityFile,
		KnownHosts: srv.KnownHosts, Workdir: workdir, Owner: owner,
		Keepalive: 500 * time.Millisecond, DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// TestHelperSSHOwnerProcess is not a test: TestKillOwnerAfterTheOwnerDied
// runs the test binary again with it as a Sortie process that starts a
// build on the bastion and is SIGKILLed.
func TestHelperSSHOwnerProcess(t *testing.T) {
	env := os.Getenv("SORTIE_SSH_HELPER")
	if env == "" {
		t.Skip("helper process of TestKillOwnerAfterTheOwnerDied")
	}
	var cfg ssh.Config
	var pids string
	if _, err := fmt.Sscanf(env, "%s %d %s %s %s %s %s %s", &cfg.Host, &cfg.Port, &cfg.User, &cfg.IdentityFile,
		&cfg.KnownHosts, &cfg.Workdir, &cfg.Owner, &pids); err != nil {
		t.Fatal(err)
	}
	b, err := ssh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Run(context.Background(), bastion.Spec{Command: tree(pids)}, io.Discard)
	t.Fatalf("the build ended (%v): the helper was to be killed first", err)
}

// waitPids waits until file lists n pids.
func waitPids(t *testing.T, file string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if p := pids(t, file); len(p) >= n {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listed %d pids", file, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killAtCleanup kills pids when the test ends, in case it failed before
// they were ended.
func killAtCleanup(t *testing.T, pids *[]int) {
	t.Cleanup(func() {
		for _, p := range *pids {
			syscall.Kill(p, syscall.SIGKILL)
		}
	})
}

// parentOf returns the parent of process pid.
func parentOf(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state, ppid, ...
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, stat)
	}
	return ppid
}

func pidFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A Sortie process dies with a build running on the bastion; a new one,
// with another owner id and its own connection, ends what the dead one
// left there, and nothing of a live owner's. (sshtest's sshd runs on this
// machine, so the bastion's processes are visible in /proc here.)
func TestKillOwnerAfterTheOwnerDied(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	workdir := filepath.Join(t.TempDir(), "bastion")
	dir := t.TempDir()
	liveOwner, deadOwner, newOwner := uniqueOwner("run-live"), uniqueOwner("run-a"), uniqueOwner("srv-new")

	// A live owner's build, in this process.
	live := ownerBastion(t, srv, workdir, liveOwner)
	liveFile := filepath.Join(dir, "live")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	liveDone := make(chan bastion.Outcome, 1)
	go func() {
		o, _, err := run(t, live, ctx, bastion.Spec{Command: tree(liveFile), Grace: 300 * time.Millisecond})
		if err != nil {
			t.Error(err)
		}
		liveDone <- o
	}()
	lp := waitPids(t, liveFile, treeSize)
	killAtCleanup(t, &lp)

	// The owner that dies: a helper process with its own connection.
	deadFile := filepath.Join(dir, "dead")
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperSSHOwnerProcess$", "-test.count=1")
	helper.Env = append(os.Environ(), "SORTIE_SSH_HELPER="+strings.Join([]string{srv.Host, strconv.Itoa(srv.Port), srv.User,
		srv.IdentityFile, srv.KnownHosts, workdir, deadOwner, deadFile}, " "))
	helper.SysProcAttr = &syscall.SysProcAttr{}
	sshtest.DieWithParent(helper.SysProcAttr)
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	dp := waitPids(t, deadFile, treeSize)
	killAtCleanup(t, &dp)
	// The group's leader, the wrapper, is in the build's pid file.
	runA := filepath.Join(workdir, "run", deadOwner)
	files := pidFiles(t, runA)
	if len(files) != 1 {
		t.Fatalf("pid files of %s: %v", deadOwner, files)
	}
	rec, _ := os.ReadFile(filepath.Join(runA, files[0]))
	f := strings.Fields(string(rec))
	if len(f) != 3 {
		t.Fatalf("pid file %q: want group, start time and boot id", rec)
	}
	leader, _ := strconv.Atoi(f[0])
	dp = append(dp, leader)
	// The leader's parent is the sshd process of the helper's connection:
	// it exits once sshd has seen the connection go, and whatever that
	// does to the build has been done.
	conn := parentOf(t, leader)
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", conn)); !strings.HasPrefix(string(comm), "sshd") {
		t.Fatalf("the build's leader %d has parent %d (%q), not sshd", leader, conn, comm)
	}
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
	for deadline := time.Now().Add(10 * time.Second); !gone(conn); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sshd process %d of the dead helper's connection never exited", conn)
		}
	}
	for _, p := range dp {
		if gone(p) {
			t.Fatalf("process %d of the dead owner's build died with its connection: nothing to test", p)
		}
	}

	// The new process.
	b := ownerBastion(t, srv, workdir, newOwner)
	start := time.Now()
	if err := b.KillOwner(context.Background(), deadOwner, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	for _, p := range dp {
		if !gone(p) {
			t.Errorf("process %d of %s is alive after KillOwner", p, deadOwner)
		}
	}
	if took < 300*time.Millisecond {
		t.Errorf("KillOwner took %v: the TERM-ignoring sleeper needs KILL after the grace", took)
	}
	if _, err := os.Stat(runA); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("run/%s is still there (%v)", deadOwner, err)
	}
	if err := b.KillOwner(context.Background(), deadOwner, time.Second); err != nil {
		t.Errorf("second KillOwner: %v", err)
	}

	// The live owner's build runs on.
	for _, p := range lp {
		if gone(p) {
			t.Errorf("process %d of the live owner was ended", p)
		}
	}
	cancel()
	if o := <-liveDone; !o.Canceled {
		t.Errorf("live build: %+v", o)
	}
	assertGone(t, lp, treeSize)
	if files := pidFiles(t, filepath.Join(workdir, "run", liveOwner)); len(files) != 0 {
		t.Errorf("pid files of %s after its build: %v", liveOwner, files)
	}
}

// A pid file whose pid now belongs to another process (another start
// time), or that is of another boot, is dropped without a signal.
func TestKillOwnerSparesReusedPids(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	workdir := filepath.Join(t.TempDir(), "bastion")
	owner, newOwner := uniqueOwner("run-b"), uniqueOwner("srv-new")
	b := ownerBastion(t, srv, workdir, newOwner)
	sleeper := exec.Command("sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	}()
	pid := sleeper.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(stat)
	start, err := strconv.ParseUint(strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	bootB, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		t.Fatal(err)
	}
	boot := strings.TrimSpace(string(bootB))
	dir := filepath.Join(workdir, "run", owner)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"forged-start":  fmt.Sprintf("%d %d %s\n", pid, start+1, boot),
		"earlier-start": fmt.Sprintf("%d %d %s\n", pid, start-1, boot),
		"another-boot":  fmt.Sprintf("%d %d %s\n", pid, start, "00000000-0000-0000-0000-000000000000"),
		"old-format":    fmt.Sprintf("%d\n", pid),
		"init":          fmt.Sprintf("%d %d %s\n", 1, 0, boot),
		"group-gone":    fmt.Sprintf("%d %d %s\n", 2_000_000_000, 1, boot),
	} {
		if err := os.WriteFile(filepath.Join(dir, name+".pid"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.KillOwner(context.Background(), owner, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if gone(pid) {
		t.Fatalf("process %d, not the one recorded, was killed", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("run/%s is still there (%v)", owner, err)
	}

	// The true record: ended.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "x.pid"), fmt.Appendf(nil, "%d %d %s\n", pid, start, boot), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.KillOwner(context.Background(), owner, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if !gone(pid) {
		t.Fatalf("the recorded process %d is alive after KillOwner", pid)
	}

	// Bad or own owner ids are refused.
	for _, bad := range []string{"", "../x", "a/b", "-x", "a b", newOwner} {
		if err := b.KillOwner(context.Background(), bad, time.Second); err == nil {
			t.Errorf("KillOwner(%q) succeeded", bad)
		}
	}
	if _, err := ssh.New(ssh.Config{Host: srv.Host, User: srv.User, IdentityFile: srv.IdentityFile,
		KnownHosts: srv.KnownHosts, Owner: "../x"}); err == nil {
		t.Error("a bad owner id was accepted")
	}
}

// The builds of an owner leave no pid file behind: not a plain build, not
// one whose sweep had to KILL stragglers (itself included), not an
// install.
func TestOwnerPidFilesAreRemoved(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	workdir := filepath.Join(t.TempDir(), "bastion")
	owner := uniqueOwner("run-x")
	b := ownerBastion(t, srv, workdir, owner)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "pids")
	for _, cmd := range []string{"true", "exit 3",
		fmt.Sprintf(`sh -c 'trap "" TERM; echo $$ >> %[1]s; exec sleep 300' & while [ ! -s %[1]s ]; do sleep 0.01; done; exit 4`, file)} {
		if _, _, err := run(t, b, ctx, bastion.Spec{Command: cmd, Grace: 300 * time.Millisecond}); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	assertGone(t, pids(t, file), 1)
	if _, err := b.Install(ctx, []string{"true"}, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Install(ctx, []string{"true"}, nil, io.Discard); err != nil { // up to date
		t.Fatal(err)
	}
	if files := pidFiles(t, filepath.Join(workdir, "run", owner)); len(files) != 0 {
		t.Errorf("left in run/%s: %v", owner, files)
	}
}
