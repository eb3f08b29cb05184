package sqlite_test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// TestDecideMatchesSQL runs the same random stream of acquires, releases,
// owners' deaths and releases on two stores, one deciding with its SQL
// (AcquireSemaphores), the other with semaphore.Decide on
// UpdateSemaphores, and checks after each step that both answered alike
// and hold the same rows. The only rows allowed to differ are the waiters
// of dead owners, which the SQL drops for every semaphore at each acquire
// and the Go rule for the semaphores it decides on: neither counts them.
func TestDecideMatchesSQL(t *testing.T) {
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 2))
	sql := open(t, filepath.Join(t.TempDir(), "sql.db"))
	gor := open(t, filepath.Join(t.TempDir(), "go.db"))
	ctx := t.Context()
	t0 := time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)
	now := t0

	// Owners die at fixed times (o0 has no lease: alive) and never come back.
	expiry := map[string]time.Time{"o1": t0.Add(40 * time.Minute), "o2": t0.Add(90 * time.Minute), "o3": t0.Add(100 * time.Hour)}
	for o, until := range expiry {
		for _, s := range []*sqlite.Store{sql, gor} {
			if err := s.RenewLease(ctx, o, until); err != nil {
				t.Fatal(err)
			}
		}
	}
	alive := func(owner string) bool {
		until, ok := expiry[owner]
		return !ok || !until.Before(now)
	}
	type holderSpec struct {
		owner      string
		sems       map[string]int
		precedence int
		since      time.Time // zero: not asking
	}
	maxes := map[string]int{"X": 1, "Y": 2, "Z": 3}
	holders := map[string]*holderSpec{}
	var names []string
	for i := range 10 {
		h := &holderSpec{owner: fmt.Sprintf("o%d", rng.IntN(4)), sems: map[string]int{}, precedence: rng.IntN(3)}
		for n, m := range maxes {
			if rng.IntN(2) == 0 {
				h.sems[n] = m
			}
		}
		if len(h.sems) == 0 {
			h.sems["X"] = 1
		}
		name := fmt.Sprintf("h%d", i)
		holders[name] = h
		names = append(names, name)
	}

	for step := range 600 {
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d, step %d at +%v: %s", seed, step, now.Sub(t0), fmt.Sprintf(format, args...))
		}
		name := names[rng.IntN(len(names))]
		h := holders[name]
		switch op := rng.IntN(10); {
		case op < 6:
			if h.since.IsZero() {
				h.since = now
			}
			a := store.Acquire{Holder: name, Buildset: name, Owner: h.owner, Semaphores: h.sems, Precedence: h.precedence, Since: h.since, Now: now}
			want, err := sql.AcquireSemaphores(ctx, a)
			if err != nil {
				fail("sql: %v", err)
			}
			got, err := semaphore.TryAcquire(ctx, gor, semaphore.Request{Holder: name, Buildset: name, Owner: h.owner,
				Semaphores: h.sems, Precedence: h.precedence, Since: h.since, Now: now})
			if err != nil {
				fail("go: %v", err)
			}
			if got != want {
				fail("acquire %s %v: go %v, sql %v", name, h.sems, got, want)
			}
		case op < 9:
			h.since = time.Time{}
			for _, s := range []*sqlite.Store{sql, gor} {
				if err := s.ReleaseSemaphores(ctx, name); err != nil {
					fail("release: %v", err)
				}
			}
		default:
			// A dead owner's reaper releases it.
			if !alive(h.owner) {
				for _, s := range []*sqlite.Store{sql, gor} {
					if err := s.ReleaseOwner(ctx, h.owner, nil); err != nil {
						fail("release owner: %v", err)
					}
				}
				delete(expiry, h.owner) // no lease row: alive again, as a new process
				for _, o := range holders {
					if o.owner == h.owner {
						o.since = time.Time{}
					}
				}
			}
		}
		now = now.Add(time.Duration(rng.IntN(6)) * time.Minute)

		for what, rows := range map[string]func(*sqlite.Store) []string{
			"holders": func(s *sqlite.Store) []string {
				hs, err := s.Holders(ctx)
				if err != nil {
					fail("holders: %v", err)
				}
				var out []string
				for _, h := range hs {
					out = append(out, fmt.Sprintf("%s:%s:%s:%d", h.Semaphore, h.Holder, h.Owner, h.AcquiredAt.UnixNano()))
				}
				return out
			},
			"live waiters": func(s *sqlite.Store) []string {
				ws, err := s.Waiters(ctx)
				if err != nil {
					fail("waiters: %v", err)
				}
				var out []string
				for _, w := range ws {
					if alive(w.Owner) {
						out = append(out, fmt.Sprintf("%s:%s:%s:%d:%d", w.Semaphore, w.Holder, w.Owner, w.Precedence, w.Since.UnixNano()))
					}
				}
				slices.Sort(out)
				return out
			},
		} {
			if d := cmp.Diff(rows(sql), rows(gor)); d != "" {
				fail("%s differ (-sql +go):\n%s", what, d)
			}
		}
	}
}
