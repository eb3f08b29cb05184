// Package bastiontest is the conformance suite of bastion.Bastion: the
// tests every kind of bastion must pass, run against the local and the SSH
// bastion so that the two cannot drift apart.
//
// The suite watches the bastion's processes through this machine's /proc,
// so the bastion must run here (sshtest's sshd does).
package bastiontest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// NewHost makes what the bastions of one test share (a work directory; for
// SSH, an sshd) and returns a function that makes a bastion on it with the
// given owner id ("" for none). Everything it makes is cleaned up by t.
type NewHost func(t *testing.T) func(owner string) bastion.Bastion

// Run runs the suite. Its tests run in parallel, each on a host of its own.
func Run(t *testing.T, newHost NewHost) {
	t.Run("Events", func(t *testing.T) {
		t.Parallel()
		testEvents(t, newHost)
	})
	t.Run("EscapeesEnded", func(t *testing.T) {
		t.Parallel()
		for _, esc := range escapes {
			for _, end := range []ending{timedOut, canceled, killedOwner} {
				t.Run(esc.name+"/"+string(end), func(t *testing.T) {
					t.Parallel()
					testEscapee(t, newHost, esc.start, end)
				})
			}
		}
	})
}

// grace is the builds' grace between TERM and KILL.
const grace = 300 * time.Millisecond

// escapes are the ways a job's process outlives the job's own process
// group or session, or its parent. Each starts $child, which writes its
// pid to $ESCAPEE and then sleeps.
var escapes = []struct{ name, start string }{
	{"setsid", `setsid sh -c "$child" &`},
	{"setsid ignoring TERM", `setsid sh -c "trap '' TERM; $child" &`},
	{"double fork", `( ( sh -c "$child" & ) & )`},
	// fork, setsid, fork: how a daemon detaches.
	{"daemon", `( setsid sh -c "sh -c '$child' &" & )`},
	{"nohup", `nohup sh -c "$child" &`},
}

// script is a job that starts an escapee, waits until it is up, then
// sleeps in the foreground.
func script(start string) string {
	return `child='echo $$ > "$ESCAPEE"; exec sleep 1000'
` + start + `
while [ ! -s "$ESCAPEE" ]; do sleep 0.01; done
sleep 1000
`
}

// ending is how the build is ended.
type ending string

const (
	timedOut    ending = "timeout"
	canceled    ending = "cancel"
	killedOwner ending = "KillOwner"
)

// A build that started a process that left its group (or its parent) is
// ended by a timeout, a cancel or KillOwner: afterwards neither that
// process nor anything carrying the build's run id (or, for KillOwner, its
// owner's id) is alive. A bystander build of the same bastion (for
// KillOwner, of an owner whose id starts with the dead one's) keeps its
// escapee. KillOwner is called here while the owner's Run still waits, as
// a dead owner's would if it were alive: it acts on the bastion's records
// and the processes' environment, never on the owner process itself.
func testEscapee(t *testing.T, newHost NewHost, start string, end ending) {
	host := newHost(t)
	// Owner ids are unique: a KillOwner ends the owner's processes
	// wherever they run on the host, other tests' included.
	owner := "run-" + bastion.NewRunID()
	b := host(owner)
	spec := bastion.Spec{Command: script(start), Grace: grace}
	// The timeout comes once the escapee is up, however long a loaded
	// machine takes to start it: a timer could come first.
	expire := make(chan struct{})
	if end == timedOut {
		spec.Expire = expire
	}
	target := startBuild(t, b, spec)

	bystanderOwner := owner
	if end == killedOwner {
		bystanderOwner = owner + "b"
	}
	bystander := startBuild(t, host(bystanderOwner), bastion.Spec{Command: script(start), Grace: grace})

	esc := target.escapee(t)
	spared := bystander.escapee(t)
	if esc.runID == "" {
		t.Errorf("the escapee carries no %s", bastion.RunEnv)
	}
	if esc.owner != owner {
		t.Errorf("the escapee carries %s=%q, want %q", bastion.OwnerEnv, esc.owner, owner)
	}
	if spared.runID == esc.runID {
		t.Errorf("two builds share the run id %q", esc.runID)
	}

	switch end {
	case timedOut:
		close(expire)
	case canceled:
		target.cancel()
	case killedOwner:
		if err := host("srv-"+bastion.NewRunID()).KillOwner(context.Background(), owner, grace); err != nil {
			t.Fatalf("KillOwner: %v", err)
		}
		// KillOwner waits until the processes are gone.
		if esc.alive() {
			t.Errorf("the escapee (pid %d) is alive after KillOwner", esc.pid)
		}
	}
	r := target.wait(t)
	switch {
	case end == timedOut && (r.err != nil || !r.o.TimedOut):
		t.Errorf("Run: %+v, %v; want TimedOut", r.o, r.err)
	case end == canceled && (r.err != nil || !r.o.Canceled):
		t.Errorf("Run: %+v, %v; want Canceled", r.o, r.err)
	}
	waitGone(t, esc, "the escapee")
	if esc.runID != "" {
		waitNoneCarries(t, bastion.RunEnv+"="+esc.runID)
	}
	if end == killedOwner {
		waitNoneCarries(t, bastion.OwnerEnv+"="+owner)
	}

	if !spared.alive() {
		t.Errorf("the bystander's escapee (pid %d) was ended too", spared.pid)
	}
	bystander.cancel()
	bystander.wait(t)
	waitGone(t, spared, "the bystander's escapee")
}

