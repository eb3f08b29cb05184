// Package semaphore holds the fairness rule of semaphores (Decide: who
// gets one, and in which order; the stores only keep and lock) and a
// process's handle on the semaphores kept in the store: it acquires and
// releases for the scheduler, and keeps this process's lease alive so that
// its holders are never taken away while it lives. Once a process has died (its lease ran out), any other client
// reaps it: ends what its builds left running on the bastion, then
// releases its holders. Never the other way round: a slot freed while the
// build it guarded still runs would let two deployments overlap.
package semaphore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// DefaultLease is how long holders outlive their process's last renewal.
const DefaultLease = 30 * time.Second

// OwnerEnder ends the process trees that the builds of a dead owner left
// on the bastion, and returns once they are gone (bastion.Bastion).
type OwnerEnder interface {
	KillOwner(ctx context.Context, owner string, grace time.Duration) error
}

// Store is where a Client keeps holders, waiters and its lease, and reads
// which buildsets a dead owner was running (ReleaseDead).
type Store interface {
	store.Semaphores
	store.Owners
	ActiveBuildsets(ctx context.Context) ([]*store.Buildset, error)
}

// Client acquires semaphores as one owner (this process). Start it before
// acquiring and Stop it when done; Stop does not release holders, so a
// caller releases its buildsets first.
type Client struct {
	Store Store
	// Owner names this process in the store (coordinator.NewOwner).
	Owner string
	// Bastion ends a dead owner's builds before its holders are released.
	// Required: Start refuses a client without one.
	Bastion OwnerEnder
	// Grace is how long a dead owner's builds get between SIGTERM and
	// SIGKILL; 0: the bastion's default.
	Grace time.Duration
	// Forget, if set, is called for a dead owner once its builds are
	// ended and before its holders are released: it ends what the store
	// says the owner was doing (`sortie run`'s buildsets), so that nobody
	// is granted its semaphores before that is done. An error keeps the
	// holders until the next round.
	Forget func(ctx context.Context, owner string) error
	// OnReap, if set, hears of each dead owner reaped (err nil) or not
	// reaped this time (it is tried again at the next round), from the
	// goroutine that reaps.
	OnReap func(ctx context.Context, owner string, err error)
	// OnGrant, if set, hears of each request granted: its semaphores and
	// how long it waited (from the since it was asked with). Set it
	// before the first acquire.
	OnGrant func(semaphores []string, waited time.Duration)
	// Precedence ranks this client's waiters (config.Precedence.Rank).
	Precedence int
	// Lease is the lease length; renewed every Lease/3. 0: DefaultLease.
	Lease time.Duration
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// RenewTick and ReapTick, if set, pace the renewals and the reaps in
	// place of tickers of Lease/3, and Renewed, if set, hears of each
	// renewal round once it is over, with its error, from the goroutine
	// that renews: with Now, they let a test drive the rounds by hand
	// instead of waiting for time to pass.
	RenewTick, ReapTick <-chan time.Time
	Renewed             func(err error)

	mu      sync.Mutex
	cancel  context.CancelFunc
	stopped chan struct{} // closed once renew and reapLoop have returned
	// lost is the current lease epoch's channel (nil: none asked for yet);
	// isLost is set from the moment an epoch is lost until a renewal
	// starts the next one.
	lost   chan struct{}
	isLost bool
	err    error
}

// ErrLeaseLost is the cause given when the lease went unrenewed for two
// thirds of its length: other processes may take this one's holders.
var ErrLeaseLost = errors.New("semaphore lease lost: not renewed in time (renewals failed, or the process was stopped), so others may take its holders")

// Lost returns a channel that is closed once the lease of the current
// epoch is lost: no renewal succeeded for two thirds of the lease, because
// renewals failed or because the process did not run (SIGSTOP, a paused
// VM), so that other processes may consider it expired and end its builds.
// Whoever holds semaphores through this client must stop acting on them
// then. The next successful renewal starts a new epoch: Lost asked after
// it returns a fresh channel; asked while the lease is lost, a closed one.
func (c *Client) Lost() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lost == nil {
		c.lost = make(chan struct{})
		if c.isLost {
			close(c.lost)
		}
	}
	return c.lost
}

// loseEpoch closes the current epoch's channel, once.
func (c *Client) loseEpoch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isLost {
		return
	}
	c.isLost = true
	if c.lost != nil {
		close(c.lost)
	}
}

