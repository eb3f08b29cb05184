package coordinator

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

const claimsConfig = `
limits: {max_parallel: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: '%s'}
pipelines:
  p: {manager: independent, jobs: [boot, work]}
`

// twoServers starts two servers on one store, with one build slot each,
// whose job waits for g; a, started first, leads.
func twoServers(t *testing.T, open func() store.Store, g gate) (a, b *harness) {
	t.Helper()
	return twoServersWith(t, open, fmt.Sprintf(claimsConfig, g.wait()), harnessOptions{})
}

// twoServersWith starts two servers on one store (each its own of open),
// with config cfg and options o; a, started first, leads.
func twoServersWith(t *testing.T, open func() store.Store, cfg string, o harnessOptions) (a, b *harness) {
	t.Helper()
	o.store = open()
	a = newHarnessWith(t, cfg, o)
	o.store, o.repo = open(), a.repo
	b = newHarnessWith(t, cfg, o)
	a.start()
	b.start()
	return a, b
}

// TestClaimsShareWork: the leader admits, and every server runs what it
// claims: with one build slot each, two servers run two buildsets at once
// (one each, the follower too), and the third waits, admitted and
// claimed by nobody, until one of them has room.
func TestClaimsShareWork(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		g := newGate(t)
		a, b := twoServers(t, open, g)
		if a.c.Leading() == nil || b.c.Leading() != nil {
			t.Fatal("a should lead, b follow")
		}
		ctx := waitCtx(t)
		var ids []string
		for range 3 {
			ids = append(ids, a.submit("p").ID)
		}
		ranA, err := a.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for the leader to run one: %v", err)
		}
		ranB, err := b.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for the follower to run one: %v", err)
		}
		if ranA == ranB || ranA == ids[2] || ranB == ids[2] {
			t.Fatalf("a runs %s and b %s; want the two oldest of %v, one each", ranA, ranB, ids)
		}
		// Full, neither takes more, however often it looks.
		for _, h := range []*harness{a, b, a} {
			if err := h.c.Claim(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if bs := a.get(ids[2]); bs.State != store.BuildsetAdmitted || bs.Owner != "" {
			t.Errorf("the third buildset is %s owned by %q, want ADMITTED and unclaimed while both servers are full", bs.State, bs.Owner)
		}
		if p := append(a.c.TestSignals.Launched.Pending(), b.c.TestSignals.Launched.Pending()...); len(p) > 0 {
			t.Errorf("launched %v beyond the build slots", p)
		}
		g.open(t)
		for _, id := range ids {
			waitDone(t, ctx, a, id)
			if bs := a.get(id); bs.Result != store.Success {
				builds, _ := a.st.Builds(t.Context(), id)
				for _, b := range builds {
					t.Logf("%s: %s %s %s", b.Job, b.State, b.Result, b.Reason)
				}
				t.Errorf("%s ended %s: %s", id, bs.Result, bs.Error)
			}
		}
		owners := map[string]string{ranA: a.c.Owner(), ranB: b.c.Owner()}
		for id, want := range owners {
			if got := a.get(id).Owner; got != want {
				t.Errorf("%s was run by %q, want %q", id, got, want)
			}
		}
		if got := a.get(ids[2]).Owner; got != a.c.Owner() && got != b.c.Owner() {
			t.Errorf("the third was run by %q, neither server", got)
		}
	})
}

// TestCancelThroughAnotherServer: a cancel asked of a server that does not
// run the buildset reaches the one that does, which cancels it; the other
// buildset runs on.
func TestCancelThroughAnotherServer(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		g := newGate(t)
		a, b := twoServers(t, open, g)
		ctx := waitCtx(t)
		one, two := a.submit("p").ID, a.submit("p").ID
		ranA, err := a.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ranB, err := b.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ranA == ranB || (ranA != one && ranA != two) || (ranB != one && ranB != two) {
			t.Fatalf("a runs %s and b %s; want %s and %s, one each", ranA, ranB, one, two)
		}
		if err := a.c.Cancel(t.Context(), ranB, "alice"); err != nil {
			t.Fatalf("cancel through a of what b runs: %v", err)
		}
		waitDone(t, ctx, a, ranB)
		if bs := a.get(ranB); bs.Result != store.Canceled {
			t.Errorf("the buildset b ran ended %s (%s), want CANCELED", bs.Result, bs.Error)
		}
		if !a.c.Running(ranA) {
			t.Errorf("a's buildset %s stopped running", ranA)
		}
		g.open(t)
		waitDone(t, ctx, a, ranA)
		if bs := a.get(ranA); bs.Result != store.Success {
			t.Errorf("the buildset a ran ended %s (%s), want SUCCESS", bs.Result, bs.Error)
		}
		if err := a.c.Cancel(t.Context(), ranB, "bob"); !errors.Is(err, store.ErrConflict) {
			t.Errorf("cancel of a finished buildset: %v, want ErrConflict", err)
		}
	})
}

