package semaphore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// ender is a bastion whose KillOwner calls are recorded, and fail while
// fail is set.
type ender struct {
	mu     sync.Mutex
	killed []string
	fail   bool
}

func (e *ender) KillOwner(_ context.Context, owner string, _ time.Duration) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail {
		return errors.New("bastion unreachable")
	}
	e.killed = append(e.killed, owner)
	return nil
}

func (e *ender) kills() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.killed)
}

// A process that dies while holding a semaphore stops renewing its lease;
// once the lease has run out, another process ends the dead one's builds
// on the bastion, and only then takes the semaphore. While the builds
// cannot be ended, the slot stays taken. Each client opens the database on
// its own, as two processes would.
func TestDeadHolderIsReleasedAfterItsBuildsEnd(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "sortie.db")
	ctx := context.Background()
	sems := map[string]int{"deploy": 1}

	dead := &semaphore.Client{Store: open(t, db), Owner: "dead", Lease: 300 * time.Millisecond, Bastion: &ender{}}
	if err := dead.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := dead.TryAcquire(ctx, "bs1", sems, time.Now()); !ok || err != nil {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	dead.Stop() // the process dies: no release, no more renewals

	b := &ender{fail: true}
	var reapErrs, forgets atomic.Int32
	alive := &semaphore.Client{Store: open(t, db), Owner: "alive", Lease: 300 * time.Millisecond, Bastion: b,
		// Forgetting the dead owner fails twice, once its builds can be
		// ended: its holders must stay until it succeeds.
		Forget: func(_ context.Context, owner string) error {
			if owner == "dead" && forgets.Add(1) <= 2 {
				return errors.New("database is locked")
			}
			return nil
		},
		OnReap: func(_ context.Context, owner string, err error) {
			if owner == "dead" && err != nil {
				reapErrs.Add(1)
			}
		}}
	if err := alive.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer alive.Stop()
	if ok, _ := alive.TryAcquire(ctx, "bs2", sems, time.Now()); ok {
		t.Fatal("granted while the dead holder's lease still runs")
	}
	// The lease runs out, but the bastion cannot end the dead one's
	// builds: several reaps fail, and the slot stays taken.
	for deadline := time.Now().Add(10 * time.Second); reapErrs.Load() < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d failed reaps of the dead owner in 10 s, want 3", reapErrs.Load())
		}
	}
	if ok, err := alive.TryAcquire(ctx, "bs2", sems, time.Now()); ok || err != nil {
		t.Fatalf("granted while the dead holder's builds may still run: %v %v", ok, err)
	}
	if k := b.kills(); len(k) != 0 {
		t.Fatalf("kills %v while failing", k)
	}
	if n := forgets.Load(); n != 0 {
		t.Fatalf("Forget called %d times before the builds were ended", n)
	}

	b.mu.Lock()
	b.fail = false
	b.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := alive.Wait(wctx, "bs2", sems, 20*time.Millisecond); err != nil {
		t.Fatalf("never got the semaphore of a dead holder: %v", err)
	}
	if k := b.kills(); len(k) < 3 || k[0] != "dead" || slices.Contains(k, "alive") {
		t.Errorf("KillOwner calls %v, want the dead owner, once per round until forgotten (3), never this one", k)
	}
	if n := forgets.Load(); n != 3 {
		t.Errorf("Forget called %d times, want 3 (two failures, then the one after which the holder went)", n)
	}
	hs, err := alive.Store.Holders(ctx)
	if err != nil || len(hs) != 1 || hs[0].Holder != "bs2" {
		t.Fatalf("holders %+v %v", hs, err)
	}
}

