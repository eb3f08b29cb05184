package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger"
)

// Leadership defaults (SPEC §2.5: a leader that loses the database steps
// down before another can be elected). A follower tries every
// DefaultLeaderRetry, give or take a quarter; a leader renews every
// DefaultLeaderTTL/3, so that two renewals may fail before the third
// must succeed. Worst failover after a leader dies: TTL + the retry with
// its jitter, about 12.5 s.
const (
	DefaultLeaderTTL   = 10 * time.Second
	DefaultLeaderRetry = 2 * time.Second
)

// elector campaigns for leadership through the store (store.Leadership)
// and keeps it: it tries to be elected every retry (jittered), and once
// elected renews at ttl/3. It trusts a term only until renewStart + ttl −
// margin on the clock (monotonic for the system clock), where renewStart
// is when the latest successful election or renewal was asked: a renewal
// that has not succeeded by then steps down (lost) before the row can run
// out in the database, where a successor could then take it. Safety does
// not rest on that timing alone: every once-only write is made under the
// term (store.CreateBuildsetParams.Term) and refused once it is not the
// leader's.
//
// elected and lost are called from the elector's goroutine, in turn:
// lost once for each elected, before the next elected, and before Stop
// returns. The term given to elected is the one to write under.
type elector struct {
	st    store.Leadership
	fence func() store.Fence
	// fenced is told when the store refused the fence: the owner is no
	// longer live (its process goes on as a new owner).
	fenced  func(error)
	elected func(ctx context.Context, t store.Term)
	lost    func(t store.Term, why error)
	log     *slog.Logger

	ttl, retry, margin time.Duration
	clock              trigger.Clock
	// storeClock says whether to hand the clock's time to the store (an
	// injected clock, in tests); otherwise the store uses its own.
	storeClock bool

	signals *TestSignals

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// errSteppedDown is the cause of a step-down: the term could not be
// renewed in time.
var errSteppedDown = errors.New("leadership: not renewed in time, stepped down")

// errResigned is the cause of the end of a term at Stop.
var errResigned = errors.New("leadership: resigned")

func (e *elector) now() time.Time {
	if e.storeClock {
		return e.clock.Now()
	}
	return time.Time{}
}

// Start makes a first attempt to be elected, synchronously (a server alone
// on its store leads before Start returns), then campaigns in a goroutine
// until Stop. Starting an elector that runs is an error.
func (e *elector) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cancel != nil {
		return errors.New("elector: " + errStarted.Error())
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	e.cancel, e.done = cancel, done
	term, at := e.attempt(ctx)
	if term != nil {
		e.begin(ctx, *term)
	}
	go func() {
		defer close(done)
		e.run(ctx, term, at)
	}()
	return nil
}

// Stop ends the campaign: a leader steps down (lost) and resigns, so that
// another may lead at once. It waits for the goroutine; safe to call twice
// and before Start. A stopped elector may start again.
func (e *elector) Stop(context.Context) {
	e.mu.Lock()
	if e.cancel != nil {
		e.cancel()
		e.cancel = nil
	}
	done := e.done
	e.mu.Unlock()
	if done != nil {
		<-done
	}
}

// attempt asks once to be elected; it returns the term won, with when it
// was asked, or nil.
func (e *elector) attempt(ctx context.Context) (*store.Term, time.Time) {
	start := e.clock.Now()
	term, err := e.st.Elect(ctx, store.ElectParams{Fence: e.fence(), TTL: e.ttl, Now: e.now()})
	switch {
	case errors.Is(err, store.ErrFenced):
		e.fenced(err)
		return nil, start
	case err != nil:
		if ctx.Err() == nil {
			e.log.Warn("leadership: election failed; trying again", "err", err)
		}
		return nil, start
	}
	return term, start
}

// run campaigns, then leads, in turn, until ctx is done.
func (e *elector) run(ctx context.Context, term *store.Term, at time.Time) {
	for {
		if term != nil {
			e.hold(ctx, *term, at)
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-e.clock.After(e.jittered()):
		}
		if term, at = e.attempt(ctx); term != nil {
			e.begin(ctx, *term)
		}
	}
}

// jittered is the retry give or take a quarter, so that followers started
// together do not ask together.
func (e *elector) jittered() time.Duration {
	q := int64(e.retry / 4)
	if q <= 0 {
		return e.retry
	}
	return e.retry - time.Duration(q) + time.Duration(rand.Int64N(2*q+1))
}

// begin starts the leader's work for term, just elected.
func (e *elector) begin(ctx context.Context, term store.Term) {
	e.log.Info("leadership: elected", "term", term.Term, "owner", term.Owner)
	e.elected(ctx, term)
	e.signals.Elected.Signal(term.Term)
}

// hold keeps term, begun when asked at start: it renews every ttl/3, and
// returns once the term is lost (not renewed in time, or taken) or ctx is
// done (then it resigns), having stopped the leader's work.
func (e *elector) hold(ctx context.Context, term store.Term, start time.Time) {
	trusted := start.Add(e.ttl - e.margin)
	next := start.Add(e.ttl / 3)
	pending, why := e.keep(ctx, &term, trusted, next)
	// The leader's work stops first, then a renewal left hanging is waited
	// for: a database that ignores the cancel must not keep this process
	// leading past its trusted end.
	e.lost(term, why)
	pending()
	if errors.Is(why, errResigned) || errors.Is(why, errSteppedDown) {
		// Give the term up, if it is still ours, so that another leads
		// now rather than when it runs out. Best effort: the database
		// may be what failed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.margin)
		if err := e.st.Resign(rctx, term); err != nil {
			e.log.Warn("leadership: resign", "term", term.Term, "err", err)
		}
		cancel()
	}
	e.log.Info("leadership: term over", "term", term.Term, "why", why)
	e.signals.Lost.Signal(term.Term)
}

// renewal is the outcome of one renewal.
type renewal struct {
	term *store.Term
	err  error
}

// keep renews term until it is lost, and returns what waits for a
// renewal it gave up on (to call once the leader's work has stopped), and
// why it was lost.
func (e *elector) keep(ctx context.Context, term *store.Term, trusted, next time.Time) (func(), error) {
	none := func() {}
	for {
		// Wait for the next renewal, but never past the trusted end.
		wait := min(next.Sub(e.clock.Now()), trusted.Sub(e.clock.Now()))
		select {
		case <-ctx.Done():
			return none, errResigned
		case <-e.clock.After(wait):
		}
		now := e.clock.Now()
		if !now.Before(trusted) {
			return none, errSteppedDown
		}
		// The renewal runs aside, so that a database that hangs does not
		// keep this leader past the trusted end.
		rctx, cancel := context.WithCancel(ctx)
		res := make(chan renewal, 1)
		go func() {
			t, err := e.st.Reelect(rctx, store.ReelectParams{Term: *term, TTL: e.ttl, Now: e.now()})
			res <- renewal{t, err}
		}()
		pending := func() { <-res }
		var r renewal
		select {
		case r = <-res:
			cancel()
		case <-ctx.Done():
			cancel()
			return pending, errResigned
		case <-e.clock.After(trusted.Sub(now)):
			cancel()
			return pending, errSteppedDown
		}
		switch {
		case r.err == nil:
			*term = *r.term
			trusted = now.Add(e.ttl - e.margin)
			next = now.Add(e.ttl / 3)
			e.signals.Renewed.Signal(term.Term)
		case errors.Is(r.err, store.ErrNotLeader):
			return none, r.err
		default:
			// The database did not answer: try again soon, while the
			// term can still be trusted.
			e.log.Warn("leadership: renewal failed; trying again", "term", term.Term, "err", r.err)
			next = e.clock.Now().Add(max(e.ttl/10, 10*time.Millisecond))
		}
	}
}