// waitDone waits until buildset id is DONE in h's store.
func waitDone(t *testing.T, ctx context.Context, h *harness, id string) {
	t.Helper()
	for h.get(id).State != store.BuildsetDone {
		if ctx.Err() != nil {
			t.Fatalf("%s is still %s", id, h.get(id).State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCleanStopHandsOver: a server stopped cleanly in the middle of a
// buildset (its running build done within the grace, the next not
// started) hands it over: what its builds left on the bastion is ended
// (a daemon), the buildset is left RUNNING with no owner, and
// the other server claims and resumes it as soon as it has a slot, with
// the stopped server's lease (an hour here) far from run out.
func TestCleanStopHandsOver(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		gates := t.TempDir()
		cfg := fmt.Sprintf(`
limits: {max_parallel: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  first:
    run: |
      setsid sh -c 'echo $$ > %[1]s/daemon-$SORTIE_BUILDSET.tmp; mv %[1]s/daemon-$SORTIE_BUILDSET.tmp %[1]s/daemon-$SORTIE_BUILDSET; exec sleep 300' </dev/null >/dev/null 2>&1 &
      while [ ! -e %[1]s/daemon-$SORTIE_BUILDSET ]; do sleep 0.01; done
      while [ ! -e %[1]s/"$SORTIE_BUILDSET" ] && [ -d %[1]s ]; do sleep 0.01; done
  second: {run: "true", dependencies: [first]}
pipelines:
  p: {manager: independent, jobs: [boot, first, second]}
`, gates)
		// Each first build leaves a daemon, as a job may mean to (an ssh
		// master): it carries its server's owner id.
		daemon := func(id string) int {
			t.Helper()
			b, err := os.ReadFile(filepath.Join(gates, "daemon-"+id))
			if err != nil {
				t.Fatal(err)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			return pid
		}
		openGate := func(id string) {
			t.Helper()
			if err := os.WriteFile(filepath.Join(gates, id), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		a, b := twoServersWith(t, open, cfg, harnessOptions{lease: time.Hour, grace: time.Minute})
		ctx := waitCtx(t)
		a.submit("p")
		a.submit("p")
		ranA, err := a.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for a to run one: %v", err)
		}
		ranB, err := b.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for b to run one: %v", err)
		}
		// a's first build runs (its daemon is up) before a stops: a
		// drain starts no attempt, and a launched run may not have
		// started its first yet.
		for {
			if _, err := os.Stat(filepath.Join(gates, "daemon-"+ranA)); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatal("a's first build did not start")
			case <-time.After(10 * time.Millisecond):
			}
		}
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			a.c.Stop(ctx)
		}()
		waitSignal(t, "a's drain", &a.c.TestSignals.Draining, a.c.Owner())
		// a's first build ends within the grace; its second does not start.
		openGate(ranA)
		select {
		case <-stopped:
		case <-ctx.Done():
			t.Fatal("a did not stop")
		}
		if bs := b.get(ranA); bs.State != store.BuildsetRunning || bs.Owner != "" {
			t.Errorf("after a clean stop, a's buildset is %s %s owned by %q; want RUNNING and no one's", bs.State, bs.Result, bs.Owner)
		}
		if pid := daemon(ranA); !processGone(pid) {
			t.Errorf("the daemon %d a's job left runs on after a's clean stop", pid)
		}
		owners, err := b.st.Owners(ctx, store.OwnerFilter{IDs: []string{a.c.Owner()}})
		if err != nil {
			t.Fatal(err)
		}
		if len(owners) != 1 || owners[0].State != store.OwnerReleased {
			t.Errorf("a's owner after a clean stop: %+v; want it released", owners)
		}
		// b, full with its own, takes a's once its own is done.
		openGate(ranB)
		waitDone(t, ctx, b, ranB)
		if pid := daemon(ranB); processGone(pid) {
			t.Errorf("the daemon %d b's job left is gone while b runs; only a's should be", pid)
		}
		waitSignal(t, "b resuming a's buildset", &b.c.TestSignals.Launched, ranA)
		waitDone(t, ctx, b, ranA)
		if bs := b.get(ranA); bs.Result != store.Success || bs.Owner != b.c.Owner() {
			t.Errorf("a's buildset ended %s (%s) owned by %q; want SUCCESS, by b", bs.Result, bs.Error, bs.Owner)
		}
		atts, err := b.st.Attempts(ctx, ranA, "first")
		if err != nil {
			t.Fatal(err)
		}
		if len(atts) != 1 {
			t.Errorf("first ran %d times; want once, on a", len(atts))
		}
	})
}

// processGone reports whether pid no longer runs: no such process, or a
// zombie waiting for a parent that never reaps it (this sandbox's init).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// TestCleanStopWithoutStore: a server whose store is gone when it stops
// (a database down) still stops, says it could not hand its buildsets
// over, and leaves its owner for the lease path: nothing hangs on it.
func TestCleanStopWithoutStore(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	h := newHarnessWith(t, fmt.Sprintf(claimsConfig, "true"), harnessOptions{store: st})
	h.start()
	st.Close()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		h.c.Stop(context.Background())
	}()
	select {
	case <-stopped:
	case <-waitCtx(t).Done():
		t.Fatal("Stop hangs on a store that is gone")
	}
	if log := h.log.String(); !strings.Contains(log, "could not hand this server's buildsets over") {
		t.Errorf("no word of the failed hand-over in the log:\n%s", log)
	}
}
