package storetest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// Leadership: one leader at a time, terms that only grow, and cron ticks
// and poll marks claimed with the buildset they make.

const ttl = 10 * time.Second

func elect(t *testing.T, s store.Store, f store.Fence, now time.Time) *store.Term {
	t.Helper()
	term, err := s.Elect(t.Context(), store.ElectParams{Fence: f, TTL: ttl, Now: now})
	must(t, "elect "+f.Owner, err)
	return term
}

func leader(t *testing.T, s store.Store) *store.Term {
	t.Helper()
	term, err := s.Leader(t.Context())
	must(t, "leader", err)
	return term
}

// testLeaderOne: of two candidates, the first leads and the second is
// told another does (nil); the row says who, from when, until when.
func testLeaderOne(t *testing.T, s store.Store) {
	if l := leader(t, s); l != nil {
		t.Fatalf("leader of a new store = %+v, want none", l)
	}
	a, b := own(t, s, "a"), own(t, s, "b")
	ta := elect(t, s, a, t0)
	if ta == nil || ta.Owner != "a" || ta.Term < 1 {
		t.Fatalf("a's election = %+v, want a term of a", ta)
	}
	diff(t, "a's term", &store.Term{Owner: "a", Term: ta.Term, ElectedAt: t0.UTC().Truncate(time.Microsecond), ExpiresAt: at(ttl).UTC().Truncate(time.Microsecond)}, ta)
	if tb := elect(t, s, b, at(time.Second)); tb != nil {
		t.Fatalf("b was elected while a leads: %+v", tb)
	}
	diff(t, "leader", ta, leader(t, s))
	// The leader's term runs until its end, inclusive.
	if tb := elect(t, s, b, at(ttl)); tb != nil {
		t.Fatalf("b was elected at the last instant of a's term: %+v", tb)
	}
}

