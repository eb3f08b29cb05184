package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
	"github.com/sortie-ci/sortie/internal/trigger/triggertest"
)

// onStores runs fn on each store kind; open returns a new handle on one
// database of that kind (another process's, as far as the store can
// tell), closed when the test ends.
func onStores(t *testing.T, fn func(t *testing.T, open func() store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sortie.db")
		fn(t, func() store.Store {
			s, err := sqlite.Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.NewDatabase(t)
		fn(t, func() store.Store {
			s, err := postgres.Open(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
}

// TestLeaderAloneLeadsAtOnce: a server alone on its store leads before
// Start returns, and resigns at Stop.
func TestLeaderAloneLeadsAtOnce(t *testing.T) {
	h := newHarness(t, serialConfig)
	h.start()
	term := h.c.Leading()
	if term == nil || term.Owner != h.c.Owner() {
		t.Fatalf("leading after Start = %+v, want a term of %s", term, h.c.Owner())
	}
	if st := h.c.Status(); !st.Leader || st.Term != term.Term {
		t.Errorf("status = leader %v term %d, want leader of term %d", st.Leader, st.Term, term.Term)
	}
	if got, _ := h.c.TestSignals.Elected.Wait(waitCtx(t)); got != term.Term {
		t.Errorf("elected signal = %d, want %d", got, term.Term)
	}
	h.c.Stop(context.Background())
	if got, _ := h.c.TestSignals.Lost.Wait(waitCtx(t)); got != term.Term {
		t.Errorf("lost signal = %d, want %d", got, term.Term)
	}
	if l, err := h.st.Leader(t.Context()); err != nil || l != nil {
		t.Errorf("leader row after Stop = %+v, %v; want none (resigned)", l, err)
	}
	if h.c.Leading() != nil {
		t.Error("still leading after Stop")
	}
}

// TestLeaderAfterCrash: a server started on the state dir of one that died
// while it led leads at once: fencing its predecessor ended that term,
// without waiting for it to run out.
func TestLeaderAfterCrash(t *testing.T) {
	h := newHarness(t, serialConfig)
	ctx := t.Context()
	host := hostname()
	dead, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{
		ID: NewOwner(), Kind: store.OwnerNode, Node: host, Host: host, StateDir: h.state, Lease: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	old, err := h.st.Elect(ctx, store.ElectParams{Fence: dead, TTL: time.Hour})
	if err != nil || old == nil {
		t.Fatalf("the predecessor's election: %+v, %v", old, err)
	}
	h.start()
	term := h.c.Leading()
	if term == nil || term.Term <= old.Term {
		t.Fatalf("leading after a crash = %+v, want a term above %d", term, old.Term)
	}
}

// TestLeaderHandover: of two servers on one store, one leads; when it
// stops, the other leads, for a higher term, and the first runs nothing
// of the leader's any more.
func TestLeaderHandover(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		o := harnessOptions{leaderRetry: 20 * time.Millisecond}
		o.store = open()
		a := newHarnessWith(t, serialConfig, o)
		o.store, o.repo = open(), a.repo
		b := newHarnessWith(t, serialConfig, o)
		a.start()
		b.start()
		ta := a.c.Leading()
		if ta == nil {
			t.Fatal("the first server does not lead")
		}
		if b.c.Leading() != nil {
			t.Fatal("both servers lead")
		}
		a.c.Stop(context.Background())
		waitSignal(t, "a's term over", &a.c.TestSignals.Lost, ta.Term)
		tb, err := b.c.TestSignals.Elected.Wait(waitCtx(t))
		if err != nil {
			t.Fatalf("waiting for b to lead: %v", err)
		}
		if tb <= ta.Term {
			t.Errorf("b's term %d, want above a's %d", tb, ta.Term)
		}
		if a.c.Leading() != nil || a.c.triggers.running() || a.c.admission.running() || a.c.reaping.running() {
			t.Error("a still does the leader's work")
		}
		if !b.c.admission.running() || !b.c.triggers.running() || !b.c.reaping.running() {
			t.Error("b leads but does not do the leader's work")
		}
	})
}

// blockingRenewals is a store whose renewals hang until asked to go on
// (a database that stopped answering), once block is set.
type blockingRenewals struct {
	store.Store
	mu    sync.Mutex
	block bool
}

func (s *blockingRenewals) Reelect(ctx context.Context, p store.ReelectParams) (*store.Term, error) {
	s.mu.Lock()
	block := s.block
	s.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.Store.Reelect(ctx, p)
}

// newElector makes an elector on st for a new owner, with a fake clock at
// now, a TTL of 10 s and a margin of 1 s; elected and lost record the
// terms.
func newElector(t *testing.T, st store.Store, clock *triggertest.Clock) (*elector, *TestSignals) {
	t.Helper()
	f, err := st.RegisterOwner(t.Context(), store.RegisterOwnerParams{ID: NewOwner(), Kind: store.OwnerNode, Lease: time.Hour, Now: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	sig := &TestSignals{}
	sig.Init()
	e := &elector{
		st: st, fence: func() store.Fence { return f }, fenced: func(err error) { t.Errorf("fenced: %v", err) },
		elected: func(context.Context, store.Term) {}, lost: func(store.Term, error) {},
		log: slog.New(slog.DiscardHandler), ttl: 10 * time.Second, retry: 2 * time.Second, margin: time.Second,
		clock: clock, storeClock: true, signals: sig,
	}
	t.Cleanup(func() { e.Stop(context.Background()) })
	return e, sig
}

// TestElectorRenews: a leader renews its term every TTL/3, keeping its
// number, and the row's end moves with each renewal.
func TestElectorRenews(t *testing.T) {
	st := newHarness(t, serialConfig).st
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := triggertest.NewClock(t0)
	e, sig := newElector(t, st, clock)
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	term, _ := sig.Elected.Wait(waitCtx(t))
	for i := 1; i <= 5; i++ {
		// The wait for the next renewal, a third of the TTL on: each
		// renewal also leaves the wait for the trusted end it gave up on
		// pending, which WaitForWaiters would count.
		clock.WaitForWaiterAt(t, clock.Now().Add(e.ttl/3))
		clock.Advance(e.ttl / 3)
		if got, err := sig.Renewed.Wait(waitCtx(t)); err != nil || got != term {
			t.Fatalf("renewal %d: term %d, %v; want %d", i, got, err, term)
		}
		l, err := st.Leader(t.Context())
		if err != nil || l == nil || l.Term != term || !l.ExpiresAt.Equal(clock.Now().Add(e.ttl)) {
			t.Fatalf("row after renewal %d at %v = %+v, %v; want term %d until %v", i, clock.Now(), l, err, term, clock.Now().Add(e.ttl))
		}
	}
	if lost := sig.Lost.Pending(); len(lost) > 0 {
		t.Errorf("terms lost while renewing: %v", lost)
	}
}

// TestElectorStepsDown: a leader whose renewal does not come back steps
// down when it can no longer trust its term, before the row runs out in
// the store, where another could take it; then it asks to lead again.
func TestElectorStepsDown(t *testing.T) {
	st := &blockingRenewals{Store: newHarness(t, serialConfig).st}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := triggertest.NewClock(t0)
	e, sig := newElector(t, st, clock)
	var (
		mu       sync.Mutex
		stopping []time.Time // the clock when the leader's work was stopped
		why      error
	)
	e.lost = func(_ store.Term, err error) {
		mu.Lock()
		defer mu.Unlock()
		stopping, why = append(stopping, clock.Now()), err
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	term, _ := sig.Elected.Wait(waitCtx(t))
	st.mu.Lock()
	st.block = true
	st.mu.Unlock()
	// The renewal at TTL/3 hangs; the leader waits for it only until it
	// can no longer trust its term.
	clock.WaitForWaiterAt(t, t0.Add(e.ttl/3))
	clock.Advance(e.ttl / 3)
	clock.WaitForWaiterAt(t, t0.Add(e.ttl-e.margin)) // the trusted end
	row, err := st.Leader(t.Context())
	if err != nil || row == nil {
		t.Fatalf("leader row: %+v, %v", row, err)
	}
	if got := sig.Lost.Pending(); len(got) > 0 {
		t.Fatalf("stepped down before the trusted end: %v", got)
	}
	clock.Set(t0.Add(e.ttl - e.margin))
	waitSignal(t, "step down", &sig.Lost, term)
	mu.Lock()
	defer mu.Unlock()
	if len(stopping) != 1 || !errors.Is(why, errSteppedDown) {
		t.Fatalf("the leader's work stopped at %v, because %v; want once, stepping down", stopping, why)
	}
	if !stopping[0].Before(row.ExpiresAt) {
		t.Errorf("stepped down at %v, not before the row's end %v", stopping[0], row.ExpiresAt)
	}
	// It resigned what it could not renew: another may lead at once.
	if l, err := st.Leader(t.Context()); err != nil || l != nil {
		t.Errorf("leader row after stepping down = %+v, %v; want none", l, err)
	}
}

// cronConfig fires every hour.
const cronConfig = `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  hourly:
    trigger: {cron: "0 * * * *"}
    jobs: [boot, work]
`

func hour(h, m int) time.Time { return time.Date(2026, 1, 2, h, m, 0, 0, time.UTC) }

// waitFired waits for the next cron tick h fired.
func waitFired(t *testing.T, h *harness) Fired {
	t.Helper()
	f, err := h.c.TestSignals.Fired.Wait(waitCtx(t))
	if err != nil {
		t.Fatalf("waiting for a cron tick: %v", err)
	}
	return f
}

// checkTicks fails unless the hourly pipeline has one buildset per tick
// of want, and the latest tick claimed is want's last.
func checkTicks(t *testing.T, st store.Store, want ...time.Time) {
	t.Helper()
	list, err := st.ListBuildsets(t.Context(), store.Filter{Pipeline: "hourly"})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(want) {
		for _, bs := range list {
			t.Logf("%s: %s", bs.ID, bs.Cause)
		}
		t.Fatalf("%d buildsets, want %d (one per tick %v)", len(list), len(want), want)
	}
	last, ok, err := st.LastCronTick(t.Context(), "hourly")
	if err != nil || !ok || !last.Equal(want[len(want)-1]) {
		t.Errorf("last tick = %v %v %v, want %v", last, ok, err, want[len(want)-1])
	}
}

// TestCronLeaderChange: a tick fired by a leader is not fired again by
// the next one, which fires the following tick, once.
func TestCronLeaderChange(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		clock := triggertest.NewClock(hour(10, 7))
		o := harnessOptions{clock: clock, leaderRetry: 20 * time.Millisecond}
		o.store = open()
		a := newHarnessWith(t, cronConfig, o)
		o.store, o.repo = open(), a.repo
		b := newHarnessWith(t, cronConfig, o)
		a.start()
		b.start()
		clock.WaitForWaiters(t, 1) // a's timer, for 11:00
		clock.Set(hour(11, 0))
		if f := waitFired(t, a); f.Buildset == "" || !f.Tick.Equal(hour(11, 0)) {
			t.Fatalf("a fired %+v, want a buildset for 11:00", f)
		}
		ta := a.c.Leading().Term
		a.c.Stop(context.Background())
		waitSignal(t, "a's term over", &a.c.TestSignals.Lost, ta)
		if _, err := b.c.TestSignals.Elected.Wait(waitCtx(t)); err != nil {
			t.Fatalf("waiting for b to lead: %v", err)
		}
		// a's stopped timer still waits on the clock, and b's timer, from
		// the last tick claimed, waits for 12:00: 11:00 is not fired again.
		clock.WaitForWaiters(t, 2)
		if f := b.c.TestSignals.Fired.Pending(); len(f) > 0 {
			t.Fatalf("b fired %+v before 12:00", f)
		}
		clock.Set(hour(12, 0))
		if f := waitFired(t, b); f.Buildset == "" || !f.Tick.Equal(hour(12, 0)) {
			t.Fatalf("b fired %+v, want a buildset for 12:00", f)
		}
		checkTicks(t, b.st, hour(11, 0), hour(12, 0))
	})
}

// TestCronMissedOverFailover: ticks that pass while no server leads fire
// once when one leads again, recorded under the latest of them.
func TestCronMissedOverFailover(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		clock := triggertest.NewClock(hour(10, 7))
		o := harnessOptions{clock: clock}
		o.store = open()
		a := newHarnessWith(t, cronConfig, o)
		o.store, o.repo = open(), a.repo
		b := newHarnessWith(t, cronConfig, o)
		a.start()
		clock.WaitForWaiters(t, 1)
		clock.Set(hour(11, 0))
		if f := waitFired(t, a); f.Buildset == "" {
			t.Fatalf("a fired %+v", f)
		}
		a.c.Stop(context.Background())
		// Nobody leads over 12:00 and 13:00 (moving the clock fires a's
		// stopped timer's wait, which does nothing).
		clock.Set(hour(13, 30))
		b.start()
		f := waitFired(t, b)
		if f.Buildset == "" || !f.Tick.Equal(hour(13, 0)) {
			t.Fatalf("b fired %+v, want one buildset for the ticks missed, under 13:00", f)
		}
		clock.WaitForWaiters(t, 1) // b waits for 14:00: nothing else was fired
		checkTicks(t, b.st, hour(11, 0), hour(13, 0))
	})
}

// TestCronStaleLeader: a leader whose term was taken without its knowing
// fires a tick with the new leader: one buildset is made, by the new one.
func TestCronStaleLeader(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		clock := triggertest.NewClock(hour(10, 7))
		// Terms that outlast the test: a must not learn from a renewal
		// that its term is over.
		o := harnessOptions{clock: clock, leaderTTL: time.Hour}
		o.store = open()
		a := newHarnessWith(t, cronConfig, o)
		o.store, o.repo = open(), a.repo
		b := newHarnessWith(t, cronConfig, o)
		a.start()
		// a's term ends in the store (as if it ran out while a was
		// stopped) and b is elected; a does not know yet.
		if err := a.st.Resign(t.Context(), *a.c.Leading()); err != nil {
			t.Fatal(err)
		}
		b.start()
		if b.c.Leading() == nil || a.c.Leading() == nil {
			t.Fatal("want both to believe they lead")
		}
		clock.WaitForWaiters(t, 2)
		clock.Set(hour(11, 0))
		fa, fb := waitFired(t, a), waitFired(t, b)
		if fb.Buildset == "" {
			t.Errorf("the leader fired %+v, want a buildset", fb)
		}
		if fa.Buildset != "" || !errors.Is(fa.Err, store.ErrNotLeader) {
			t.Errorf("the stale leader fired %+v, want nothing made: not the leader", fa)
		}
		checkTicks(t, b.st, hour(11, 0))
	})
}

// TestCronTickRace: two servers on one store firing one tick at once make
// one buildset; the other finds it fired.
func TestCronTickRace(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		o := harnessOptions{}
		o.store = open()
		a := newHarnessWith(t, cronConfig, o)
		o.store, o.repo = open(), a.repo
		b := newHarnessWith(t, cronConfig, o)
		tick := &store.CronTick{Tick: hour(11, 0)}
		var (
			wg   sync.WaitGroup
			errs [2]error
		)
		for i, h := range []*harness{a, b} {
			wg.Go(func() {
				_, errs[i] = h.runner.Create(t.Context(), h.cfg.Load(), buildset.Event{Pipeline: "hourly", Cause: "cron", Cron: tick})
			})
		}
		wg.Wait()
		made, taken := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				made++
			case errors.Is(err, store.ErrTickTaken):
				taken++
			default:
				t.Errorf("fire: %v", err)
			}
		}
		if made != 1 || taken != 1 {
			t.Errorf("made %d, found fired %d; want one each", made, taken)
		}
		checkTicks(t, a.st, hour(11, 0))
	})
}