// build is a Run in progress.
type build struct {
	file   string // where the escapee writes its pid
	cancel context.CancelFunc
	done   chan result // receives Run's result once
	got    *result     // Run's result, once received
}

type result struct {
	o   bastion.Outcome
	err error
}

// startBuild starts Run of spec on b, with $ESCAPEE set, in a goroutine
// that the test's cleanup cancels and waits for.
func startBuild(t *testing.T, b bastion.Bastion, spec bastion.Spec) *build {
	dir := t.TempDir()
	bd := &build{file: filepath.Join(dir, "escapee"), done: make(chan result, 1)}
	spec.Dir = dir
	spec.Env = map[string]string{"ESCAPEE": bd.file}
	ctx, cancel := context.WithCancel(context.Background())
	bd.cancel = cancel
	go func() {
		o, err := b.Run(ctx, spec, io.Discard)
		bd.done <- result{o, err}
	}()
	t.Cleanup(func() {
		cancel()
		if bd.got == nil {
			<-bd.done
		}
	})
	return bd
}

// wait waits for Run to return.
func (bd *build) wait(t *testing.T) result {
	t.Helper()
	if bd.got != nil {
		return *bd.got
	}
	select {
	case r := <-bd.done:
		bd.got = &r
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	panic("unreachable")
}

// proc is a process seen alive, identified by its pid and start time so
// that a pid handed out again is not taken for it.
type proc struct {
	pid   int
	start string
	runID string // its bastion.RunEnv, "" if none
	owner string // its bastion.OwnerEnv, "" if none
}

// escapee waits for the build's escapee to write its pid and reads its
// identity and environment. It kills the escapee when the test ends, in
// case the test failed before it was ended.
func (bd *build) escapee(t *testing.T) proc {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		data, err := os.ReadFile(bd.file)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && bytes.HasSuffix(data, []byte("\n")) {
			p := proc{pid: pid, start: startTime(pid)}
			env := environ(t, pid)
			for _, kv := range bytes.Split(env, []byte{0}) {
				if v, ok := bytes.CutPrefix(kv, []byte(bastion.RunEnv+"=")); ok {
					p.runID = string(v)
				}
				if v, ok := bytes.CutPrefix(kv, []byte(bastion.OwnerEnv+"=")); ok {
					p.owner = string(v)
				}
			}
			t.Cleanup(func() {
				if p.alive() {
					syscall.Kill(p.pid, syscall.SIGKILL)
				}
			})
			return p
		}
		select {
		case r := <-bd.done:
			bd.got = &r
			t.Fatalf("the build ended (%+v, %v) before its escapee started", r.o, r.err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the escapee never started")
		}
	}
}

// environ reads the environment of the live process pid. The escapee
// writes its pid and then execs, and in the middle of an exec a process's
// environment reads empty: read until it does not.
func environ(t *testing.T, pid int) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("the escapee (pid %d) was gone before the test could look at it", pid)
		}
		if len(env) > 0 {
			return env
		}
		if time.Now().After(deadline) {
			t.Fatalf("the escapee (pid %d) has an empty environment", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// alive reports whether the process still runs: not gone, not a zombie
// (ended, waiting for init to reap it), and not another process that got
// its pid.
func (p proc) alive() bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return false
	}
	state, start, ok := parseStat(stat)
	return ok && start == p.start && state != "Z" && state != "X"
}

// startTime is the start time of process pid (field 22 of its stat), ""
// if it is gone.
func startTime(pid int) string {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	_, start, _ := parseStat(stat)
	return start
}

// parseStat returns the state and start time of a /proc/<pid>/stat line,
// whose command name, in parentheses, may hold anything.
func parseStat(stat []byte) (state, start string, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return "", "", false
	}
	f := strings.Fields(string(stat[i+1:])) // f[0] is field 3
	if len(f) < 20 {
		return "", "", false
	}
	return f[0], f[19], true
}

// waitGone waits for p to end, failing the test if it outlives the
// deadline.
func waitGone(t *testing.T, p proc, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.alive() {
		if time.Now().After(deadline) {
			t.Errorf("%s (pid %d) is still alive", what, p.pid)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitNoneCarries waits until no live process has entry ("KEY=value") in
// its environment, failing the test if one outlives the deadline.
func waitNoneCarries(t *testing.T, entry string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pids := carriers(entry)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes %v still carry %s", pids, entry)
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// carriers lists the live processes whose environment holds entry. A
// zombie's environment reads empty.
func carriers(entry string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte("\x00" + entry + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err == nil && bytes.Contains(append([]byte{0}, env...), want) {
			pids = append(pids, pid)
		}
	}
	return pids
}