// testLeaderRace: of candidates at once, exactly one leads.
func testLeaderRace(t *testing.T, s store.Store) {
	const n = 8
	fences := make([]store.Fence, n)
	for i := range fences {
		fences[i] = own(t, s, string(rune('a'+i)))
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		terms []*store.Term
	)
	for _, f := range fences {
		wg.Go(func() {
			term, err := s.Elect(t.Context(), store.ElectParams{Fence: f, TTL: ttl, Now: t0})
			if err != nil {
				t.Error(err)
				return
			}
			if term != nil {
				mu.Lock()
				terms = append(terms, term)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(terms) != 1 {
		t.Fatalf("%d candidates were elected at once: %+v", len(terms), terms)
	}
	diff(t, "leader", terms[0], leader(t, s))
}

// testLeaderExpiry: a term not renewed runs out; the next candidate gets a
// higher term, and the old leader can no longer renew.
func testLeaderExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := own(t, s, "a"), own(t, s, "b")
	ta := elect(t, s, a, t0)
	// Renewed: the same term, a later end.
	re, err := s.Reelect(ctx, store.ReelectParams{Term: *ta, TTL: ttl, Now: at(5 * time.Second)})
	must(t, "reelect", err)
	want := *ta
	want.ExpiresAt = at(5*time.Second + ttl).UTC().Truncate(time.Microsecond)
	diff(t, "renewed term", &want, re)
	end := at(5*time.Second + ttl + time.Microsecond)
	tb := elect(t, s, b, end)
	if tb == nil || tb.Owner != "b" || tb.Term <= ta.Term {
		t.Fatalf("b's election once a's term ran out = %+v, want a term of b above %d", tb, ta.Term)
	}
	_, err = s.Reelect(ctx, store.ReelectParams{Term: *re, TTL: ttl, Now: end})
	wantErr(t, "a renews a term b took", err, store.ErrNotLeader)
	diff(t, "leader", tb, leader(t, s))
}

// testLeaderReelectExpired: a term that ran out is not renewed, even
// before anyone took it.
func testLeaderReelectExpired(t *testing.T, s store.Store) {
	a := own(t, s, "a")
	ta := elect(t, s, a, t0)
	_, err := s.Reelect(t.Context(), store.ReelectParams{Term: *ta, TTL: ttl, Now: at(ttl + time.Microsecond)})
	wantErr(t, "renew a term that ran out", err, store.ErrNotLeader)
	diff(t, "leader, unchanged", ta, leader(t, s))
	// Its owner may be elected again, for a new term.
	again := elect(t, s, a, at(ttl+time.Microsecond))
	if again == nil || again.Term <= ta.Term {
		t.Fatalf("a's new election = %+v, want a term above %d", again, ta.Term)
	}
}

// testLeaderResign: a resigned term is gone at once, and resigning a term
// gone already changes nothing.
func testLeaderResign(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := own(t, s, "a"), own(t, s, "b")
	ta := elect(t, s, a, t0)
	must(t, "resign", s.Resign(ctx, *ta))
	if l := leader(t, s); l != nil {
		t.Fatalf("leader after resigning = %+v, want none", l)
	}
	tb := elect(t, s, b, at(time.Second))
	if tb == nil || tb.Term <= ta.Term {
		t.Fatalf("b's election after a resigned = %+v, want a term above %d", tb, ta.Term)
	}
	must(t, "resign again", s.Resign(ctx, *ta))
	diff(t, "leader, after a stale resignation", tb, leader(t, s))
	// A leader elected again (it gave its term up) gets a new term.
	tb2 := elect(t, s, b, at(2*time.Second))
	if tb2 == nil || tb2.Term <= tb.Term {
		t.Fatalf("b's second election = %+v, want a term above %d", tb2, tb.Term)
	}
}

// testLeaderFenced: fencing an owner ends its leadership, and a fenced
// owner is never elected.
func testLeaderFenced(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := own(t, s, "a"), own(t, s, "b")
	ta := elect(t, s, a, t0)
	fence(t, s, "a")
	if l := leader(t, s); l != nil {
		t.Fatalf("leader after its owner was fenced = %+v, want none", l)
	}
	_, err := s.Reelect(ctx, store.ReelectParams{Term: *ta, TTL: ttl, Now: at(time.Second)})
	wantErr(t, "renew a fenced owner's term", err, store.ErrNotLeader)
	counter, counts := s.(interface{ FencedWrites() int64 })
	var before int64
	if counts {
		before = counter.FencedWrites()
	}
	_, err = s.Elect(ctx, store.ElectParams{Fence: a, TTL: ttl, Now: at(time.Second)})
	wantErr(t, "elect a fenced owner", err, store.ErrFenced)
	_, err = s.Elect(ctx, store.ElectParams{Fence: store.Fence{Owner: "never-registered", Epoch: 1}, TTL: ttl, Now: at(time.Second)})
	wantErr(t, "elect an owner never registered", err, store.ErrFenced)
	if counts {
		if n := counter.FencedWrites() - before; n != 2 {
			t.Errorf("fenced writes counted: %d, want the 2 refused", n)
		}
	}
	if tb := elect(t, s, b, at(time.Second)); tb == nil || tb.Term <= ta.Term {
		t.Fatalf("b's election = %+v, want a term above %d", tb, ta.Term)
	}
}

// testCronTicks: a tick is claimed with its buildset, once; a tick taken
// makes nothing.
func testCronTicks(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := own(t, s, "a")
	term := elect(t, s, a, t0)
	if _, ok, err := s.LastCronTick(ctx, "nightly"); err != nil || ok {
		t.Fatalf("last tick of a pipeline never fired: %v, %v", ok, err)
	}
	tick := at(time.Hour)
	mk := func(id string, tick time.Time, term *store.Term) error {
		return s.CreateBuildset(ctx, store.CreateBuildsetParams{
			Buildset: &store.Buildset{ID: id, Pipeline: "nightly", Commit: "c1", CreatedAt: tick}, Jobs: []string{"deploy"},
			Cron: &store.CronTick{Tick: tick}, Term: term,
		})
	}
	must(t, "fire", mk("bs1", tick, term))
	wantErr(t, "fire the same tick again", mk("bs2", tick, term), store.ErrTickTaken)
	_, err := s.GetBuildset(ctx, "bs2")
	wantErr(t, "the buildset of a tick taken", err, store.ErrNotFound)
	last, ok, err := s.LastCronTick(ctx, "nightly")
	must(t, "last tick", err)
	if !ok || !last.Equal(tick) || last.Location() != time.UTC {
		t.Errorf("last tick = %v, %v; want %v in UTC", last, ok, tick)
	}
	// Another pipeline's tick of the same time is its own.
	must(t, "another pipeline", s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "bs3", Pipeline: "hourly", Commit: "c1", CreatedAt: tick}, Cron: &store.CronTick{Tick: tick},
	}))
	// A term that is no longer the leader's makes nothing.
	must(t, "resign", s.Resign(ctx, *term))
	wantErr(t, "fire under a term gone", mk("bs4", at(2*time.Hour), term), store.ErrNotLeader)
	_, err = s.GetBuildset(ctx, "bs4")
	wantErr(t, "the buildset of a term gone", err, store.ErrNotFound)
	if last, _, _ := s.LastCronTick(ctx, "nightly"); !last.Equal(tick) {
		t.Errorf("last tick after a refused one = %v, want %v", last, tick)
	}
	next := elect(t, s, a, at(time.Minute))
	must(t, "fire the next tick", mk("bs5", at(2*time.Hour), next))
	if last, _, _ := s.LastCronTick(ctx, "nightly"); !last.Equal(at(2 * time.Hour)) {
		t.Errorf("last tick = %v, want %v", last, at(2*time.Hour))
	}
}

