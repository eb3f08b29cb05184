package sqlite

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// journalFixture opens a store whose journal is applied only by hand (a
// read, another write, Close), with an owner and a buildset "bs" of jobs.
func journalFixture(t *testing.T, path string, jobs ...string) (*Store, store.Fence) {
	t.Helper()
	ctx := t.Context()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.j.delay = time.Hour
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "run", Kind: store.OwnerRun, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "bs", Pipeline: "p", Commit: "c", CreatedAt: time.Now()}, Jobs: jobs,
	}); err != nil {
		t.Fatal(err)
	}
	return s, f
}

func startW(f store.Fence, job string, n int) store.BuildWrite {
	return store.BuildWrite{Start: &store.StartAttemptParams{Fence: f, Attempt: &store.Attempt{
		BuildsetID: "bs", Job: job, Number: n, Owner: f.Owner, StartedAt: time.Now(), Log: job + ".log"}}}
}

func endW(f store.Fence, job string, n int, res store.Result) []store.BuildWrite {
	at := time.Now()
	return []store.BuildWrite{
		{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs", Job: job, Number: n, Result: res, At: at, Fence: f}},
		{FinishBuild: &store.FinishBuildParams{BuildsetID: "bs", Job: job, Result: res, At: at, Fence: f}},
	}
}

// states reads each build of "bs" as "job:STATE:result:attempt", with the
// running attempts, straight from the tables (no journal applied first).
func states(t *testing.T, s *Store) string {
	t.Helper()
	rows, err := s.rowsNow(t.Context(), `
		SELECT b.job, b.state, b.result, b.attempt,
			(SELECT count(*) FROM attempts a WHERE a.buildset_id = b.buildset_id AND a.job = b.job AND a.result = '')
		FROM builds b WHERE b.buildset_id = 'bs' ORDER BY b.seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var job, state, result string
		var attempt, running int
		if err := rows.Scan(&job, &state, &result, &attempt, &running); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s:%s:%s:%d:%d", job, state, result, attempt, running))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func journals(t *testing.T, s *Store) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(s.j.dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestJournalReadsOwnWrites: a batch the model vouches for is journaled,
// not written to the tables; this store's next read applies it first, and
// so does Close, which leaves no journal behind.
func TestJournalReadsOwnWrites(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s, f := journalFixture(t, path, "a", "b")
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, append(endW(f, "a", 1, store.Success), startW(f, "b", 1))); err != nil {
		t.Fatal(err)
	}
	if n := s.j.n.Load(); n != 2 {
		t.Fatalf("%d batches pending, want the 2 written", n)
	}
	if got, want := states(t, s), "a:WAITING::0:0 b:WAITING::0:0"; got != want {
		t.Fatalf("tables before any read: %s, want %s (the batches journaled)", got, want)
	}
	data, err := os.ReadFile(s.j.path)
	if err != nil {
		t.Fatal(err)
	}
	if got := readRecords(data); len(got) != 2 || len(got[1]) != 3 || got[1][2].Start.Attempt.Job != "b" {
		t.Fatalf("the journal holds %d records, want the 2 batches", len(got))
	}
	running, err := s.RunningAttempts(ctx, "bs")
	if err != nil {
		t.Fatal(err)
	}
	if len(running) != 1 || running[0].Job != "b" {
		t.Fatalf("running attempts read after the writes: %v, want b's", running)
	}
	if got, want := states(t, s), "a:DONE:SUCCESS:1:0 b:RUNNING::1:1"; got != want {
		t.Fatalf("tables after a read: %s, want %s", got, want)
	}
	if fi, err := os.Stat(s.j.path); err != nil || fi.Size() != 0 {
		t.Fatalf("the journal once applied: %v, %v; want it emptied", fi, err)
	}
	if err := s.WriteBuilds(ctx, endW(f, "b", 1, store.Failure)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if left := journals(t, s); len(left) != 0 {
		t.Fatalf("journals left by Close: %v", left)
	}
	other := open2(t, path)
	if got, want := states(t, other), "a:DONE:SUCCESS:1:0 b:DONE:FAILURE:1:0"; got != want {
		t.Fatalf("after Close: %s, want %s", got, want)
	}
}

func open2(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestJournalErrorsAtOnce: a batch the model cannot vouch for is written
// in a transaction, and its error is WriteBuilds' own, as without the
// journal; what was journaled before it is applied first.
func TestJournalErrorsAtOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, f := journalFixture(t, filepath.Join(t.TempDir(), "sortie.db"), "a", "b")
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		t.Fatal(err)
	}
	err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "b", 1), startW(f, "a", 1)})
	if !errors.Is(err, store.ErrConflict) || !strings.Contains(err.Error(), "start attempt bs/a #1") {
		t.Fatalf("a second start of a#1: %v, want its ErrConflict", err)
	}
	if got, want := states(t, s), "a:RUNNING::1:1 b:WAITING::0:0"; got != want {
		t.Fatalf("after the refused batch: %s, want %s (the first applied, none of the second)", got, want)
	}
	err = s.WriteBuilds(ctx, []store.BuildWrite{{FinishAttempt: &store.FinishAttemptParams{
		BuildsetID: "bs", Job: "nope", Number: 1, Result: store.Success, Fence: f}}})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the end of an unknown build's attempt: %v, want ErrNotFound", err)
	}
	// An owner fenced by this store is refused at its next batch.
	if _, err := s.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{f.Owner}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, endW(f, "a", 1, store.Success)); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a fenced owner's batch: %v, want ErrFenced", err)
	}
}

// TestJournalFencedBeforeApply: another process fences the owner between
// the journaling of a batch and its apply. The apply refuses the batch,
// which writes nothing, and the next batch of its buildset gets the
// refusal.
func TestJournalFencedBeforeApply(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s, f := journalFixture(t, path, "a", "b")
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		t.Fatal(err)
	}
	other := open2(t, path)
	if _, err := other.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{f.Owner}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if got, want := states(t, s), "a:WAITING::0:0 b:WAITING::0:0"; got != want {
		t.Fatalf("before the apply: %s, want %s", got, want)
	}
	if err := s.settle(ctx); err != nil {
		t.Fatalf("an apply whose batch is refused: %v, want no error of its own", err)
	}
	if got, want := states(t, s), "a:WAITING::0:0 b:WAITING::0:0"; got != want {
		t.Fatalf("after the refused apply: %s, want %s", got, want)
	}
	err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "b", 1)})
	if !errors.Is(err, store.ErrFenced) || !strings.Contains(err.Error(), "applied late") {
		t.Fatalf("the next batch: %v, want the refusal of the one before", err)
	}
	if got := s.FencedWrites(); got != 1 {
		t.Errorf("fenced writes counted: %d, want 1", got)
	}
}

// TestJournalRecoveredAfterKill: a process killed with batches journaled
// and not applied. While it lives, another process neither sees its
// batches nor takes its journal; once it is dead, they are applied by the
// next process to open the database, or by a live one fencing its owner
// (before the fence: fenced, they would be refused).
func TestJournalRecoveredAfterKill(t *testing.T) {
	t.Parallel()
	for _, by := range []string{"open", "fence"} {
		t.Run(by, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "sortie.db")
			cmd := exec.Command(os.Args[0], "-test.run=^TestJournalHelperProcess$")
			cmd.Env = append(os.Environ(), "SORTIE_JOURNAL_HELPER="+path)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if err != nil || line != "journaled 2\n" {
				t.Fatalf("the helper said %q, %v; want \"journaled 2\"", line, err)
			}
			live := open2(t, path)
			if got, want := states(t, live), "a:WAITING::0:0 b:WAITING::0:0 c:WAITING::0:0"; got != want {
				t.Fatalf("another process's view of the live one's journaled batches: %s, want %s", got, want)
			}
			if n := len(journals(t, live)); n != 1 {
				t.Fatalf("%d journals while the helper lives, want its own", n)
			}
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err == nil {
				t.Fatal("the helper exited on its own")
			}
			var s *Store
			switch by {
			case "open":
				s = open2(t, path)
			case "fence":
				s = live
				fenced, err := s.FenceOwners(ctx, store.FenceOwnersParams{Now: time.Now().Add(2 * time.Hour)})
				if err != nil {
					t.Fatal(err)
				}
				if len(fenced) != 1 || fenced[0].ID != "helper" {
					t.Fatalf("fenced %v, want the helper's owner", fenced)
				}
			}
			if got, want := states(t, s), "a:DONE:SUCCESS:1:0 b:RUNNING::1:1 c:WAITING::0:0"; got != want {
				t.Fatalf("after the helper's death: %s, want %s (its batches applied)", got, want)
			}
			if left := journals(t, s); len(left) != 0 {
				t.Fatalf("journals left once applied: %v", left)
			}
		})
	}
}

// TestJournalHelperProcess is TestJournalRecoveredAfterKill's process to
// kill: it journals two batches, says so, and waits.
func TestJournalHelperProcess(t *testing.T) {
	path := os.Getenv("SORTIE_JOURNAL_HELPER")
	if path == "" {
		t.Skip("the helper of TestJournalRecoveredAfterKill, run by it")
	}
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	s.j.delay = time.Hour
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "helper", Kind: store.OwnerRun, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "bs", Pipeline: "p", Commit: "c", CreatedAt: time.Now()}, Jobs: []string{"a", "b", "c"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, append(endW(f, "a", 1, store.Success), startW(f, "b", 1))); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("journaled %d\n", s.j.n.Load())
	os.Stdin.Read(make([]byte, 1)) // killed meanwhile
}

// TestJournalRecoveredOnce: a dead process's journal whose first batches
// were applied already (it died between an apply and the emptying of its
// file), and whose last record was cut short by the crash. The applied
// batches change nothing, the next one is applied, the cut one ignored.
func TestJournalRecoveredOnce(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s, f := journalFixture(t, path, "a", "b", "c")
	first := [][]store.BuildWrite{{startW(f, "a", 1)}, append(endW(f, "a", 1, store.Success), startW(f, "b", 1))}
	for _, b := range first {
		if err := s.WriteBuilds(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.settle(ctx); err != nil {
		t.Fatal(err)
	}
	applied := states(t, s)
	var finished int64
	if err := s.rowNow(ctx, `SELECT finished_at FROM attempts WHERE job = 'a'`).Scan(&finished); err != nil {
		t.Fatal(err)
	}
	var data []byte
	for _, b := range first {
		// Written again later: the same writes, later times.
		for _, w := range b {
			if w.FinishAttempt != nil {
				w.FinishAttempt.At = w.FinishAttempt.At.Add(time.Hour)
			}
		}
		data = appendRecord(data, b)
	}
	data = appendRecord(data, endW(f, "b", 1, store.Failure))
	cut := appendRecord(nil, []store.BuildWrite{startW(f, "c", 1)})
	data = append(data, cut[:len(cut)-3]...)
	dead := filepath.Join(s.j.dir, "1-dead"+journalSuffix)
	if err := os.MkdirAll(s.j.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dead, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if applied != "a:DONE:SUCCESS:1:0 b:RUNNING::1:1 c:WAITING::0:0" {
		t.Fatalf("before the recovery: %s", applied)
	}
	if err := s.recoverJournals(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := states(t, s), "a:DONE:SUCCESS:1:0 b:DONE:FAILURE:1:0 c:WAITING::0:0"; got != want {
		t.Fatalf("after the recovery: %s, want %s", got, want)
	}
	var again int64
	if err := s.rowNow(ctx, `SELECT finished_at FROM attempts WHERE job = 'a'`).Scan(&again); err != nil {
		t.Fatal(err)
	}
	if again != finished {
		t.Errorf("a's attempt finished at %d, then %d: a batch applied twice", finished, again)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dead journal once applied: %v, want it removed", err)
	}
}

// TestJournalRecordRoundTrip: every field of every kind of write comes
// back from a record as written, and a damaged record ends the journal.
func TestJournalRecordRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 5, 23, 0, 0, 123456789, time.UTC)
	f := store.Fence{Owner: "o", Epoch: 42}
	in := []store.BuildWrite{
		{Start: &store.StartAttemptParams{Fence: f, Attempt: &store.Attempt{BuildsetID: "bs", Job: "j", Number: 3, Owner: "o", StartedAt: at, Log: "/l/j.log"}}},
		{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs", Job: "j", Number: 3, Result: store.Failure, Error: "exit 1", At: at, Fence: f}},
		{FinishBuild: &store.FinishBuildParams{BuildsetID: "bs", Job: "j", Result: store.Skipped, Reason: "why", Fence: f}},
	}
	data := appendRecord(nil, in)
	out := readRecords(data)
	if len(out) != 1 || len(out[0]) != 3 {
		t.Fatalf("read %d records", len(out))
	}
	if got, want := fmt.Sprintf("%+v %+v", *out[0][0].Start.Attempt, out[0][0].Start.Fence), fmt.Sprintf("%+v %+v", *in[0].Start.Attempt, f); got != want {
		t.Errorf("start: %s, want %s", got, want)
	}
	if got, want := fmt.Sprintf("%+v", *out[0][1].FinishAttempt), fmt.Sprintf("%+v", *in[1].FinishAttempt); got != want {
		t.Errorf("attempt's end: %s, want %s", got, want)
	}
	if got, want := fmt.Sprintf("%+v", *out[0][2].FinishBuild), fmt.Sprintf("%+v", *in[2].FinishBuild); got != want {
		t.Errorf("build's end: %s, want %s (a zero At stays zero)", got, want)
	}
	damaged := append([]byte{}, data...)
	damaged[len(damaged)-1] ^= 1
	if got := readRecords(append(data, damaged...)); len(got) != 1 {
		t.Errorf("a damaged second record: read %d records, want the first only", len(got))
	}
}
