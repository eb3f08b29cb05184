package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/store"
)

// The owners of buildsets, holders and waiters: registration, leases, and
// the steps of their life.

// register registers id, a node, at now with a lease of lease.
func register(t *testing.T, s store.Store, id string, now time.Time, lease time.Duration) store.Fence {
	t.Helper()
	f, err := s.RegisterOwner(t.Context(), store.RegisterOwnerParams{ID: id, Kind: store.OwnerNode, Lease: lease, Now: now})
	must(t, "register "+id, err)
	return f
}

// owner returns the owner id.
func owner(t *testing.T, s store.Store, id string) store.Owner {
	t.Helper()
	os, err := s.Owners(t.Context(), store.OwnerFilter{IDs: []string{id}})
	must(t, "owner "+id, err)
	if len(os) != 1 {
		t.Fatalf("owner %s: %d rows", id, len(os))
	}
	return os[0]
}

// fence fences the live owner id whatever its lease, and returns it.
func fence(t *testing.T, s store.Store, id string) store.Owner {
	t.Helper()
	fenced, err := s.FenceOwners(t.Context(), store.FenceOwnersParams{IDs: []string{id}, Force: true})
	must(t, "fence "+id, err)
	if len(fenced) != 1 || fenced[0].ID != id {
		t.Fatalf("fence %s: fenced %+v", id, fenced)
	}
	return fenced[0]
}

// reap takes the owner id (registering it first if need be) through the
// rest of its life to released, keeping the holders keep.
func reap(t *testing.T, s store.Store, id string, keep ...string) {
	t.Helper()
	own(t, s, id)
	if owner(t, s, id).State == store.OwnerLive {
		fence(t, s, id)
	}
	must(t, "mark "+id+" ended", s.MarkOwnerEnded(t.Context(), id))
	must(t, "release "+id, s.ReleaseOwner(t.Context(), store.ReleaseOwnerParams{ID: id, Keep: keep}))
}

