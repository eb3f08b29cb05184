package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
	"github.com/sortie-ci/sortie/internal/store/storetest"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(sqlite.JournalHelperEnv); path != "" {
		// A process for a test to kill (TestJournalRecoveredAfterKill).
		fmt.Fprintln(os.Stderr, sqlite.JournalHelper(path))
		os.Exit(2)
	}
	goleak.VerifyTestMain(m)
}

func open(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), path)
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

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "sortie.db"))
	})
}

// TestTwoProcesses opens one file twice, as two sortie processes would, and
// checks that a max-1 semaphore is held by one of them at a time.
func TestTwoProcesses(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sortie.db")
	p1, p2 := open(t, path), open(t, path)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sem := map[string]int{"infra-prod-deployment": 1}
	// Each holder is an owner of its own, registered through its store.
	fences := map[string]store.Fence{}
	acq := func(s *sqlite.Store, holder string) bool {
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

	// Both processes contend for it.
	storetest.Contend(t, []store.Store{p1, p2}, 1)
}

// TestConcurrentOpen opens a new file from several goroutines at once: every
// Open succeeds and the schema is made once.
func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sortie.db")
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		stores []*sqlite.Store
	)
	for range 6 {
		wg.Go(func() {
			s, err := sqlite.Open(t.Context(), path)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			stores = append(stores, s)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, s := range stores {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}
}

// TestReopen checks that what was written survives closing the store.
func TestReopen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 1, 1, 0, 0, 0, 1, time.UTC)
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: created}, Jobs: []string{"base"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	bs, err := s.GetBuildset(ctx, "bs1")
	if err != nil {
		t.Fatal(err)
	}
	if !bs.CreatedAt.Equal(created) {
		t.Errorf("CreatedAt = %v, want %v", bs.CreatedAt, created)
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	_, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "missing", "sortie.db"))
	if err == nil {
		t.Error("Open in a missing directory succeeded")
	}
	_, err = sqlite.Open(t.Context(), "")
	if err == nil {
		t.Error("Open of an empty path succeeded")
	}
}

func TestErrorsWrap(t *testing.T) {
	t.Parallel()
	s := open(t, filepath.Join(t.TempDir(), "sortie.db"))
	_, err := s.GetBuildset(t.Context(), "bs9")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
	if want := "sqlite: get buildset bs9: not found"; err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "sortie-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(dir, "sortie.db"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	now := time.Now()
	// Register the owner before acquiring: every row it adds carries its
	// fence. Once its lease expires, its waiters count for nothing, and a
	// reaper may fence it, end its builds and release its holders.
	fence, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "proc-1", Kind: store.OwnerRun, Lease: time.Minute, Now: now})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, holder := range []string{"bs1", "bs2"} {
		ok, err := semaphore.TryAcquire(ctx, s, semaphore.Request{
			Holder: holder, Buildset: holder, Owner: "proc-1", Fence: fence,
			Semaphores: map[string]int{"infra-prod-deployment": 1},
			Since:      now, Now: now,
		})
		fmt.Println(holder, ok, err)
	}
	// Output:
	// bs1 true <nil>
	// bs2 false <nil>
}

// TestTwoProcessesClaimReports opens one file twice, as two sortie
// processes would, and has workers of both claim report deliveries: each
// delivery is claimed once, in order per buildset and reporter.
func TestTwoProcessesClaimReports(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sortie.db")
	storetest.ContendClaims(t, []store.Store{open(t, path), open(t, path)})
}

// TestCheckpoint: after Checkpoint, every frame of the write-ahead log is
// in the database file, where before it none was.
func TestCheckpoint(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s := open(t, path)
	for i := range 5 {
		if _, err := s.RegisterOwner(t.Context(), store.RegisterOwnerParams{ID: fmt.Sprint("owner", i), Kind: store.OwnerNode, Lease: time.Hour, Now: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	// Another connection asks, without copying (a NOOP checkpoint), how
	// many frames the log holds and how many are in the file.
	frames := func() (log, copied int) {
		t.Helper()
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var busy int
		if err := db.QueryRowContext(t.Context(), `PRAGMA wal_checkpoint(NOOP)`).Scan(&busy, &log, &copied); err != nil {
			t.Fatal(err)
		}
		return log, copied
	}
	if log, copied := frames(); log == 0 || copied == log {
		t.Fatalf("before Checkpoint: %d frames in the log, %d copied; want some not copied", log, copied)
	}
	if err := s.Checkpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	if log, copied := frames(); log == 0 || copied != log {
		t.Errorf("after Checkpoint: %d frames in the log, %d copied; want all", log, copied)
	}
}

// TestStateChangesLeavePlanAndSpec: a buildset's plan and spec are written
// once, when it is made. Its state changes (admitted, claimed, started,
// ended) write a few pages each, where, with the plan and spec in its row,
// each rewrote them whole: SQLite rewrites a row whose size changes,
// overflow pages and all.
func TestStateChangesLeavePlanAndSpec(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s := open(t, path)
	// 25 pages each, as JSON of the size of a 1,000-job buildset's.
	plan := []byte(`{"jobs":"` + strings.Repeat("p", 100_000) + `"}`)
	spec := []byte(`{"jobs":"` + strings.Repeat("s", 100_000) + `"}`)
	// How many frames the log holds, asked by another connection without
	// copying any (a NOOP checkpoint). Nothing here reaches the thousand
	// frames at which SQLite would copy them and start the log again.
	frames := func() int64 {
		t.Helper()
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var busy, log, copied int64
		if err := db.QueryRowContext(t.Context(), `PRAGMA wal_checkpoint(NOOP)`).Scan(&busy, &log, &copied); err != nil {
			t.Fatal(err)
		}
		return log
	}
	before, after := storetest.ThroughStates(t, s, plan, spec, frames)
	// Four transactions of a few pages each (the buildset's row and its
	// indexes, the counter, the build); 200 and more with the row whole.
	if n := after - before; n < 4 || n > 40 {
		t.Errorf("four state changes wrote %d frames to the log (%d to %d); want a few pages each", n, before, after)
	}
}