// newEpoch starts a lease epoch after a lost one.
func (c *Client) newEpoch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isLost {
		c.isLost, c.lost = false, nil
	}
}

// Err returns the last renewal error, or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) lease() time.Duration {
	if c.Lease > 0 {
		return c.Lease
	}
	return DefaultLease
}

// Start takes the lease, reaps the owners found dead (see Reap), and keeps
// renewing the lease and reaping, every Lease/3, until Stop. It fails if
// the first renewal fails or the client has no Bastion.
func (c *Client) Start(ctx context.Context) error {
	if c.Bastion == nil {
		return errors.New("semaphore: no bastion to end dead owners' builds on")
	}
	if err := c.Store.RenewLease(ctx, c.Owner, c.now().Add(c.lease())); err != nil {
		return fmt.Errorf("semaphore: take lease: %w", err)
	}
	c.Reap(ctx)
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	c.mu.Lock()
	c.cancel, c.stopped = cancel, stopped
	c.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.renew(ctx) }()
	go func() { defer wg.Done(); c.reapLoop(ctx) }()
	go func() { wg.Wait(); close(stopped) }()
	return nil
}

// Reap ends the builds of every other owner whose lease has run out, on
// the bastion (KillOwner), calls Forget, then releases that owner's
// holders and waiters (ReleaseDead). An owner whose builds could not be ended keeps its
// holders, and is tried again at the next round.
func (c *Client) Reap(ctx context.Context) {
	owners, err := c.Store.ExpiredOwners(ctx, c.now())
	if err != nil {
		c.reaped(ctx, "", err)
		return
	}
	for _, o := range owners {
		if o == c.Owner || ctx.Err() != nil {
			continue // this process is alive, whatever its lease says
		}
		if err := c.Bastion.KillOwner(ctx, o, c.Grace); err != nil {
			c.reaped(ctx, o, fmt.Errorf("end its builds: %w", err))
			continue
		}
		if c.Forget != nil {
			if err := c.Forget(ctx, o); err != nil {
				c.reaped(ctx, o, err)
				continue
			}
		}
		c.reaped(ctx, o, ReleaseDead(ctx, c.Store, o))
	}
}

// ReleaseDead releases the holders, waiters and lease of owner, a process
// known dead whose builds have been ended on the bastion, but for the
// pipeline semaphore of each buildset it was running: that buildset is
// resumed by whoever adopts it (a restarted server), and must get its
// semaphore back before anyone else, or another pipeline's run would slip
// in between two of its jobs. The kept holder stays the dead owner's until
// the adoption moves it (store.SetBuildsetOwner). A dead `sortie run`'s
// buildsets are ended before this (Client.Forget), so it keeps nothing.
func ReleaseDead(ctx context.Context, st Store, owner string) error {
	active, err := st.ActiveBuildsets(ctx)
	if err != nil {
		return fmt.Errorf("release dead %s: %w", owner, err)
	}
	var keep []string
	for _, bs := range active {
		if bs.Owner == owner && bs.State == store.BuildsetRunning {
			keep = append(keep, bs.ID) // a buildset's own holder id
		}
	}
	return st.ReleaseOwner(ctx, owner, keep)
}

func (c *Client) reaped(ctx context.Context, owner string, err error) {
	if c.OnReap != nil {
		c.OnReap(ctx, owner, err)
	}
}

// reapLoop reaps every Lease/3, apart from renew: ending a dead owner's
// builds can take their grace, which must not delay a renewal.
func (c *Client) reapLoop(ctx context.Context) {
	tick, stop := c.ticker(c.ReapTick)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		c.Reap(ctx)
	}
}

// renew renews the lease every Lease/3. Once two thirds of the lease have
// passed since the last renewal that succeeded, the epoch is lost, even if
// the renewal now succeeds: a process that was stopped for that long may
// have been reaped meanwhile (its builds ended, its holders freed), and
// must not go on as if it held them. A renewal that succeeds then starts
// a new epoch.
func (c *Client) renew(ctx context.Context) {
	tick, stop := c.ticker(c.RenewTick)
	defer stop()
	renewed := c.now() // when the last renewal that succeeded began
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		at := c.now()
		if at.Sub(renewed) >= 2*c.lease()/3 {
			c.loseEpoch()
		}
		// A renewal that hangs is as bad as one that fails: bound it.
		rctx, cancel := context.WithTimeout(ctx, c.lease()/3)
		err := c.Store.RenewLease(rctx, c.Owner, at.Add(c.lease()))
		cancel()
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		if err == nil {
			renewed = at
			c.newEpoch()
		} else if c.now().Sub(renewed) >= 2*c.lease()/3 {
			c.loseEpoch()
		}
		if c.Renewed != nil {
			c.Renewed(err)
		}
	}
}

