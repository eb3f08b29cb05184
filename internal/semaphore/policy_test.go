package semaphore_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func holder(sem, h string) store.Holder {
	return store.Holder{Semaphore: sem, Holder: h, Buildset: h, Owner: "p", AcquiredAt: t0}
}

// waiter is a live waiter row of owner "p".
func waiter(sem, h string, precedence int, since time.Time) store.WaiterView {
	return store.WaiterView{Waiter: store.Waiter{Semaphore: sem, Holder: h, Buildset: h, Owner: "p", Precedence: precedence, Since: since}, Alive: true}
}

func dead(w store.WaiterView) store.WaiterView {
	w.Owner, w.Alive = "dead", false
	return w
}

func key(sem, h string) store.WaiterKey { return store.WaiterKey{Semaphore: sem, Holder: h} }

// request is a request of holder "me" (owner "p") at precedence 1, since
// and now t0.
func request(sems map[string]int) semaphore.Request {
	return semaphore.Request{Holder: "me", Buildset: "me", Owner: "p", Semaphores: sems, Precedence: 1, Since: t0, Now: t0}
}

func grants(sems ...string) []store.Holder {
	var out []store.Holder
	for _, s := range sems {
		out = append(out, store.Holder{Semaphore: s, Holder: "me", Buildset: "me", Owner: "p", AcquiredAt: t0})
	}
	return out
}

func waits(precedence int, since time.Time, sems ...string) []store.Waiter {
	var out []store.Waiter
	for _, s := range sems {
		out = append(out, store.Waiter{Semaphore: s, Holder: "me", Buildset: "me", Owner: "p", Precedence: precedence, Since: since})
	}
	return out
}