// testOwners: an owner is kept as registered, each with an epoch above
// every earlier one, listed by start then id, and selected by every field
// of the filter; an id is registered once.
func testOwners(t *testing.T, s store.Store) {
	ctx := t.Context()
	reg := []store.RegisterOwnerParams{
		{ID: "o-b", Kind: store.OwnerNode, Node: "n1", Host: "h1", StateDir: "/srv/a", Version: "v1", ConfigFP: "fp1", SlotsMax: 4, Lease: time.Minute, Now: at(time.Second)},
		{ID: "o-a", Kind: store.OwnerRun, Node: "h1", Host: "h1", StateDir: "/srv/a", Lease: time.Minute, Now: at(time.Second)},
		{ID: "o-c", Kind: store.OwnerNode, Node: "n2", Host: "h2", StateDir: "/srv/b", Lease: 30 * time.Second, Now: t0},
	}
	var epochs []int64
	for _, p := range reg {
		f, err := s.RegisterOwner(ctx, p)
		must(t, "register "+p.ID, err)
		if f.Owner != p.ID || len(epochs) > 0 && f.Epoch <= epochs[len(epochs)-1] {
			t.Errorf("register %s: fence %+v after epochs %v", p.ID, f, epochs)
		}
		epochs = append(epochs, f.Epoch)
	}
	_, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "o-a", Kind: store.OwnerNode, Lease: time.Minute, Now: t0})
	wantErr(t, "register twice", err, store.ErrConflict)

	all, err := s.Owners(ctx, store.OwnerFilter{})
	must(t, "owners", err)
	want := []store.Owner{
		{ID: "o-c", Kind: store.OwnerNode, Node: "n2", Host: "h2", StateDir: "/srv/b", Epoch: epochs[2], State: store.OwnerLive,
			StartedAt: t0, RenewedAt: t0, ExpiresAt: at(30 * time.Second)},
		{ID: "o-a", Kind: store.OwnerRun, Node: "h1", Host: "h1", StateDir: "/srv/a", Epoch: epochs[1], State: store.OwnerLive,
			StartedAt: at(time.Second), RenewedAt: at(time.Second), ExpiresAt: at(time.Minute + time.Second)},
		{ID: "o-b", Kind: store.OwnerNode, Node: "n1", Host: "h1", StateDir: "/srv/a", Epoch: epochs[0], State: store.OwnerLive,
			StartedAt: at(time.Second), RenewedAt: at(time.Second), ExpiresAt: at(time.Minute + time.Second),
			Version: "v1", ConfigFP: "fp1", SlotsMax: 4},
	}
	diff(t, "Owners", want, all, cmpopts.EquateApproxTime(0))
	for _, o := range all {
		checkUTC(t, "owner times", &o.StartedAt, &o.RenewedAt, &o.ExpiresAt)
	}
	ids := func(f store.OwnerFilter) []string {
		t.Helper()
		os, err := s.Owners(ctx, f)
		must(t, "owners", err)
		var out []string
		for _, o := range os {
			out = append(out, o.ID)
		}
		return out
	}
	fence(t, s, "o-a")
	for _, tt := range []struct {
		f    store.OwnerFilter
		want []string
	}{
		{store.OwnerFilter{IDs: []string{"o-b", "o-a", "nobody"}}, []string{"o-a", "o-b"}},
		{store.OwnerFilter{IDs: []string{}}, nil},
		{store.OwnerFilter{Kind: store.OwnerNode}, []string{"o-c", "o-b"}},
		{store.OwnerFilter{Node: "n1"}, []string{"o-b"}},
		{store.OwnerFilter{Host: "h1", StateDir: "/srv/a"}, []string{"o-a", "o-b"}},
		{store.OwnerFilter{Kind: store.OwnerNode, Host: "h1", StateDir: "/srv/a", Node: "n1"}, []string{"o-b"}},
		{store.OwnerFilter{States: []store.OwnerState{store.OwnerFenced}}, []string{"o-a"}},
		{store.OwnerFilter{States: []store.OwnerState{store.OwnerLive, store.OwnerEnded}}, []string{"o-c", "o-b"}},
		{store.OwnerFilter{States: []store.OwnerState{}}, nil},
	} {
		diff(t, fmt.Sprintf("Owners %+v", tt.f), tt.want, ids(tt.f), cmpopts.EquateEmpty())
	}

	// Without a time, the store's clock.
	before := time.Now().Add(-time.Minute)
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "o-now", Kind: store.OwnerRun, Lease: time.Hour})
	must(t, "register without a time", err)
	o := owner(t, s, "o-now")
	if o.StartedAt.Before(before) || o.StartedAt.After(time.Now().Add(time.Minute)) || !o.ExpiresAt.Equal(o.StartedAt.Add(time.Hour)) {
		t.Errorf("registered without a time: %+v", o)
	}
	if f.Epoch <= epochs[2] {
		t.Errorf("epoch %d after %v", f.Epoch, epochs)
	}
	// Fenced after the first three were registered and before o-now.
	if o := owner(t, s, "o-a"); o.Epoch <= epochs[2] || o.Epoch >= f.Epoch {
		t.Errorf("a fenced owner's epoch %d is not a new one (between %d and %d)", o.Epoch, epochs[2], f.Epoch)
	}
}

