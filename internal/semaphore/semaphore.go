// Package semaphore holds the fairness rule of semaphores (Decide: who
// gets one, and in which order; the stores only keep and lock) and a
// process's handle on the semaphores kept in the store: it registers the
// process as an owner, keeps its lease alive so that its holders are never
// taken away while it lives, and acquires and releases for the scheduler
// under the owner's fence. Reaping the owners that died is the
// coordinator's (coordinator.Reaper).
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

// Store is where a Client registers its owner, renews its lease, and
// keeps holders and waiters.
type Store interface {
	store.Semaphores
	store.Owners
}

// Client acquires semaphores as one owner: one incarnation of this
// process. Start registers it and keeps its lease; Stop stops the
// renewals and does not release holders, so a caller releases its
// buildsets first. Once its lease is lost (Lost) the incarnation is over
// for good: a stopped client is started again with another Owner, a new
// incarnation.
type Client struct {
	Store Store
	// Owner names this incarnation in the store and on the bastion
	// (coordinator.NewOwner). Set it before Start, and change it only
	// while the client is stopped.
	Owner string
	// Identity is what the store records of the owner besides its id and
	// lease (RegisterOwnerParams: Kind, Node, Host, StateDir, Version,
	// SlotsMax); its ID, Lease and Now are the client's. A zero Kind is a
	// node's.
	Identity store.RegisterOwnerParams
	// SlotsUsed, if set, is read at each renewal: the build slots in use,
	// for the store's view of the owner.
	SlotsUsed func() int
	// ConfigFP, if set, is read at each renewal: the fingerprint of the
	// config in force, recorded when it changed since registration.
	ConfigFP func() string
	// SlotsMax, if set, is read at each renewal: the build slots there are
	// now (a reload may change them).
	SlotsMax func() int
	// OnGrant, if set, hears of each request granted: its semaphores and
	// how long it waited (from the since it was asked with). Set it
	// before the first acquire.
	OnGrant func(semaphores []string, waited time.Duration)
	// Precedence ranks this client's waiters (config.Precedence.Rank).
	Precedence int
	// Lease is the lease length; renewed every Lease/3. 0: DefaultLease.
	Lease time.Duration
	// Now is the clock of the requests; nil: time.Now, and the lease is
	// judged by the store's clock (the database's, for PostgreSQL). Set,
	// it is the lease's clock too.
	Now func() time.Time
	// RenewTick, if set, paces the renewals in place of a ticker of
	// Lease/3, and Renewed, if set, hears of each renewal round once it
	// is over, with its error, from the goroutine that renews: with Now,
	// they let a test drive the rounds by hand instead of waiting for
	// time to pass.
	RenewTick <-chan time.Time
	Renewed   func(err error)

	mu      sync.Mutex
	cancel  context.CancelFunc
	stopped chan struct{} // closed once renew has returned
	fence   store.Fence
	// lost is closed once the lease is lost (nil: none asked for yet);
	// err says why.
	lost   chan struct{}
	isLost bool
	err    error
}

// ErrLeaseLost is the cause given to what runs under a lease that is
// lost: not renewed in time (renewals failed, or the process did not run
// for two thirds of the lease), or fenced by another process. Others may
// take its holders; it must write nothing more.
var ErrLeaseLost = errors.New("semaphore lease lost: not renewed in time (renewals failed, or the process was stopped) or fenced by another process, so others may take its holders")

// Lost returns a channel that is closed once the lease of this
// incarnation is lost: no renewal succeeded for two thirds of the lease,
// because renewals failed or because the process did not run (SIGSTOP, a
// paused VM), or the store refused a renewal or another write as fenced
// (Fenced). Whoever holds semaphores through this client must stop acting
// on them then, and write nothing more: another process may take its
// work over. It is never reopened; a client started again with a new
// Owner has a new channel.
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

// Fenced tells the client that the store refused one of its owner's
// writes with store.ErrFenced: the lease is lost (Lost), with err as why.
func (c *Client) Fenced(err error) { c.lose(err) }

// lose ends the lease, once: Lost is closed, and the owner fences itself
// in the store, so that a write of this incarnation still on its way is
// refused rather than taken (best effort: the store may be what failed).
func (c *Client) lose(why error) {
	c.mu.Lock()
	if c.isLost {
		c.mu.Unlock()
		return
	}
	c.isLost = true
	c.err = fmt.Errorf("%w: %w", ErrLeaseLost, why)
	if c.lost != nil {
		close(c.lost)
	}
	fence := c.fence
	c.mu.Unlock()
	if fence.Owner != "" && !errors.Is(why, store.ErrFenced) {
		ctx, cancel := context.WithTimeout(context.Background(), c.lease()/3)
		defer cancel()
		c.Store.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{fence.Owner}, Force: true})
	}
}

// Err returns why the lease was lost, or the last renewal error, or nil.
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

// leaseNow is the time a lease is judged at: the test clock, or zero (the
// store's clock).
func (c *Client) leaseNow() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Time{}
}