// TestDecide pins the fairness rule case by case, on views as a store
// would read them.
func TestDecide(t *testing.T) {
	step := semaphore.PrecedenceAging
	for _, tt := range []struct {
		name    string
		req     func(r *semaphore.Request)
		sems    map[string]int
		holders []store.Holder
		waiters []store.WaiterView
		granted bool
		want    store.SemaphoreChange
	}{
		{
			name: "free", sems: map[string]int{"A": 1, "B": 2},
			granted: true, want: store.SemaphoreChange{AddHolders: grants("A", "B")},
		},
		{
			name: "all or nothing: B has room, A none", sems: map[string]int{"A": 1, "B": 2},
			holders: []store.Holder{holder("A", "x")},
			want:    store.SemaphoreChange{AddWaiters: waits(1, t0, "A", "B")},
		},
		{
			name: "max reached", sems: map[string]int{"S": 3},
			holders: []store.Holder{holder("S", "x"), holder("S", "y"), holder("S", "z")},
			want:    store.SemaphoreChange{AddWaiters: waits(1, t0, "S")},
		},
		{
			name: "below max", sems: map[string]int{"S": 3},
			holders: []store.Holder{holder("S", "x"), holder("S", "y")},
			granted: true, want: store.SemaphoreChange{AddHolders: grants("S")},
		},
		{
			name: "a holder asking again: granted, nothing recorded", sems: map[string]int{"S": 1},
			holders: []store.Holder{holder("S", "me")},
			granted: true,
		},
		{
			name: "a holder asking again still drops the dead waiters", sems: map[string]int{"S": 1},
			holders: []store.Holder{holder("S", "me")},
			waiters: []store.WaiterView{dead(waiter("S", "d", 5, t0))},
			granted: true, want: store.SemaphoreChange{DropWaiters: []store.WaiterKey{key("S", "d")}},
		},
		{
			name: "a higher precedence waiter keeps the free slot", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{waiter("S", "high", 2, at(time.Second))},
			want:    store.SemaphoreChange{AddWaiters: waits(1, t0, "S")},
		},
		{
			name: "a lower precedence waiter does not", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{waiter("S", "low", 0, at(-time.Minute))},
			granted: true, want: store.SemaphoreChange{AddHolders: grants("S")},
		},
		{
			name: "aging: a low waiter of one step still yields", sems: map[string]int{"S": 1},
			req: func(r *semaphore.Request) {
				r.Precedence, r.Since, r.Now = 2, at(step+time.Second), at(step+time.Second)
			},
			waiters: []store.WaiterView{waiter("S", "low", 0, t0)},
			granted: true, want: store.SemaphoreChange{AddHolders: []store.Holder{{Semaphore: "S", Holder: "me", Buildset: "me", Owner: "p", AcquiredAt: at(step + time.Second)}}},
		},
		{
			name: "aging: a low waiter of two steps ranks with high, and is older", sems: map[string]int{"S": 1},
			req: func(r *semaphore.Request) {
				r.Precedence, r.Since, r.Now = 2, at(2*step+time.Second), at(2*step+time.Second)
			},
			waiters: []store.WaiterView{waiter("S", "low", 0, t0)},
			want:    store.SemaphoreChange{AddWaiters: waits(2, at(2*step+time.Second), "S")},
		},
		{
			name: "aging counts for the request too", sems: map[string]int{"S": 1},
			// me (1) has waited two steps: 3 at now, above the newcomer's 2.
			req:     func(r *semaphore.Request) { r.Now = at(2 * step) },
			waiters: []store.WaiterView{waiter("S", "me", 1, t0), waiter("S", "high", 2, at(2*step))},
			granted: true,
			want: store.SemaphoreChange{
				AddHolders:  []store.Holder{{Semaphore: "S", Holder: "me", Buildset: "me", Owner: "p", AcquiredAt: at(2 * step)}},
				DropWaiters: []store.WaiterKey{key("S", "me")},
			},
		},
		{
			name: "same rank: the older waits ahead", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{waiter("S", "old", 1, at(-time.Second))},
			want:    store.SemaphoreChange{AddWaiters: waits(1, t0, "S")},
		},
		{
			name: "same rank: the younger does not", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{waiter("S", "young", 1, at(time.Second))},
			granted: true, want: store.SemaphoreChange{AddHolders: grants("S")},
		},
		{
			name: "full tie: the smaller holder name waits ahead", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{waiter("S", "a", 1, t0)},
			want:    store.SemaphoreChange{AddWaiters: waits(1, t0, "S")},
		},
		{
			name: "full tie: a larger holder name does not", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{waiter("S", "z", 1, t0)},
			granted: true, want: store.SemaphoreChange{AddHolders: grants("S")},
		},
		{
			name: "a waiter keeps the rank of its first request", sems: map[string]int{"S": 1},
			// Asked again later at precedence 0: its row says 1 since t0,
			// ahead of "second" (1, since t0+1s).
			req:     func(r *semaphore.Request) { r.Precedence, r.Since, r.Now = 0, at(3*time.Second), at(3*time.Second) },
			waiters: []store.WaiterView{waiter("S", "me", 1, t0), waiter("S", "second", 1, at(time.Second))},
			granted: true,
			want: store.SemaphoreChange{
				AddHolders:  []store.Holder{{Semaphore: "S", Holder: "me", Buildset: "me", Owner: "p", AcquiredAt: at(3 * time.Second)}},
				DropWaiters: []store.WaiterKey{key("S", "me")},
			},
		},
		{
			name: "a waiter refused again records nothing new", sems: map[string]int{"S": 1},
			req:     func(r *semaphore.Request) { r.Since, r.Now = at(3*time.Second), at(3*time.Second) },
			holders: []store.Holder{holder("S", "x")},
			waiters: []store.WaiterView{waiter("S", "me", 1, t0)},
		},
		{
			name: "a waiter of one semaphore adds the other at its first rank", sems: map[string]int{"A": 1, "B": 1},
			req:     func(r *semaphore.Request) { r.Precedence, r.Since = 0, at(time.Minute) },
			holders: []store.Holder{holder("A", "x")},
			waiters: []store.WaiterView{waiter("A", "me", 1, t0)},
			want:    store.SemaphoreChange{AddWaiters: waits(1, t0, "B")},
		},
		{
			name: "a waiter of another semaphore does not block", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{waiter("T", "other", 5, at(-time.Hour))},
			granted: true, want: store.SemaphoreChange{AddHolders: grants("S")},
		},
		{
			name: "a waiter ahead keeps one slot of each semaphore it waits for", sems: map[string]int{"B": 2},
			holders: []store.Holder{holder("A", "x"), holder("B", "b1")},
			waiters: []store.WaiterView{waiter("A", "first", 2, t0), waiter("B", "first", 2, t0)},
			want:    store.SemaphoreChange{AddWaiters: waits(1, t0, "B")},
		},
		{
			name: "a max-3 semaphore with one waiter ahead still lets another in", sems: map[string]int{"S": 3},
			holders: []store.Holder{holder("S", "x")},
			waiters: []store.WaiterView{waiter("S", "first", 2, t0)},
			granted: true, want: store.SemaphoreChange{AddHolders: grants("S")},
		},
		{
			name: "dead waiters are dropped and count for nothing", sems: map[string]int{"S": 1},
			waiters: []store.WaiterView{dead(waiter("S", "d1", 9, at(-time.Hour))), dead(waiter("S", "d2", 9, at(-time.Hour)))},
			granted: true,
			want: store.SemaphoreChange{
				AddHolders:  grants("S"),
				DropWaiters: []store.WaiterKey{key("S", "d1"), key("S", "d2")},
			},
		},
		{
			name: "a dead owner's holder still counts", sems: map[string]int{"S": 1},
			holders: []store.Holder{{Semaphore: "S", Holder: "d", Buildset: "d", Owner: "dead", AcquiredAt: t0}},
			waiters: []store.WaiterView{dead(waiter("S", "d2", 9, t0))},
			want: store.SemaphoreChange{
				AddWaiters:  waits(1, t0, "S"),
				DropWaiters: []store.WaiterKey{key("S", "d2")},
			},
		},
		{
			name: "its own dead rows are dropped, and it waits at the rank it asks", sems: map[string]int{"S": 1},
			req:     func(r *semaphore.Request) { r.Since = at(time.Second) },
			holders: []store.Holder{holder("S", "x")},
			waiters: []store.WaiterView{dead(waiter("S", "me", 9, at(-time.Hour)))},
			want: store.SemaphoreChange{
				AddWaiters:  waits(1, at(time.Second), "S"),
				DropWaiters: []store.WaiterKey{key("S", "me")},
			},
		},
		{
			name: "a zero Since is Now", sems: map[string]int{"S": 1},
			req:     func(r *semaphore.Request) { r.Since, r.Now = time.Time{}, at(time.Minute) },
			holders: []store.Holder{holder("S", "x")},
			want:    store.SemaphoreChange{AddWaiters: waits(1, at(time.Minute), "S")},
		},
		{
			name: "no semaphore: granted, nothing recorded", sems: map[string]int{},
			granted: true,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := request(tt.sems)
			if tt.req != nil {
				tt.req(&r)
			}
			v := store.SemaphoreView{Now: r.Now, Holders: tt.holders, Waiters: tt.waiters}
			granted, ch := semaphore.Decide(r, v)
			if granted != tt.granted {
				t.Errorf("granted = %v, want %v", granted, tt.granted)
			}
			if d := cmp.Diff(tt.want, ch, cmpopts.EquateEmpty()); d != "" {
				t.Errorf("change (-want +got):\n%s", d)
			}
		})
	}
}

