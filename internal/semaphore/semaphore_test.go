package semaphore_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

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
// when the test calls renew.
type driven struct {
	*semaphore.Client
	tick    chan time.Time
	renewed chan error
}

func startDriven(t *testing.T, st store.Store, owner string, clk *clock) *driven {
	t.Helper()
	d := &driven{tick: make(chan time.Time), renewed: make(chan error, 1)}
	d.Client = &semaphore.Client{Store: st, Owner: owner, Now: clk.now,
		Identity:  store.RegisterOwnerParams{Kind: store.OwnerRun, Node: "host", Host: "host", StateDir: "/state"},
		RenewTick: d.tick, Renewed: func(err error) { d.renewed <- err }}
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

// owner returns the store's row of id.
func owner(t *testing.T, st store.Store, id string) store.Owner {
	t.Helper()
	os, err := st.Owners(context.Background(), store.OwnerFilter{IDs: []string{id}})
	if err != nil || len(os) != 1 {
		t.Fatalf("owner %s: %v %v", id, os, err)
	}
	return os[0]
}

// Start registers the owner with its identity and a fresh epoch, which
// Fence carries; two clients cannot register one id.
func TestStartRegisters(t *testing.T) {
	t.Parallel()
	clk := newClock()
	st := open(t, filepath.Join(t.TempDir(), "sortie.db"))
	c := startDriven(t, st, "o-1", clk)
	o := owner(t, st, "o-1")
	if o.Kind != store.OwnerRun || o.Node != "host" || o.Host != "host" || o.StateDir != "/state" || o.State != store.OwnerLive ||
		!o.ExpiresAt.Equal(clk.now().Add(semaphore.DefaultLease)) {
		t.Errorf("registered %+v", o)
	}
	if f := c.Fence(); f.Owner != "o-1" || f.Epoch != o.Epoch {
		t.Errorf("Fence() = %+v, the store has epoch %d", f, o.Epoch)
	}
	twin := &semaphore.Client{Store: st, Owner: "o-1"}
	if err := twin.Start(context.Background()); !errors.Is(err, store.ErrConflict) {
		twin.Stop()
		t.Errorf("a second registration of one id: %v, want a conflict", err)
	}
}

// A holder whose process lives keeps renewing and is never fenced, however
// long the others wait: over six leases, renewed every third of one,
// another process's reaps (FenceOwners at the same clock) leave it alone.
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
		fenced, err := other.Store.FenceOwners(ctx, store.FenceOwnersParams{Now: clk.now()})
		if err != nil || len(fenced) != 0 {
			t.Fatalf("round %d: a reap fenced %+v (%v)", round, fenced, err)
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

func (f *failingRenewals) RenewOwner(ctx context.Context, p store.RenewOwnerParams) (time.Time, error) {
	if f.calls.Add(1) > 1 {
		return time.Time{}, errors.New("database is locked")
	}
	return f.Store.RenewOwner(ctx, p)
}

// When renewals keep failing, the client says its lease is lost before
// the lease could have run out, so its holder stops acting on semaphores
// that others may now be granted.
func TestLeaseLostWhenRenewalsFail(t *testing.T) {
	t.Parallel()
	st := &failingRenewals{Store: open(t, filepath.Join(t.TempDir(), "sortie.db"))}
	c := &semaphore.Client{Store: st, Owner: "flaky", Lease: 300 * time.Millisecond}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	select {
	case <-c.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("renewals failed for 10 s and the lease was never reported lost")
	}
	if err := c.Err(); !errors.Is(err, semaphore.ErrLeaseLost) {
		t.Errorf("Err() = %v, want it to say the lease is lost, and why", err)
	}
}

// lostForGood checks that c's lease is lost for good: Lost is closed and
// stays so, Err says why, the client writes nothing more (its requests and
// releases are refused without reaching the store), and the store has the
// owner fenced, so that a write of it still on its way is refused.
func lostForGood(t *testing.T, c *driven, st store.Store, want error) {
	t.Helper()
	select {
	case <-c.Lost():
	default:
		t.Fatal("the lease is not lost")
	}
	if err := c.Err(); !errors.Is(err, semaphore.ErrLeaseLost) || !errors.Is(err, want) {
		t.Errorf("Err() = %v, want %v and %v", err, semaphore.ErrLeaseLost, want)
	}
	ctx := context.Background()
	if ok, err := c.TryAcquire(ctx, "late", map[string]int{"s": 1}, time.Now()); ok || !errors.Is(err, semaphore.ErrLeaseLost) {
		t.Errorf("an acquire after the loss: %v %v, want refused as lost", ok, err)
	}
	if err := c.Release(ctx, "bs1"); !errors.Is(err, semaphore.ErrLeaseLost) {
		t.Errorf("a release after the loss: %v, want refused as lost", err)
	}
	if hs, _ := st.Holders(ctx); len(hs) != 1 || hs[0].Holder != "bs1" {
		t.Errorf("holders %+v, want bs1's, left for whoever takes the work over", hs)
	}
	if o := owner(t, st, c.Owner); o.State != store.OwnerFenced {
		t.Errorf("the owner is %s in the store, want fenced", o.State)
	}
	_, err := st.RenewOwner(ctx, store.RenewOwnerParams{Fence: c.Fence(), Lease: time.Hour})
	if !errors.Is(err, store.ErrFenced) {
		t.Errorf("a renewal with the lost fence: %v, want ErrFenced", err)
	}
	// A tick the loop takes in a race with the loss renews nothing: the
	// round reports the loss, and the loop ends.
	select {
	case c.tick <- time.Time{}:
		if err := <-c.renewed; !errors.Is(err, semaphore.ErrLeaseLost) {
			t.Errorf("a renewal round after the loss: %v, want the loss", err)
		}
	default:
	}
	if o := owner(t, st, c.Owner); o.State != store.OwnerFenced {
		t.Errorf("the owner is %s in the store after the renewals, want fenced", o.State)
	}
}

// A process that did not run for two thirds of its lease (SIGSTOP, a
// paused VM) may have been reaped meanwhile: its lease is lost, even if
// the store would still renew it, and for good: it fences itself, so that
// no write of this incarnation is taken any more. What comes after runs
// as a new owner (coordinator).
func TestLateRenewalLosesTheLease(t *testing.T) {
	t.Parallel()
	clk := newClock()
	st := open(t, filepath.Join(t.TempDir(), "sortie.db"))
	c := startDriven(t, st, "sleeper", clk)
	if ok, err := c.TryAcquire(context.Background(), "bs1", map[string]int{"s": 1}, clk.now()); !ok || err != nil {
		t.Fatal(ok, err)
	}
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
	if err := c.renew(t); !errors.Is(err, semaphore.ErrLeaseLost) {
		t.Fatalf("a renewal two thirds of a lease late: %v, want the lease lost", err)
	}
	if c.Lost() != first {
		t.Error("a lost lease has a new channel: it is lost for good")
	}
	lostForGood(t, c, st, semaphore.ErrLeaseLost)
}

// Another process fenced this one (its lease had run out, or a successor
// holds the state dir): the next renewal is refused as fenced, and the
// lease is lost for good.
func TestFencedRenewalLosesTheLease(t *testing.T) {
	t.Parallel()
	clk := newClock()
	st := open(t, filepath.Join(t.TempDir(), "sortie.db"))
	c := startDriven(t, st, "fenced", clk)
	if ok, err := c.TryAcquire(context.Background(), "bs1", map[string]int{"s": 1}, clk.now()); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := st.FenceOwners(context.Background(), store.FenceOwnersParams{IDs: []string{"fenced"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	clk.advance(semaphore.DefaultLease / 3)
	if err := c.renew(t); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("renewal of a fenced owner: %v, want ErrFenced", err)
	}
	lostForGood(t, c, st, store.ErrFenced)
}

// A write the store refuses as fenced, told to the client (as the
// acquires and releases it makes tell it themselves), loses the lease as
// a fenced renewal does.
func TestFencedWriteLosesTheLease(t *testing.T) {
	t.Parallel()
	clk := newClock()
	st := open(t, filepath.Join(t.TempDir(), "sortie.db"))
	c := startDriven(t, st, "writer", clk)
	if ok, err := c.TryAcquire(context.Background(), "bs1", map[string]int{"s": 1}, clk.now()); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := st.FenceOwners(context.Background(), store.FenceOwnersParams{IDs: []string{"writer"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.TryAcquire(context.Background(), "bs2", map[string]int{"t": 1}, clk.now()); ok || !errors.Is(err, store.ErrFenced) {
		t.Fatalf("an acquire of a fenced owner: %v %v, want ErrFenced", ok, err)
	}
	lostForGood(t, c, st, store.ErrFenced)
}

// A stopped client started again with a new Owner is a new incarnation:
// registered anew, with a lease of its own, whatever became of the old.
func TestStartAgainAsANewOwner(t *testing.T) {
	t.Parallel()
	clk := newClock()
	st := open(t, filepath.Join(t.TempDir(), "sortie.db"))
	c := startDriven(t, st, "first", clk)
	old := c.Fence()
	c.Fenced(store.ErrFenced)
	c.Stop()
	c.Owner = "second"
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if f := c.Fence(); f.Owner != "second" || f.Epoch <= old.Epoch {
		t.Errorf("the new incarnation's fence %+v, after %+v", f, old)
	}
	select {
	case <-c.Lost():
		t.Error("the new incarnation starts lost")
	default:
	}
	if ok, err := c.TryAcquire(context.Background(), "bs1", map[string]int{"s": 1}, clk.now()); !ok || err != nil {
		t.Errorf("the new incarnation's acquire: %v %v", ok, err)
	}
}
