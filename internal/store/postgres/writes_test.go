package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
)

// openWith opens a store on a fresh database with extra URL parameters
// (pool size, session settings), closed when the test ends.
func openWith(t *testing.T, params map[string]string) (*Store, string) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	for k, v := range params {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	s, err := Open(t.Context(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dbURL
}

// writesFixture makes buildset bs1 with builds x and y, owned by p1, and
// returns p1's fence and the write of each kind.
func writesFixture(t *testing.T, s *Store) (start, end func(job string) []store.BuildWrite) {
	t.Helper()
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Microsecond)
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "p1", Kind: store.OwnerNode, Lease: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: now}, Jobs: []string{"x", "y"},
	}); err != nil {
		t.Fatal(err)
	}
	start = func(job string) []store.BuildWrite {
		return []store.BuildWrite{{Start: &store.StartAttemptParams{
			Attempt: &store.Attempt{BuildsetID: "bs1", Job: job, Number: 1, Owner: "p1", StartedAt: now, Log: job + ".log"}, Fence: f}}}
	}
	end = func(job string) []store.BuildWrite {
		return []store.BuildWrite{
			{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs1", Job: job, Number: 1, Result: store.Success, At: now, Fence: f}},
			{FinishBuild: &store.FinishBuildParams{BuildsetID: "bs1", Job: job, Result: store.Success, At: now, Fence: f}},
		}
	}
	return start, end
}

// buildStates reads the state of every build of bs1, by job.
func buildStates(t *testing.T, s *Store) map[string]store.BuildState {
	t.Helper()
	bs, err := s.Builds(t.Context(), "bs1")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]store.BuildState{}
	for _, b := range bs {
		out[b.Job] = b.State
	}
	return out
}

// waitLockWait waits until a backend of the test's database waits for a
// lock.
func waitLockWait(t *testing.T, dbURL string) {
	t.Helper()
	conn := connect(t, dbURL)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no backend ever waited for the lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWriteBuildsCanceled: a batch whose context is cancelled while it
// waits for a lock writes nothing, says so (errors.Is context.Canceled,
// naming the batch), and leaves no transaction open on the pool's one
// connection: the next batch on it commits alone.
func TestWriteBuildsCanceled(t *testing.T) {
	t.Parallel()
	s, dbURL := openWith(t, map[string]string{"pool_max_conns": "1"})
	start, _ := writesFixture(t, s)
	locker := connect(t, dbURL)
	tx, err := locker.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `SELECT 1 FROM builds WHERE buildset_id = 'bs1' AND job = 'y' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.WriteBuilds(ctx, append(start("x"), start("y")...)) }()
	waitLockWait(t, dbURL)
	cancel()
	err = <-errc
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "write builds") {
		t.Errorf("a cancelled batch: %v; want context.Canceled, saying it was a batch of build writes", err)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := buildStates(t, s); st["x"] != store.BuildWaiting || st["y"] != store.BuildWaiting {
		t.Fatalf("builds after a cancelled batch: %v; want both WAITING", st)
	}
	if err := s.WriteBuilds(t.Context(), start("y")); err != nil {
		t.Fatalf("a batch after a cancelled one: %v", err)
	}
	if st := buildStates(t, s); st["x"] != store.BuildWaiting || st["y"] != store.BuildRunning {
		t.Errorf("builds after the next batch: %v; want x WAITING (its start was cancelled), y RUNNING", st)
	}
}

// TestWriteBuildsRetriesDeadlock: a batch that deadlocks with another
// transaction, and is the one PostgreSQL aborts (40P01), is run again
// whole once the other commits: every write made once. The other
// transaction never looks for the deadlock (deadlock_timeout an hour),
// so the batch is the victim: it looks 2s after it starts waiting, long
// after the other closed the cycle (lock_timeout ends the test, rather
// than hang it, if a loaded machine got that wrong).
func TestWriteBuildsRetriesDeadlock(t *testing.T) {
	t.Parallel()
	s, dbURL := openWith(t, map[string]string{"deadlock_timeout": "2s"})
	start, end := writesFixture(t, s)
	if err := s.WriteBuilds(t.Context(), append(start("x"), start("y")...)); err != nil {
		t.Fatal(err)
	}
	other := connect(t, dbURL)
	if _, err := other.Exec(t.Context(), `SET deadlock_timeout = '1h'; SET lock_timeout = '30s'`); err != nil {
		t.Fatal(err)
	}
	tx, err := other.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(t.Context(), `UPDATE builds SET reason = 'other' WHERE buildset_id = 'bs1' AND job = 'y'`); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.WriteBuilds(t.Context(), append(end("x"), end("y")...)) }()
	waitLockWait(t, dbURL) // the batch holds x and waits for y
	// Returns once the batch, aborted, let go of x.
	if _, err := tx.Exec(t.Context(), `UPDATE builds SET reason = 'other' WHERE buildset_id = 'bs1' AND job = 'x'`); err != nil {
		t.Fatalf("the other transaction: %v; want the batch to be the deadlock's victim", err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("the batch, run again after the deadlock: %v", err)
	}
	if st := buildStates(t, s); st["x"] != store.BuildDone || st["y"] != store.BuildDone {
		t.Errorf("builds after the batch: %v; want both DONE", st)
	}
	for _, job := range []string{"x", "y"} {
		atts, err := s.Attempts(t.Context(), "bs1", job)
		if err != nil {
			t.Fatal(err)
		}
		if len(atts) != 1 || atts[0].Result != store.Success {
			t.Errorf("attempts of %s: %+v; want one, SUCCESS", job, atts)
		}
	}
}

// TestWhyNot: when a write of a batch changed no row, the database's
// answer to "why" is the write's failure (not retried) only if it is a
// reason; a failure to answer (the connection lost meanwhile) is an
// error of the database, which WriteBuilds retries or reports as
// ErrUnavailable, not a write refused for good.
func TestWhyNot(t *testing.T) {
	t.Parallel()
	lost := fmt.Errorf("query: %w", &pgconn.PgError{Severity: "FATAL", Code: "08006"})
	for _, tc := range []struct {
		name        string
		answer      error
		failed      error // wrapped by failed; nil: failed must be nil
		err         error // wrapped by err; nil: err must be nil
		unavailable bool  // mapErr(err) says ErrUnavailable
	}{
		{"not found", store.ErrNotFound, store.ErrNotFound, nil, false},
		{"conflict", fmt.Errorf("is DONE: %w", store.ErrConflict), store.ErrConflict, nil, false},
		{"connection lost", lost, nil, lost, true},
		{"no answer", nil, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed, err := whyNot("finish build bs1/x", tc.answer)
			switch {
			case tc.failed != nil && (!errors.Is(failed, tc.failed) || !strings.Contains(failed.Error(), "finish build bs1/x")):
				t.Errorf("failed = %v; want it to wrap %v and name the write", failed, tc.failed)
			case tc.failed == nil && tc.answer != nil && failed != nil:
				t.Errorf("failed = %v; want nil", failed)
			case tc.answer == nil && failed == nil:
				t.Error("no answer, and the write is not failed: the batch would commit without it")
			}
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Errorf("err = %v; want %v", err, tc.err)
			}
			if got := errors.Is(mapErr(t.Context(), err), store.ErrUnavailable); got != tc.unavailable {
				t.Errorf("mapErr(%v) unavailable = %v; want %v", err, got, tc.unavailable)
			}
		})
	}
}
