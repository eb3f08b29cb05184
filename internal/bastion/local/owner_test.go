//go:build linux

package local

import (
	"bytes"
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
)

// ownerTree starts a sleeper, a sleeper that ignores TERM, and waits,
// writing the pids of all three (its own last) to $PIDS. The second
// writes its own once it ignores TERM, and the shell writes its own once
// both are there, so that three pids mean all is set.
const ownerTree = `sleep 300 & echo $! >> "$PIDS"
sh -c 'trap "" TERM; echo $$ >> "$PIDS"; exec sleep 300' &
until [ "$(wc -l < "$PIDS")" -ge 2 ]; do sleep 0.01; done
echo $$ >> "$PIDS"
wait
`

// TestHelperOwnerProcess is not a test: TestKillOwner runs the test binary
// again with it as a Sortie process that starts a build and is SIGKILLed.
func TestHelperOwnerProcess(t *testing.T) {
	work := os.Getenv("SORTIE_HELPER_WORKDIR")
	if work == "" {
		t.Skip("helper process of TestKillOwner")
	}
	b := New(work)
	b.Owner = os.Getenv("SORTIE_HELPER_OWNER")
	_, err := b.Run(context.Background(), bastion.Spec{
		Command: ownerTree,
		Dir:     work,
		Env:     pathEnv("PIDS", os.Getenv("SORTIE_HELPER_PIDS")),
	}, io.Discard)
	t.Fatalf("the build ended (%v): the helper was to be killed first", err)
}

// uniqueOwner is an owner id made of prefix and a random suffix. A
// KillOwner ends the owner's tagged processes wherever they run on this
// machine, and the tests of every package share it.
func uniqueOwner(prefix string) string { return prefix + "-" + bastion.NewRunID()[:12] }

