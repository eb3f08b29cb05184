package sqlite

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// rawFixture is a store with an owner and a buildset of n WAITING builds,
// job-0 to job-(n-1), and a start of each by that owner.
func rawFixture(t *testing.T, n int) (*Store, func(job int) store.BuildWrite) {
	t.Helper()
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "run", Kind: store.OwnerRun, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	jobs := make([]string, n)
	for i := range jobs {
		jobs[i] = fmt.Sprintf("job-%d", i)
	}
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "bs", Pipeline: "p", Commit: "c", CreatedAt: time.Now()}, Jobs: jobs,
	}); err != nil {
		t.Fatal(err)
	}
	return s, func(job int) store.BuildWrite {
		return store.BuildWrite{Start: &store.StartAttemptParams{Fence: f, Attempt: &store.Attempt{
			BuildsetID: "bs", Job: jobs[job], Number: 1, Owner: "run", StartedAt: time.Now(), Log: jobs[job] + ".log"}}}
	}
}

// TestRawTxFull: a batch that the disk has no room for is refused as
// store.ErrUnavailable, which callers retry, and writes nothing; the same
// batch is written once there is room again.
func TestRawTxFull(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, start := rawFixture(t, 500)
	s.j.off = true // the transaction's refusal, not the journal's
	var batch []store.BuildWrite
	for i := range 500 {
		batch = append(batch, start(i))
	}
	var pages int
	if err := s.w.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	// The write pool's one connection: the limit is a connection's.
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages)); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, batch); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a batch with no room for it: %v, want ErrUnavailable", err)
	}
	if running, err := s.RunningAttempts(ctx, "bs"); err != nil || len(running) != 0 {
		t.Fatalf("running attempts after a refused batch: %d, %v; want none", len(running), err)
	}
	if _, err := s.w.ExecContext(ctx, `PRAGMA max_page_count = 1073741823`); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, batch); err != nil {
		t.Fatalf("the batch once there is room: %v", err)
	}
	if running, err := s.RunningAttempts(ctx, "bs"); err != nil || len(running) != 500 {
		t.Fatalf("running attempts: %d, %v; want 500", len(running), err)
	}
}

// TestRawTxNewConnection: when database/sql drops the write connection,
// the statements prepared on it are closed with it (SQLite would keep the
// closed connection, and its page cache, for as long as one is open), and
// the next batch prepares its own on the new one.
func TestRawTxNewConnection(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, start := rawFixture(t, 2)
	s.j.off = true // the transaction's statements
	if err := s.WriteBuilds(ctx, []store.BuildWrite{start(0)}); err != nil {
		t.Fatal(err)
	}
	conn, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var old *writeConn
	var prepared int
	conn.Raw(func(dc any) error {
		old = dc.(*writeConn)
		prepared = len(old.stmts)
		return driver.ErrBadConn // as for a connection the driver finds unusable
	})
	conn.Close()
	if prepared == 0 {
		t.Fatal("the batch prepared no statement on the write connection")
	}
	if old.stmts != nil {
		t.Errorf("the dropped connection's %d statements were not closed", len(old.stmts))
	}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{start(1)}); err != nil {
		t.Fatalf("a batch on a new connection: %v", err)
	}
	if running, err := s.RunningAttempts(ctx, "bs"); err != nil || len(running) != 2 {
		t.Fatalf("running attempts: %d, %v; want 2", len(running), err)
	}
}