// testCronTickRace: of processes firing one tick at once, exactly one
// makes a buildset.
func testCronTickRace(t *testing.T, s store.Store) {
	ContendTick(t, []store.Store{s})
}

// ContendTick has several goroutines, spread over stores (handles on one
// database), fire the same cron tick at once: exactly one makes its
// buildset, the others get ErrTickTaken.
func ContendTick(t *testing.T, stores []store.Store) {
	ctx := t.Context()
	const n = 6
	tick := at(time.Hour)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		made []string
	)
	for i := range n {
		s := stores[i%len(stores)]
		wg.Go(func() {
			id := "bs" + string(rune('a'+i))
			err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
				Buildset: &store.Buildset{ID: id, Pipeline: "nightly", Commit: "c1", CreatedAt: tick}, Jobs: []string{"deploy"},
				Cron: &store.CronTick{Tick: tick},
			})
			switch {
			case err == nil:
				mu.Lock()
				made = append(made, id)
				mu.Unlock()
			case !errors.Is(err, store.ErrTickTaken):
				t.Errorf("fire %s: %v", id, err)
			}
		})
	}
	wg.Wait()
	if len(made) != 1 {
		t.Fatalf("buildsets made for one tick: %v, want one", made)
	}
	all, err := stores[0].ListBuildsets(ctx, store.Filter{Pipeline: "nightly"})
	must(t, "list", err)
	if len(all) != 1 || all[0].ID != made[0] {
		t.Errorf("buildsets of the pipeline = %v, want [%s]", ids(all), made[0])
	}
}

// testPollSwap: a poller's mark moves with the buildset it makes, only
// from the value it last saw.
func testPollSwap(t *testing.T, s store.Store) {
	ctx := t.Context()
	n := 0
	mk := func(old, new string) error {
		n++
		return s.CreateBuildset(ctx, store.CreateBuildsetParams{
			Buildset: &store.Buildset{ID: "bs" + string(rune('0'+n)), Pipeline: "deploy", Commit: new, CreatedAt: at(time.Duration(n) * time.Second)},
			Poll:     &store.MarkSwap{Key: "poll/deploy", Old: old, New: new},
		})
	}
	mark := func() string {
		t.Helper()
		v, err := s.GetMark(ctx, "poll/deploy")
		must(t, "mark", err)
		return v
	}
	must(t, "first head", mk("", "c1"))
	if v := mark(); v != "c1" {
		t.Fatalf("mark = %q, want c1", v)
	}
	wantErr(t, "from a mark not set, when it is", mk("", "c2"), store.ErrMarkChanged)
	wantErr(t, "from a stale head", mk("c0", "c2"), store.ErrMarkChanged)
	if v := mark(); v != "c1" {
		t.Fatalf("mark after refused swaps = %q, want c1", v)
	}
	all, err := s.ListBuildsets(ctx, store.Filter{Pipeline: "deploy"})
	must(t, "list", err)
	if len(all) != 1 {
		t.Fatalf("buildsets = %v, want only the first", ids(all))
	}
	must(t, "next head", mk("c1", "c2"))
	if v := mark(); v != "c2" {
		t.Fatalf("mark = %q, want c2", v)
	}
}