// killAtCleanup kills pids when the test ends, in case it failed before
// they were ended.
func killAtCleanup(t *testing.T, pids *[]int) {
	t.Cleanup(func() {
		for _, pid := range *pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

func recordsOf(t *testing.T, work, owner string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(work, "run", owner))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A Sortie process dies with a build running; a new one, with another
// owner id, ends what the dead one left, and nothing of a live owner's.
func TestKillOwner(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	dir := t.TempDir()
	liveOwner, deadOwner, newOwner := uniqueOwner("run-live"), uniqueOwner("run-a"), uniqueOwner("srv-new")

	// A live owner's build, in this process.
	live := New(work)
	live.Owner = liveOwner
	livePids := filepath.Join(dir, "live")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	liveDone := make(chan bastion.Outcome, 1)
	go func() {
		o, err := live.Run(ctx, bastion.Spec{Command: ownerTree, Dir: dir, Env: pathEnv("PIDS", livePids), Grace: grace}, io.Discard)
		if err != nil {
			t.Error(err)
		}
		liveDone <- o
	}()
	lp := waitPids(t, livePids, 3)
	killAtCleanup(t, &lp)

	// The owner that dies: a helper process.
	deadPids := filepath.Join(dir, "dead")
	helper := exec.Command(os.Args[0], "-test.run=^TestHelperOwnerProcess$", "-test.count=1")
	helper.Env = append(os.Environ(),
		"SORTIE_HELPER_WORKDIR="+work, "SORTIE_HELPER_OWNER="+deadOwner, "SORTIE_HELPER_PIDS="+deadPids)
	helper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	dp := waitPids(t, deadPids, 3)
	killAtCleanup(t, &dp)
	// The helper records the group once the process has started, and
	// the tree may have written its pids before: wait for the record too.
	eventually(t, "the record of "+deadOwner, func() bool { return len(recordsOf(t, work, deadOwner)) > 0 })
	if err := helper.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	helper.Wait()
	recs := recordsOf(t, work, deadOwner)
	if want := fmt.Sprintf("%d-", dp[2]); len(recs) != 1 || !strings.HasPrefix(recs[0], want) {
		t.Fatalf("records of %s: %v, want one %s...", deadOwner, recs, want)
	}
	for _, pid := range dp {
		if !alive(pid) {
			t.Fatalf("process %d of the dead owner's build died with it: nothing to test", pid)
		}
	}

	// The new process.
	b := New(work)
	b.Owner = newOwner
	start := time.Now()
	if err := b.KillOwner(context.Background(), deadOwner, grace); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	for _, pid := range dp {
		if alive(pid) {
			t.Errorf("process %d of %s is alive after KillOwner", pid, deadOwner)
		}
	}
	if took < grace {
		t.Errorf("KillOwner took %v: the TERM-ignoring sleeper needs KILL after the grace %v", took, grace)
	}
	if _, err := os.Stat(filepath.Join(work, "run", deadOwner)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("run/%s is still there (%v)", deadOwner, err)
	}
	// Again: nothing left is not an error.
	if err := b.KillOwner(context.Background(), deadOwner, grace); err != nil {
		t.Errorf("second KillOwner: %v", err)
	}

	// The live owner's build runs on, recorded.
	for _, pid := range lp {
		if !alive(pid) {
			t.Errorf("process %d of the live owner was ended", pid)
		}
	}
	if recs := recordsOf(t, work, liveOwner); len(recs) != 1 {
		t.Errorf("records of %s: %v", liveOwner, recs)
	}
	cancel()
	if o := <-liveDone; !o.Canceled {
		t.Errorf("live build: %+v", o)
	}
	assertGone(t, lp)
	// Its record went with its process group.
	if recs := recordsOf(t, work, liveOwner); len(recs) != 0 {
		t.Errorf("records of %s after the build: %v", liveOwner, recs)
	}
}

// A record whose pid now belongs to another process (another start time),
// or that is of another boot, is dropped without a signal.
func TestKillOwnerSparesReusedPids(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	owner := uniqueOwner("run-b")
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
	st, err := readProcStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := bootID()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(work, "run", owner)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"forged-start":   fmt.Sprintf("%d %d %s\n", pid, st.start+1, boot),
		"earlier-start":  fmt.Sprintf("%d %d %s\n", pid, st.start-1, boot),
		"another-boot":   fmt.Sprintf("%d %d %s\n", pid, st.start, "00000000-0000-0000-0000-000000000000"),
		"cut-short":      fmt.Sprintf("%d %d", pid, st.start),
		"not-a-record":   "hello\n",
		"group-gone":     fmt.Sprintf("%d %d %s\n", 2_000_000_000, 1, boot),
		"init-is-spared": fmt.Sprintf("%d %d %s\n", 1, 0, boot),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := New(work)
	if err := b.KillOwner(context.Background(), owner, grace); err != nil {
		t.Fatal(err)
	}
	if !alive(pid) {
		t.Fatalf("process %d, not the one recorded, was killed", pid)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("run/%s is still there (%v)", owner, err)
	}

	// The true record: ended.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	content := fmt.Sprintf("%d %d %s\n", pid, st.start, boot)
	if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(pid)), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.KillOwner(context.Background(), owner, grace); err != nil {
		t.Fatal(err)
	}
	if alive(pid) {
		t.Fatalf("the recorded process %d is alive after KillOwner", pid)
	}
	if err := sleeper.Wait(); err == nil || !strings.Contains(err.Error(), "terminated") {
		t.Errorf("the recorded sleeper: %v, want it terminated", err)
	}
}

func TestOwnerIDs(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	b := New(work)
	ctx := context.Background()
	for _, bad := range []string{"", "../x", "a/b", "-x", "a b", ".", strings.Repeat("a", 101)} {
		if err := b.KillOwner(ctx, bad, grace); err == nil {
			t.Errorf("KillOwner(%q) succeeded", bad)
		}
		if bad == "" {
			continue
		}
		b.Owner = bad
		marker := filepath.Join(t.TempDir(), "ran")
		if _, err := b.Run(ctx, bastion.Spec{Command: "touch " + marker, Env: pathEnv()}, nil); !bastion.IsInfra(err) {
			t.Errorf("Run with owner %q: %v, want an InfraError", bad, err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Errorf("Run with owner %q ran", bad)
		}
	}
	b.Owner = "srv-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
	if err := b.KillOwner(ctx, b.Owner, grace); err == nil {
		t.Error("KillOwner of its own owner id succeeded")
	}
	// Runs and installs leave no record behind.
	if o, err := b.Run(ctx, bastion.Spec{Command: "sleep 300 & exit 0", Env: pathEnv(), Grace: grace}, nil); err != nil || o.ExitCode != 0 {
		t.Fatalf("Run: %+v %v", o, err)
	}
	if _, err := b.Install(ctx, []string{"true"}, pathEnv(), nil); err != nil {
		t.Fatal(err)
	}
	if recs := recordsOf(t, work, b.Owner); len(recs) != 0 {
		t.Errorf("records left: %v", recs)
	}
	if err := bastion.CheckOwner("run-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"); err != nil {
		t.Error(err)
	}
}

// TestKillOwnerFindsUnrecordedGroups: a Sortie killed between starting a
// build and writing its record leaves a group no record names; KillOwner
// finds it by the owner tag in its processes' environment, and leaves
// another owner's alone.
func TestKillOwnerFindsUnrecordedGroups(t *testing.T) {
	t.Parallel()
	start := func(owner string) (*exec.Cmd, chan error) {
		cmd := exec.Command("/bin/sh", "-c", "sleep 300 & wait")
		cmd.Env = []string{"PATH=/usr/bin:/bin", OwnerEnv + "=" + owner}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-exited })
		return cmd, exited
	}
	lost := uniqueOwner("run-lost")
	_, exited := start(lost)
	other, _ := start(uniqueOwner("run-other"))

	b := New(t.TempDir())
	b.Owner = uniqueOwner("srv-new")
	if err := b.KillOwner(context.Background(), lost, time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatalf("the unrecorded group of %s is still alive", lost)
	}
	if err := syscall.Kill(other.Process.Pid, 0); err != nil {
		t.Errorf("another owner's process was ended: %v", err)
	}
	// Its child too: the whole group went.
	groups, err := tagged(lost)
	if err != nil || len(groups) != 0 {
		t.Errorf("tagged groups left: %v %v", groups, err)
	}
}

// TestOwnerTag: a bastion with an Owner tags what it starts; without one,
// the environment is exactly the job's.
func TestOwnerTag(t *testing.T) {
	t.Parallel()
	b := New(t.TempDir())
	b.Owner = "srv-tag"
	var log bytes.Buffer
	if _, err := b.Run(context.Background(), bastion.Spec{Command: "env", Dir: t.TempDir()}, &log); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), OwnerEnv+"=srv-tag\n") {
		t.Errorf("no owner tag in %q", log.String())
	}
}