// testOwnerLease: a lease "until T" runs at T and has ended a
// microsecond after: FenceOwners leaves the owner alone until then, fences
// it after, with a new epoch. A renewal extends a lease that runs, records
// the slots in use and the config, and is refused (ErrFenced, changing
// nothing) for a lease that ended, fenced or not, and for an epoch that is
// not the owner's.
func testOwnerLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	p := register(t, s, "p", t0, 30*time.Second)
	q := register(t, s, "q", t0, 10*time.Second)
	fenceAt := func(now time.Time) []string {
		t.Helper()
		fenced, err := s.FenceOwners(ctx, store.FenceOwnersParams{Now: now, IDs: []string{"p"}})
		must(t, "fence", err)
		var out []string
		for _, o := range fenced {
			out = append(out, o.ID)
		}
		return out
	}
	diff(t, "fenced at T", []string(nil), fenceAt(at(30*time.Second)), cmpopts.EquateEmpty())

	until, err := s.RenewOwner(ctx, store.RenewOwnerParams{Fence: p, Lease: 30 * time.Second, SlotsUsed: 3, ConfigFP: "fp2", Now: at(20 * time.Second)})
	must(t, "renew", err)
	if !until.Equal(at(50 * time.Second)) {
		t.Errorf("renewed until %v, want %v", until, at(50*time.Second))
	}
	o := owner(t, s, "p")
	if !o.RenewedAt.Equal(at(20*time.Second)) || !o.ExpiresAt.Equal(at(50*time.Second)) || o.SlotsUsed != 3 || o.ConfigFP != "fp2" || o.State != store.OwnerLive {
		t.Errorf("after renewal: %+v", o)
	}
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: p, Lease: 30 * time.Second, SlotsUsed: 1, SlotsMax: 6, Now: at(21 * time.Second)})
	must(t, "renew keeping the config", err)
	if o := owner(t, s, "p"); o.ConfigFP != "fp2" || o.SlotsUsed != 1 || o.SlotsMax != 6 {
		t.Errorf("a renewal without a config changed it, or with slots did not record them: %+v", o)
	}
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: p, Lease: 30 * time.Second, SlotsUsed: 1, Now: at(21 * time.Second)})
	must(t, "renew keeping the slots", err)
	if o := owner(t, s, "p"); o.SlotsMax != 6 {
		t.Errorf("a renewal without slots changed them: %+v", o)
	}
	diff(t, "fenced at the renewed T", []string(nil), fenceAt(at(51*time.Second)), cmpopts.EquateEmpty())
	diff(t, "fenced after it", []string{"p"}, fenceAt(at(51*time.Second+time.Microsecond)))
	o = owner(t, s, "p")
	if o.State != store.OwnerFenced || o.Epoch <= p.Epoch {
		t.Errorf("fenced owner: %+v (was epoch %d)", o, p.Epoch)
	}
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: p, Lease: time.Hour, Now: at(51 * time.Second)})
	wantErr(t, "renew a fenced owner", err, store.ErrFenced)
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: store.Fence{Owner: "p", Epoch: o.Epoch}, Lease: time.Hour, Now: at(51 * time.Second)})
	wantErr(t, "renew a fenced owner with its new epoch", err, store.ErrFenced)
	if got := owner(t, s, "p"); !got.ExpiresAt.Equal(o.ExpiresAt) || got.State != store.OwnerFenced {
		t.Errorf("a refused renewal changed the owner: %+v", got)
	}

	// A lease that ran out is not renewed, even before anyone fenced it.
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: q, Lease: time.Hour, Now: at(10*time.Second + time.Microsecond)})
	wantErr(t, "renew an ended lease", err, store.ErrFenced)
	if got := owner(t, s, "q"); got.State != store.OwnerLive || !got.ExpiresAt.Equal(at(10*time.Second)) {
		t.Errorf("a refused renewal changed the owner: %+v", got)
	}
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: store.Fence{Owner: "q", Epoch: q.Epoch + 1000}, Lease: time.Hour, Now: t0})
	wantErr(t, "renew another epoch", err, store.ErrFenced)
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: store.Fence{Owner: "nobody", Epoch: q.Epoch}, Lease: time.Hour, Now: t0})
	wantErr(t, "renew an unknown owner", err, store.ErrFenced)
	_, err = s.RenewOwner(ctx, store.RenewOwnerParams{Fence: q, Lease: time.Hour, Now: at(9 * time.Second)})
	must(t, "renew in time", err)
}