func (c *Client) lease() time.Duration {
	if c.Lease > 0 {
		return c.Lease
	}
	return DefaultLease
}

// Start registers Owner as a new live owner in the store and keeps
// renewing its lease, every Lease/3, until Stop or until the lease is
// lost. It fails if the registration fails. A client stopped may be
// started again with another Owner.
func (c *Client) Start(ctx context.Context) error {
	p := c.Identity
	p.ID, p.Lease, p.Now = c.Owner, c.lease(), c.leaseNow()
	if p.Kind == "" {
		p.Kind = store.OwnerNode
	}
	fence, err := c.Store.RegisterOwner(ctx, p)
	if err != nil {
		return fmt.Errorf("semaphore: register %s: %w", c.Owner, err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	c.mu.Lock()
	// A channel handed out before Start is this incarnation's; a lost
	// one is the last incarnation's.
	lost := c.lost
	if lost == nil || c.isLost {
		lost = make(chan struct{})
	}
	c.fence, c.cancel, c.stopped = fence, cancel, stopped
	c.lost, c.isLost, c.err = lost, false, nil
	c.mu.Unlock()
	go func() {
		defer close(stopped)
		c.renew(ctx, fence, lost)
	}()
	return nil
}

// renew renews the lease every Lease/3. Once two thirds of the lease have
// passed since the last renewal that succeeded began, the lease is lost,
// even if the renewal would now succeed: a process that did not run for
// that long must not go on as if nothing could have been taken from it.
// A renewal the store refuses as fenced loses it too. Either way the
// renewals end.
func (c *Client) renew(ctx context.Context, fence store.Fence, lost <-chan struct{}) {
	tick, stop := c.ticker(c.RenewTick)
	defer stop()
	renewed := c.now() // when the last renewal that succeeded began
	for {
		select {
		case <-ctx.Done():
			return
		case <-lost:
			return
		case <-tick:
		}
		at := c.now()
		if at.Sub(renewed) >= 2*c.lease()/3 {
			c.lose(fmt.Errorf("not renewed for %v", at.Sub(renewed).Round(time.Millisecond)))
		}
		var err error
		if c.lostNow() {
			err = c.Err()
		} else {
			// A renewal that hangs is as bad as one that fails: bound it.
			rctx, cancel := context.WithTimeout(ctx, c.lease()/3)
			p := store.RenewOwnerParams{Fence: fence, Lease: c.lease(), Now: c.leaseNow()}
			if c.SlotsUsed != nil {
				p.SlotsUsed = c.SlotsUsed()
			}
			if c.ConfigFP != nil {
				p.ConfigFP = c.ConfigFP()
			}
			if c.SlotsMax != nil {
				p.SlotsMax = c.SlotsMax()
			}
			_, err = c.Store.RenewOwner(rctx, p)
			cancel()
			if ctx.Err() != nil {
				return
			}
			switch {
			case err == nil:
				renewed = at
			case errors.Is(err, store.ErrFenced):
				c.lose(err)
			case c.now().Sub(renewed) >= 2*c.lease()/3:
				c.lose(err)
			default:
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
		}
		if c.Renewed != nil {
			c.Renewed(err)
		}
		if c.lostNow() {
			return
		}
	}
}

// lostNow reports whether the lease is lost.
func (c *Client) lostNow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isLost
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

// Fence is this incarnation's right to write for the work it owns, which
// writes of that work carry: its owner and the live epoch the store gave
// it at Start. Once the lease is lost, the store refuses it.
func (c *Client) Fence() store.Fence {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fence
}

// TryAcquire asks for every semaphore of sems for holder, all or nothing,
// at the client's Precedence.
// A holder id "<buildset>/<job>" or "<buildset>" ties it to its buildset.
func (c *Client) TryAcquire(ctx context.Context, holder string, sems map[string]int, since time.Time) (bool, error) {
	return c.Ranked(c.Precedence).TryAcquire(ctx, holder, sems, since)
}

// Release drops what holder holds or waits for. Once the lease is lost it
// writes nothing and returns why: what holder holds is left for whoever
// takes this owner's work over.
func (c *Client) Release(ctx context.Context, holder string) error {
	if err := c.lostErr(); err != nil {
		return err
	}
	return c.reported(c.Store.ReleaseSemaphores(ctx, holder, c.Fence()))
}

// lostErr is why the lease is lost, or nil.
func (c *Client) lostErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isLost {
		return c.err
	}
	return nil
}

// reported is err, told to Fenced first if the store refused it as
// fenced.
func (c *Client) reported(err error) error {
	if errors.Is(err, store.ErrFenced) {
		c.Fenced(err)
	}
	return err
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
	if err := r.c.lostErr(); err != nil {
		return false, err
	}
	now := r.c.now()
	fence := r.c.Fence()
	ok, err := TryAcquire(ctx, r.c.Store, Request{
		Holder: holder, Buildset: bs, Owner: fence.Owner, Fence: fence, Semaphores: sems,
		Precedence: r.precedence, Since: since, Now: now,
	})
	err = r.c.reported(err)
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