// ticker returns tick if set, else a ticker of Lease/3 and its Stop.
func (c *Client) ticker(tick <-chan time.Time) (<-chan time.Time, func()) {
	if tick != nil {
		return tick, func() {}
	}
	t := time.NewTicker(c.lease() / 3)
	return t.C, t.Stop
}

// Stop ends the renewals and waits for them. It is safe to call twice, and
// before Start.
func (c *Client) Stop() {
	c.mu.Lock()
	cancel, stopped := c.cancel, c.stopped
	c.cancel = nil
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-stopped
	}
}

// Fence is this process's right to write for the work it owns, which
// writes of that work carry (store.Fence): its owner, and the epoch of its
// lease, 0 until owners have epochs.
func (c *Client) Fence() store.Fence { return store.Fence{Owner: c.Owner} }

// TryAcquire asks for every semaphore of sems for holder, all or nothing,
// at the client's Precedence.
// A holder id "<buildset>/<job>" or "<buildset>" ties it to its buildset.
func (c *Client) TryAcquire(ctx context.Context, holder string, sems map[string]int, since time.Time) (bool, error) {
	return c.Ranked(c.Precedence).TryAcquire(ctx, holder, sems, since)
}

// Release drops what holder holds or waits for.
func (c *Client) Release(ctx context.Context, holder string) error {
	return c.Store.ReleaseSemaphores(ctx, holder)
}

// Wait acquires sems for holder at the client's Precedence, waiting since
// now; see Ranked.Wait.
func (c *Client) Wait(ctx context.Context, holder string, sems map[string]int, poll time.Duration) error {
	return c.Ranked(c.Precedence).Wait(ctx, holder, sems, c.now(), poll)
}

// Ranked is a client acquiring at one precedence: a server runs buildsets
// of pipelines with different precedences through one client.
type Ranked struct {
	c          *Client
	precedence int
}

// Ranked returns the client acquiring at precedence (config.Precedence.Rank).
func (c *Client) Ranked(precedence int) Ranked { return Ranked{c: c, precedence: precedence} }

// TryAcquire is Client.TryAcquire at r's precedence.
func (r Ranked) TryAcquire(ctx context.Context, holder string, sems map[string]int, since time.Time) (bool, error) {
	bs, _, _ := strings.Cut(holder, "/")
	now := r.c.now()
	ok, err := TryAcquire(ctx, r.c.Store, Request{
		Holder: holder, Buildset: bs, Owner: r.c.Owner, Fence: r.c.Fence(), Semaphores: sems,
		Precedence: r.precedence, Since: since, Now: now,
	})
	if ok && err == nil && len(sems) > 0 && r.c.OnGrant != nil {
		names := slices.Sorted(maps.Keys(sems))
		waited := time.Duration(0)
		if !since.IsZero() && now.After(since) {
			waited = now.Sub(since)
		}
		r.c.OnGrant(names, waited)
	}
	return ok, err
}

// Release drops what holder holds or waits for.
func (r Ranked) Release(ctx context.Context, holder string) error { return r.c.Release(ctx, holder) }

// Wait acquires sems for holder, retrying every poll until granted or ctx
// is done; on ctx done it withdraws the request and returns the cause.
// since ranks the request among waiters of the same precedence (older
// first): a buildset passes its creation time, so that it keeps its place
// in the arrival order however long its manager held it back.
func (r Ranked) Wait(ctx context.Context, holder string, sems map[string]int, since time.Time, poll time.Duration) error {
	c := r.c
	t := time.NewTicker(poll)
	defer t.Stop()
	withdraw := func() error {
		c.Release(context.WithoutCancel(ctx), holder)
		return context.Cause(ctx)
	}
	for {
		ok, err := r.TryAcquire(ctx, holder, sems, since)
		switch {
		case ctx.Err() != nil:
			// Also when ctx ended inside TryAcquire: the request may
			// have been recorded as a waiter, which must not stay.
			return withdraw()
		case err != nil:
			c.Release(context.WithoutCancel(ctx), holder)
			return err
		case ok:
			return nil
		}
		select {
		case <-ctx.Done():
			return withdraw()
		case <-t.C:
		}
	}
}