// testOwnerStateMachine: live -> fenced -> ended -> released, each step
// only from the one before it; a step out of order changes nothing.
func testOwnerStateMachine(t *testing.T, s store.Store) {
	ctx := t.Context()
	register(t, s, "p", t0, longLease)
	state := func() store.OwnerState { t.Helper(); return owner(t, s, "p").State }
	release := func() error { return s.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: "p"}) }

	wantErr(t, "end a live owner", s.MarkOwnerEnded(ctx, "p"), store.ErrConflict)
	wantErr(t, "release a live owner", release(), store.ErrConflict)
	if _, err := s.FenceOwners(ctx, store.FenceOwnersParams{Force: true}); err == nil {
		t.Error("Force without IDs: no error")
	}
	if st := state(); st != store.OwnerLive {
		t.Fatalf("after refused steps: %s", st)
	}
	fence(t, s, "p")
	fenced, err := s.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{"p"}, Force: true})
	must(t, "fence again", err)
	diff(t, "fenced again", []store.Owner(nil), fenced, cmpopts.EquateEmpty())
	wantErr(t, "release a fenced owner", release(), store.ErrConflict)
	must(t, "end", s.MarkOwnerEnded(ctx, "p"))
	wantErr(t, "end again", s.MarkOwnerEnded(ctx, "p"), store.ErrConflict)
	if st := state(); st != store.OwnerEnded {
		t.Fatalf("after end: %s", st)
	}
	fenced, err = s.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{"p"}, Force: true})
	must(t, "fence an ended owner", err)
	diff(t, "fenced an ended owner", []store.Owner(nil), fenced, cmpopts.EquateEmpty())
	must(t, "release", release())
	wantErr(t, "release again", release(), store.ErrConflict)
	wantErr(t, "end a released owner", s.MarkOwnerEnded(ctx, "p"), store.ErrConflict)
	if st := state(); st != store.OwnerReleased {
		t.Fatalf("after release: %s", st)
	}
	wantErr(t, "end an unknown owner", s.MarkOwnerEnded(ctx, "nobody"), store.ErrNotFound)
	wantErr(t, "release an unknown owner", s.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: "nobody"}), store.ErrNotFound)
}