// TestLeaderFencedGoesOn: a leader fenced by another process (its lease
// ran out, say after a SIGSTOP) loses its term with its right to write:
// it stops the leader's work, goes on as a new owner, and leads again for
// a new term.
func TestLeaderFencedGoesOn(t *testing.T) {
	h := newHarnessWith(t, serialConfig, harnessOptions{leaderTTL: 1500 * time.Millisecond, leaderRetry: 20 * time.Millisecond})
	h.start()
	old, first := h.c.Owner(), h.c.Leading()
	if first == nil {
		t.Fatal("not leading after Start")
	}
	if _, err := h.st.FenceOwners(t.Context(), store.FenceOwnersParams{IDs: []string{old}, Force: true}); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, "the fenced term over", &h.c.TestSignals.Lost, first.Term)
	var next string
	for wctx := waitCtx(t); next == "" || next == old; {
		var err error
		if next, err = h.c.TestSignals.Registered.Wait(wctx); err != nil {
			t.Fatalf("waiting for a new registration: %v", err)
		}
	}
	// The terms elected since (a slow renewal may have made the old owner
	// step down and lead again before it was fenced), until one is the
	// new owner's.
	for wctx := waitCtx(t); ; {
		term, err := h.c.TestSignals.Elected.Wait(wctx)
		if err != nil {
			t.Fatalf("waiting to lead as the new owner: %v", err)
		}
		l, err := h.st.Leader(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if l != nil && l.Term == term && l.Owner == next {
			if term <= first.Term {
				t.Errorf("the new owner's term %d, want above %d", term, first.Term)
			}
			return
		}
	}
}

