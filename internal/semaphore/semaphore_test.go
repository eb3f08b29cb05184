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

// A process that dies while holding a semaphore stops renewing its lease;
// another process gets the semaphore once the lease has run out. Each
// client opens the database on its own, as two processes would.
func TestDeadHolderIsReleased(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "sortie.db")
	ctx := context.Background()
	sems := map[string]int{"deploy": 1}

	dead := &semaphore.Client{Store: open(t, db), Owner: "dead", Lease: 300 * time.Millisecond}
	if err := dead.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := dead.TryAcquire(ctx, "bs1", sems, time.Now()); !ok || err != nil {
		t.Fatalf("first acquire: %v %v", ok, err)
	}
	dead.Stop() // the process dies: no release, no more renewals

	alive := &semaphore.Client{Store: open(t, db), Owner: "alive", Lease: 300 * time.Millisecond}
	if err := alive.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer alive.Stop()
	if ok, _ := alive.TryAcquire(ctx, "bs2", sems, time.Now()); ok {
		t.Fatal("granted while the dead holder's lease still runs")
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := alive.Wait(wctx, "bs2", sems, 20*time.Millisecond); err != nil {
		t.Fatalf("never got the semaphore of a dead holder: %v", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("waited %v for a 300ms lease", waited)
	}
	hs, err := alive.Store.Holders(ctx)
	if err != nil || len(hs) != 1 || hs[0].Holder != "bs2" {
		t.Fatalf("holders %+v %v", hs, err)
	}
}

// A holder whose process lives keeps renewing and is never taken away,
// however long the others wait.
func TestLiveHolderIsKept(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "sortie.db")
	ctx := context.Background()
	sems := map[string]int{"deploy": 1}
	holder := &semaphore.Client{Store: open(t, db), Owner: "holder", Lease: 150 * time.Millisecond}
	if err := holder.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer holder.Stop()
	if ok, err := holder.TryAcquire(ctx, "bs1", sems, time.Now()); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	other := &semaphore.Client{Store: open(t, db), Owner: "other", Lease: 150 * time.Millisecond}
	if err := other.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer other.Stop()
	// Six leases long: the holder must have renewed several times.
	wctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
	defer cancel()
	err := other.Wait(wctx, "bs2", sems, 20*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on a live holder: %v, want deadline exceeded", err)
	}
	ws, _ := other.Store.Waiters(ctx)
	if len(ws) != 0 {
		t.Errorf("a cancelled wait left waiters: %+v", ws)
	}
	if err := holder.Release(ctx, "bs1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := other.TryAcquire(ctx, "bs2", sems, time.Now()); !ok || err != nil {
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
	if c.Err() == nil {
		t.Error("Err() does not say why")
	}
}