// testTwoReapers: reapers that run at once, each fencing the owners whose
// lease ran out and taking every owner it may through the next steps,
// take each step of each owner exactly once; a live owner is left alone.
func testTwoReapers(t *testing.T, s store.Store) {
	ctx := t.Context()
	dead := []string{"d1", "d2", "d3"}
	for _, id := range dead {
		register(t, s, id, t0, time.Second)
	}
	register(t, s, "live", t0, longLease)
	var (
		fenced, ended, released [3]atomic.Int32
		wg                      sync.WaitGroup
		start                   = make(chan struct{})
		errs                    = make(chan error, racers*10)
	)
	for range racers {
		wg.Go(func() {
			<-start
			got, err := s.FenceOwners(ctx, store.FenceOwnersParams{Now: at(time.Minute)})
			if err != nil {
				errs <- err
				return
			}
			for _, o := range got {
				if i := slices.Index(dead, o.ID); i >= 0 {
					fenced[i].Add(1)
				} else {
					errs <- fmt.Errorf("fenced %s", o.ID)
				}
			}
			// Every reaper tries every step of every owner, as one that
			// read a list gone stale would.
			for i, id := range dead {
				switch err := s.MarkOwnerEnded(ctx, id); {
				case err == nil:
					ended[i].Add(1)
				case !errors.Is(err, store.ErrConflict):
					errs <- err
				}
				switch err := s.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: id}); {
				case err == nil:
					released[i].Add(1)
				case !errors.Is(err, store.ErrConflict):
					errs <- err
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, id := range dead {
		if f, e, r := fenced[i].Load(), ended[i].Load(), released[i].Load(); f != 1 || e != 1 || r != 1 {
			t.Errorf("%s: fenced %d times, ended %d, released %d; want each once", id, f, e, r)
		}
		if o := owner(t, s, id); o.State != store.OwnerReleased {
			t.Errorf("%s: %s at the end", id, o.State)
		}
	}
	if o := owner(t, s, "live"); o.State != store.OwnerLive {
		t.Errorf("a live owner was reaped: %+v", o)
	}
}

// testExpiredHolderKept: the holder of a dead owner keeps its slot (its
// build may still run on the bastion) through its fence until it is
// released; its waiter, which runs nothing, is dropped at once.
func testExpiredHolderKept(t *testing.T, s store.Store) {
	T := at(time.Minute)
	sem := map[string]int{"S": 1}
	register(t, s, "dead", t0, T.Sub(t0))
	acquire(t, s, owned("d1", "dead", sem, t0), true)
	// A waiter of the dead owner, ranked ahead of "o1".
	deadWaiter := owned("d2", "dead", sem, t0)
	deadWaiter.Precedence = 9
	acquire(t, s, deadWaiter, false)

	acquire(t, s, owned("o1", "other", sem, T), false)
	acquire(t, s, owned("o1", "other", sem, T.Add(time.Hour)), false)
	diff(t, "holders while not released", []string{"S:d1"}, holding(t, s))
	diff(t, "waiters while not released", []string{"S:o1"}, waiting(t, s))
	fence(t, s, "dead")
	acquire(t, s, owned("o1", "other", sem, T.Add(time.Hour)), false)
	diff(t, "holders while fenced", []string{"S:d1"}, holding(t, s))
	must(t, "end dead", s.MarkOwnerEnded(t.Context(), "dead"))
	acquire(t, s, owned("o1", "other", sem, T.Add(time.Hour)), false)

	must(t, "release dead", s.ReleaseOwner(t.Context(), store.ReleaseOwnerParams{ID: "dead"}))
	acquire(t, s, owned("o1", "other", sem, T.Add(time.Hour)), true)
	diff(t, "holders", []string{"S:o1"}, holding(t, s))
	diff(t, "waiters", []string(nil), waiting(t, s), cmpopts.EquateEmpty())
}

// testRenewedHolderKept: a holder whose owner renews keeps its slot, and
// its owner is not fenced, however long after its first lease.
func testRenewedHolderKept(t *testing.T, s store.Store) {
	ctx := t.Context()
	T := at(time.Minute)
	sem := map[string]int{"S": 1}
	p1 := register(t, s, "p1", t0, T.Sub(t0))
	acquire(t, s, owned("h1", "p1", sem, t0), true)
	_, err := s.RenewOwner(ctx, store.RenewOwnerParams{Fence: p1, Lease: time.Hour, Now: T})
	must(t, "renew", err)

	later := T.Add(time.Minute)
	acquire(t, s, owned("h2", "p2", sem, later), false)
	fenced, err := s.FenceOwners(ctx, store.FenceOwnersParams{Now: later})
	must(t, "fence", err)
	diff(t, "fenced", []store.Owner(nil), fenced, cmpopts.EquateEmpty())
	diff(t, "holders", []string{"S:h1"}, holding(t, s))
	diff(t, "waiters", []string{"S:h2"}, waiting(t, s))
}

// testUnregisteredOwner: an owner that never registered has no right to
// write: nothing it asks is recorded.
func testUnregisteredOwner(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base")
	ghost := store.Fence{Owner: "ghost", Epoch: own(t, s, "someone").Epoch}
	wantErr(t, "start buildset", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: ghost, At: t0}), store.ErrFenced)
	wantErr(t, "start attempt", s.StartAttempt(ctx, store.StartAttemptParams{
		Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 1, Owner: "ghost", StartedAt: t0}, Fence: ghost}), store.ErrFenced)
	err := s.UpdateSemaphores(ctx, store.LockSemaphoresParams{Names: []string{"S"}, Now: t0, Fence: ghost},
		apply(store.SemaphoreChange{AddHolders: []store.Holder{{Semaphore: "S", Holder: "h", Buildset: "h", Owner: "ghost", AcquiredAt: t0}}}))
	wantErr(t, "hold", err, store.ErrFenced)
	err = s.UpdateSemaphores(ctx, store.LockSemaphoresParams{Names: []string{"S"}, Now: t0},
		apply(store.SemaphoreChange{AddWaiters: []store.Waiter{{Semaphore: "S", Holder: "h", Buildset: "h", Owner: "ghost", Since: t0}}}))
	wantErr(t, "wait without a fence", err, store.ErrFenced)
	if got := get(t, s, "bs1"); got.State != store.BuildsetQueued || got.Owner != "" {
		t.Errorf("buildset: %+v", got)
	}
	if b := build(t, s, "bs1", "base"); b.State != store.BuildWaiting || b.Attempt != 0 {
		t.Errorf("build: %+v", b)
	}
	diff(t, "holders", []string(nil), holding(t, s), cmpopts.EquateEmpty())
	diff(t, "waiters", []string(nil), waiting(t, s), cmpopts.EquateEmpty())
}