// The same with real processes: a dead owner's build still running on the
// local bastion keeps its semaphore until the reaper has ended it; the new
// holder is granted only once nothing of the dead owner runs.
func TestDeadHolderBuildEndedOnLocalBastion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "sortie.db")
	ctx := context.Background()
	sems := map[string]int{"deploy": 1}

	deadBastion := local.New(filepath.Join(dir, "bastion"))
	deadBastion.Owner = "run-dead"
	dead := &semaphore.Client{Store: open(t, db), Owner: "run-dead", Lease: 300 * time.Millisecond, Bastion: deadBastion}
	if err := dead.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := dead.TryAcquire(ctx, "bs1", sems, time.Now()); !ok || err != nil {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	pidFile := filepath.Join(dir, "pid")
	ran := make(chan bastion.Outcome, 1)
	go func() {
		out, err := deadBastion.Run(ctx, bastion.Spec{Command: "echo $$ > " + pidFile + "; exec sleep 300", Dir: dir, Env: map[string]string{}, Grace: time.Second}, nil)
		if err != nil {
			t.Errorf("run: %v", err)
		}
		ran <- out
	}()
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the build never started")
		}
		data, _ := os.ReadFile(pidFile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(data)))
	}
	dead.Stop() // the process dies; its build runs on

	aliveBastion := local.New(filepath.Join(dir, "bastion"))
	aliveBastion.Owner = "run-alive"
	alive := &semaphore.Client{Store: open(t, db), Owner: "run-alive", Lease: 300 * time.Millisecond, Bastion: aliveBastion, Grace: time.Second}
	if err := alive.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer alive.Stop()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := alive.Wait(wctx, "bs2", sems, 20*time.Millisecond); err != nil {
		t.Fatalf("never got the semaphore of a dead holder: %v", err)
	}
	if running(pid) {
		t.Fatalf("granted while the dead owner's build (pid %d) still runs", pid)
	}
	select {
	case out := <-ran:
		if out.ExitCode == 0 {
			t.Errorf("the build ended by itself: %+v", out)
		}
	case <-time.After(10 * time.Second):
		t.Error("the build's Run never returned")
	}
}

// running reports whether pid is alive and not a zombie.
func running(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	i := bytes.LastIndexByte(stat, ')')
	return err == nil && i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// clock is a fake time for Client.Now: it moves only when the test moves
// it.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// driven is a started client on a fake clock whose renewals happen only
// when the test calls renew, and whose reaps only when it calls Reap.
type driven struct {
	*semaphore.Client
	tick    chan time.Time
	renewed chan error
}

func startDriven(t *testing.T, st store.Store, owner string, clk *clock) *driven {
	t.Helper()
	d := &driven{tick: make(chan time.Time), renewed: make(chan error, 1)}
	d.Client = &semaphore.Client{Store: st, Owner: owner, Bastion: &ender{}, Now: clk.now,
		RenewTick: d.tick, ReapTick: make(chan time.Time),
		Renewed: func(err error) { d.renewed <- err }}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

// renew runs one round of renewal, at the clock's time, and returns its
// error once it is over.
func (d *driven) renew(t *testing.T) error {
	t.Helper()
	select {
	case d.tick <- time.Time{}:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the renewal loop does not take a tick", d.Owner)
	}
	select {
	case err := <-d.renewed:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: a renewal round did not end in 10 s", d.Owner)
	}
	return nil
}

// A holder whose process lives keeps renewing and is never taken away,
// however long the others wait: over six leases, renewed every third of
// one, another client's reaps leave it alone.
func TestLiveHolderIsKept(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "sortie.db")
	ctx := context.Background()
	sems := map[string]int{"deploy": 1}
	clk := newClock()
	holder := startDriven(t, open(t, db), "holder", clk)
	if ok, err := holder.TryAcquire(ctx, "bs1", sems, clk.now()); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	other := startDriven(t, open(t, db), "other", clk)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waited := make(chan error, 1)
	go func() { waited <- other.Wait(wctx, "bs2", sems, 10*time.Millisecond) }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ws, err := other.Store.Waiters(ctx)
		if err == nil && len(ws) == 1 && ws[0].Holder == "bs2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other client never queued as a waiter: %+v %v", ws, err)
		}
	}
	lost := holder.Lost()
	for round := 1; round <= 18; round++ {
		clk.advance(semaphore.DefaultLease / 3)
		for _, c := range []*driven{holder, other} {
			if err := c.renew(t); err != nil {
				t.Fatalf("round %d: %s's renewal: %v", round, c.Owner, err)
			}
		}
		other.Reap(ctx)
		if k := other.Bastion.(*ender).kills(); len(k) != 0 {
			t.Fatalf("round %d: the other client ended the builds of %v", round, k)
		}
		hs, err := other.Store.Holders(ctx)
		if err != nil || len(hs) != 1 || hs[0].Holder != "bs1" {
			t.Fatalf("round %d: holders %+v %v, want bs1's alone", round, hs, err)
		}
		select {
		case <-lost:
			t.Fatalf("round %d: the holder's lease was lost while it renewed on time", round)
		default:
		}
	}
	cancel()
	if err := <-waited; !errors.Is(err, context.Canceled) {
		t.Fatalf("wait on a live holder: %v, want cancelled", err)
	}
	ws, _ := other.Store.Waiters(ctx)
	if len(ws) != 0 {
		t.Errorf("a cancelled wait left waiters: %+v", ws)
	}
	if err := holder.Release(ctx, "bs1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := other.TryAcquire(ctx, "bs2", sems, clk.now()); !ok || err != nil {
		t.Fatalf("after release: %v %v", ok, err)
	}
}