// TestDecideProperties checks, on random views, what must hold whatever
// the rule's details: a grant never takes a semaphore past its max, nor a
// slot a live waiter ahead keeps; the answer is all or nothing and
// recorded as such; only dead rows and the holder's own are dropped; the
// order of the view's rows changes nothing; and a request refused is refused at
// any lower precedence too.
func TestDecideProperties(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	names := []string{"A", "B", "C"}
	holders := []string{"h0", "h1", "h2", "h3", "h4", "h5", "me"}
	const cases = 3000
	var grantedCount, refusedCount int
	for i := range cases {
		// A view: each holder holds or waits for a random subset, or not.
		var v store.SemaphoreView
		v.Now = at(time.Duration(rng.IntN(4)) * semaphore.PrecedenceAging)
		for _, h := range holders {
			precedence, since := rng.IntN(3), at(time.Duration(rng.IntN(5)-2)*semaphore.PrecedenceAging/2)
			alive := rng.IntN(4) > 0
			for _, n := range names {
				switch rng.IntN(4) {
				case 0:
					if h != "me" || rng.IntN(8) == 0 {
						v.Holders = append(v.Holders, store.Holder{Semaphore: n, Holder: h, Buildset: h, Owner: h, AcquiredAt: t0})
					}
				case 1:
					v.Waiters = append(v.Waiters, store.WaiterView{Waiter: store.Waiter{
						Semaphore: n, Holder: h, Buildset: h, Owner: h, Precedence: precedence, Since: since}, Alive: alive})
				}
			}
		}
		r := semaphore.Request{Holder: "me", Buildset: "me", Owner: "me", Semaphores: map[string]int{},
			Precedence: rng.IntN(3), Since: v.Now.Add(-time.Duration(rng.IntN(3)) * time.Minute), Now: v.Now}
		for _, n := range names {
			if rng.IntN(2) == 0 {
				r.Semaphores[n] = 1 + rng.IntN(3)
			}
		}
		if len(r.Semaphores) == 0 {
			r.Semaphores[names[rng.IntN(len(names))]] = 1
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d, case %d: %s\nrequest %+v\nview %+v", seed, i, fmt.Sprintf(format, args...), r, v)
		}

		granted, ch := semaphore.Decide(r, v)
		if granted {
			grantedCount++
		} else {
			refusedCount++
		}
		holds := slices.ContainsFunc(v.Holders, func(h store.Holder) bool { return h.Holder == "me" })
		requested := slices.Sorted(maps.Keys(r.Semaphores))
		switch {
		case holds:
			if !granted || len(ch.AddHolders) > 0 || len(ch.AddWaiters) > 0 {
				fail("a holder asking again: granted %v, change %+v", granted, ch)
			}
		case granted:
			var got []string
			for _, h := range ch.AddHolders {
				got = append(got, h.Semaphore)
			}
			if !slices.Equal(got, requested) || len(ch.AddWaiters) > 0 {
				fail("granted, yet the change is %+v", ch)
			}
			for _, n := range requested {
				taken := 0
				for _, h := range v.Holders {
					if h.Semaphore == n {
						taken++
					}
				}
				if taken+1 > r.Semaphores[n] {
					fail("granted %s past its max %d: %d held", n, r.Semaphores[n], taken)
				}
			}
		default:
			if len(ch.AddHolders) > 0 {
				fail("refused, yet holders are added: %+v", ch)
			}
			// It waits for every semaphore asked: a row it had, or one added.
			waitsFor := map[string]bool{}
			for _, w := range v.Waiters {
				if w.Holder == "me" && w.Alive {
					waitsFor[w.Semaphore] = true
				}
			}
			for _, w := range ch.AddWaiters {
				if waitsFor[w.Semaphore] {
					fail("refused, and a second row is added for %s", w.Semaphore)
				}
				waitsFor[w.Semaphore] = true
			}
			for _, n := range requested {
				if !waitsFor[n] {
					fail("refused, and it does not wait for %s: %+v", n, ch)
				}
			}
		}
		for _, k := range ch.DropWaiters {
			i := slices.IndexFunc(v.Waiters, func(w store.WaiterView) bool { return w.Semaphore == k.Semaphore && w.Holder == k.Holder })
			if i < 0 || (v.Waiters[i].Alive && k.Holder != "me") || (k.Holder == "me" && v.Waiters[i].Alive && !granted) {
				fail("dropped %+v, which is neither dead nor its own granted", k)
			}
		}

		// The order of the rows changes nothing.
		shuffled := store.SemaphoreView{Now: v.Now, Holders: slices.Clone(v.Holders), Waiters: slices.Clone(v.Waiters)}
		rng.Shuffle(len(shuffled.Holders), func(i, j int) { shuffled.Holders[i], shuffled.Holders[j] = shuffled.Holders[j], shuffled.Holders[i] })
		rng.Shuffle(len(shuffled.Waiters), func(i, j int) { shuffled.Waiters[i], shuffled.Waiters[j] = shuffled.Waiters[j], shuffled.Waiters[i] })
		g2, ch2 := semaphore.Decide(r, shuffled)
		sortKeys := cmpopts.SortSlices(func(a, b store.WaiterKey) bool {
			return a.Semaphore+"/"+a.Holder < b.Semaphore+"/"+b.Holder
		})
		if g2 != granted || !cmp.Equal(ch, ch2, sortKeys, cmpopts.EquateEmpty()) {
			fail("the order of the view changed the answer: %v %+v, then %v %+v", granted, ch, g2, ch2)
		}

		// Less precedence never helps (while it has no row of its own to
		// rank it).
		if !granted && !slices.ContainsFunc(v.Waiters, func(w store.WaiterView) bool { return w.Holder == "me" && w.Alive }) {
			low := r
			low.Precedence = r.Precedence - 1 - rng.IntN(3)
			if g, _ := semaphore.Decide(low, v); g {
				fail("granted at precedence %d, refused at %d", low.Precedence, r.Precedence)
			}
		}
	}
	// A generator that never grants, or never refuses, proves nothing.
	if grantedCount < cases/10 || refusedCount < cases/10 {
		t.Errorf("%d granted, %d refused of %d: the views are too one-sided", grantedCount, refusedCount, cases)
	}
}
