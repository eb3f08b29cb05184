package postgres_test

import (
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/store/storetest"
)

// openURL opens a store on the database at dbURL, closed when the test
// ends.
func openURL(t *testing.T, dbURL string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// TestStore runs the conformance suite, each case on a database of its own.
func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openURL(t, pgtest.NewDatabase(t))
	})
}

// TestSeveralProcesses opens one database three times, as three sortie
// processes (each with a pool of its own) would, and checks that a max-1
// and a max-2 semaphore are never held beyond their max.
func TestSeveralProcesses(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	p1, p2, p3 := openURL(t, dbURL), openURL(t, dbURL), openURL(t, dbURL)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sem := map[string]int{"infra-prod-deployment": 1}
	// Each holder is an owner of its own, registered through its store.
	fences := map[string]store.Fence{}
	acq := func(s *postgres.Store, holder string) bool {
		t.Helper()
		if _, ok := fences[holder]; !ok {
			f, err := s.RegisterOwner(t.Context(), store.RegisterOwnerParams{ID: holder, Kind: store.OwnerNode, Lease: time.Hour, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			fences[holder] = f
		}
		ok, err := semaphore.TryAcquire(t.Context(), s, semaphore.Request{
			Holder: holder, Buildset: holder, Owner: holder, Fence: fences[holder], Semaphores: sem, Since: now, Now: now,
		})
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !acq(p1, "a") {
		t.Fatal("p1 could not take a free semaphore")
	}
	if acq(p2, "b") {
		t.Fatal("p2 took the semaphore p1 holds")
	}
	if err := p1.ReleaseSemaphores(t.Context(), "a", fences["a"]); err != nil {
		t.Fatal(err)
	}
	if !acq(p2, "b") {
		t.Fatal("p2 could not take the semaphore p1 released")
	}
	if err := p2.ReleaseSemaphores(t.Context(), "b", fences["b"]); err != nil {
		t.Fatal(err)
	}

	stores := []store.Store{p1, p2, p3}
	t.Run("max 1", func(t *testing.T) { storetest.Contend(t, stores, 1) })
	t.Run("max 2", func(t *testing.T) { storetest.Contend(t, stores, 2) })
}

// TestSeveralProcessesClaimReports has workers of three pools on one
// database claim report deliveries (FOR UPDATE SKIP LOCKED): each delivery
// is claimed once, in order per buildset and reporter.
func TestSeveralProcessesClaimReports(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	storetest.ContendClaims(t, []store.Store{openURL(t, dbURL), openURL(t, dbURL), openURL(t, dbURL)})
}

// TestSeveralProcessesFireOneTick has three pools on one database fire the
// same cron tick at once: one buildset is made.
func TestSeveralProcessesFireOneTick(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	storetest.ContendTick(t, []store.Store{openURL(t, dbURL), openURL(t, dbURL), openURL(t, dbURL)})
}