func TestStartNeedsABastion(t *testing.T) {
	c := &semaphore.Client{Store: open(t, filepath.Join(t.TempDir(), "sortie.db")), Owner: "x"}
	if err := c.Start(context.Background()); err == nil {
		c.Stop()
		t.Fatal("started without a bastion to end dead owners' builds on")
	}
}

func TestStopIsSafeBeforeStartAndTwice(t *testing.T) {
	c := &semaphore.Client{}
	c.Stop()
	c.Stop()
}

// failingRenewals is a store whose lease renewals fail after the first.
type failingRenewals struct {
	store.Store
	calls atomic.Int32
}

func (f *failingRenewals) RenewLease(ctx context.Context, owner string, until time.Time) error {
	if f.calls.Add(1) > 1 {
		return errors.New("database is locked")
	}
	return f.Store.RenewLease(ctx, owner, until)
}

// When renewals keep failing, the client says its lease is lost before
// the lease could have run out, so its holder stops acting on semaphores
// that others may now be granted.
func TestLeaseLostWhenRenewalsFail(t *testing.T) {
	t.Parallel()
	st := &failingRenewals{Store: open(t, filepath.Join(t.TempDir(), "sortie.db"))}
	c := &semaphore.Client{Store: st, Owner: "flaky", Lease: 300 * time.Millisecond, Bastion: &ender{}}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	select {
	case <-c.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("renewals failed for 10 s and the lease was never reported lost")
	}
	if c.Err() == nil {
		t.Error("Err() does not say why")
	}
}

// A process that did not run for two thirds of its lease (SIGSTOP, a
// paused VM) may have been reaped meanwhile: its next renewal succeeds,
// yet the epoch is lost, so that its buildsets stop acting on holders
// they may no longer have. The renewal starts a new epoch for what comes
// after.
func TestLateRenewalLosesTheEpoch(t *testing.T) {
	t.Parallel()
	clk := newClock()
	c := startDriven(t, open(t, filepath.Join(t.TempDir(), "sortie.db")), "sleeper", clk)
	first := c.Lost()
	for round := 1; round <= 3; round++ { // renewals on time: nothing lost
		clk.advance(semaphore.DefaultLease / 3)
		if err := c.renew(t); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		select {
		case <-first:
			t.Fatalf("round %d: lost while renewing on time", round)
		default:
		}
	}
	clk.advance(2 * semaphore.DefaultLease / 3) // the process "wakes up"
	if err := c.renew(t); err != nil {
		t.Fatalf("renewals failed (%v): this test is about late ones that succeed", err)
	}
	select {
	case <-first:
	default:
		t.Fatal("a renewal two thirds of a lease late did not lose the epoch")
	}
	next := c.Lost()
	select {
	case <-next:
		t.Fatal("no new epoch after a renewal that succeeded")
	default:
	}
	if next == first {
		t.Fatal("the new epoch reuses the lost one's channel")
	}
}