// pollConfig polls main every minute.
const pollConfig = `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  deploy:
    trigger: {push: {branch: main, poll: 1m}}
    jobs: [boot, work]
`

// TestPollMoveOverFailover: a branch that moves while no server leads is
// deployed by the next leader: the head its predecessor saw first is in
// the store.
func TestPollMoveOverFailover(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		clock := triggertest.NewClock(hour(10, 0))
		o := harnessOptions{clock: clock}
		o.store = open()
		a := newHarnessWith(t, pollConfig, o)
		o.store, o.repo = open(), a.repo
		b := newHarnessWith(t, pollConfig, o)
		a.start()
		clock.WaitForWaiters(t, 1) // a polled once, and waits
		a.c.Stop(context.Background())
		if err := os.WriteFile(filepath.Join(a.repo, "README"), []byte("moved\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		head := sourcetest.Commit(t, a.repo, "move")
		b.start()
		ev, err := b.c.TestSignals.Ended.Wait(waitCtx(t))
		if err != nil {
			t.Fatalf("waiting for the deploy of the move: %v", err)
		}
		bs := b.get(ev.Buildset)
		if bs.Commit != head || !strings.Contains(bs.Cause, "polling") || ev.Result != store.Success {
			t.Errorf("buildset %s at %s (%q): %s; want the new head %s, by polling, SUCCESS", bs.ID, bs.Commit, bs.Cause, ev.Result, head)
		}
		if v, err := b.st.GetMark(t.Context(), pollMark("deploy")); err != nil || v != head {
			t.Errorf("poll mark = %q, %v; want %s", v, err, head)
		}
	})
}
