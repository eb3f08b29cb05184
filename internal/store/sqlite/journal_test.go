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
	if n := s.j.oneByOne.Load(); n != 1 {
		t.Errorf("%d applies made batch by batch, want the refused one", n)
	}
	// A write of its own, refused too, leaves the refusal to be told.
	if err := s.StartAttempt(ctx, *startW(f, "b", 1).Start); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("a start of its own: %v, want ErrFenced", err)
	}
	err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "b", 1)})
	if !errors.Is(err, store.ErrFenced) || !strings.Contains(err.Error(), "applied late") {
		t.Fatalf("the next batch: %v, want the refusal of the one before", err)
	}
	if got := s.FencedWrites(); got != 2 {
		t.Errorf("fenced writes counted: %d, want 2 (the batch applied late, the start)", got)
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
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), JournalHelperEnv+"="+path)
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

// journalHelper is TestJournalRecoveredAfterKill's process to kill (the
// test binary again, TestMain calling it): it journals two batches, says
// so, and waits.
func journalHelper(path string) error {
	ctx := context.Background()
	s, err := Open(ctx, path)
	if err != nil {
		return err
	}
	s.j.delay = time.Hour
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "helper", Kind: store.OwnerRun, Lease: time.Hour})
	if err != nil {
		return err
	}
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "bs", Pipeline: "p", Commit: "c", CreatedAt: time.Now()}, Jobs: []string{"a", "b", "c"},
	}); err != nil {
		return err
	}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		return err
	}
	if err := s.WriteBuilds(ctx, append(endW(f, "a", 1, store.Success), startW(f, "b", 1))); err != nil {
		return err
	}
	fmt.Printf("journaled %d\n", s.j.n.Load())
	os.Stdin.Read(make([]byte, 1)) // killed meanwhile
	return errors.New("not killed")
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

// TestJournalMergedAsWritten: batches applied together, a start merged
// with the ends that follow it, leave every column of every build and
// attempt as the same batches written one transaction each: retries,
// skipped builds, zero times, a build ended in a later apply than its
// start.
func TestJournalMergedAsWritten(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	jobs := []string{"a", "b", "c", "d", "e"}
	merged, f := journalFixture(t, filepath.Join(t.TempDir(), "sortie.db"), jobs...)
	plain, g := journalFixture(t, filepath.Join(t.TempDir(), "sortie.db"), jobs...)
	plain.j.off = true
	if f != g {
		t.Fatalf("fences %v and %v: the two stores should hand out the same", f, g)
	}
	at := time.Date(2026, 12, 5, 23, 0, 0, 0, time.UTC)
	tick := func() time.Time { at = at.Add(time.Millisecond); return at }
	start := func(job string, n int) store.BuildWrite {
		w := startW(f, job, n)
		w.Start.Attempt.StartedAt = tick()
		return w
	}
	endA := func(job string, n int, res store.Result, msg string) store.BuildWrite {
		return store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs", Job: job, Number: n, Result: res, Error: msg, At: tick(), Fence: f}}
	}
	endB := func(job string, res store.Result, reason string, zero bool) store.BuildWrite {
		p := &store.FinishBuildParams{BuildsetID: "bs", Job: job, Result: res, Reason: reason, At: tick(), Fence: f}
		if zero {
			p.At = time.Time{}
		}
		return store.BuildWrite{FinishBuild: p}
	}
	applies := [][][]store.BuildWrite{
		{
			{start("a", 1)},
			{endA("a", 1, store.Failure, "exit 1"), start("a", 2)},
			{endA("a", 2, store.Success, ""), endB("a", store.Success, "", false), start("b", 1), start("c", 1)},
			{endB("d", store.Skipped, "a dependency failed", true)},
			{endA("c", 1, store.Success, ""), endB("c", store.Success, "", true)},
		},
		{
			{endA("b", 1, store.Failure, "exit 2"), endB("b", store.Failure, "its attempt failed", false), start("e", 1)},
		},
	}
	for _, apply := range applies {
		for _, b := range apply {
			if err := merged.WriteBuilds(ctx, b); err != nil {
				t.Fatal(err)
			}
			if err := plain.WriteBuilds(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if n := merged.j.n.Load(); n != int64(len(apply)) {
			t.Fatalf("%d batches journaled, want %d", n, len(apply))
		}
		if err := merged.settle(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dump := func(s *Store) string {
		var out []string
		for _, q := range []string{
			`SELECT buildset_id, job, seq, state, result, attempt, started_at, finished_at, log, reason FROM builds ORDER BY seq`,
			`SELECT buildset_id, job, number, owner, started_at, finished_at, result, log, error FROM attempts ORDER BY job, number`,
		} {
			rows, err := s.rowsNow(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, vals := range scanAll(t, rows) {
				out = append(out, fmt.Sprint(vals...))
			}
		}
		return strings.Join(out, "\n")
	}
	if n := merged.j.oneByOne.Load(); n != 0 {
		t.Fatalf("%d applies made batch by batch, want none: every batch applies", n)
	}
	got, want := dump(merged), dump(plain)
	if got != want {
		t.Fatalf("merged:\n%s\n\nwritten one by one:\n%s", got, want)
	}
	if !strings.Contains(want, "FAILURE") || !strings.Contains(want, "a dependency failed") {
		t.Fatalf("the rows lack what was written:\n%s", want)
	}
}

// TestJournalModel: the builds' states a batch is checked against are
// known at once for a buildset made to be run by this process (pinned to
// it), and read at its first batch for any other.
func TestJournalModel(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, f := journalFixture(t, filepath.Join(t.TempDir(), "sortie.db"), "a")
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "pinned", Pipeline: "p", Commit: "c", CreatedAt: time.Now(), PinnedTo: f.Owner}, Jobs: []string{"x", "y"},
	}); err != nil {
		t.Fatal(err)
	}
	s.j.mu.Lock()
	pinned, other := s.j.model["pinned"], s.j.model["bs"]
	s.j.mu.Unlock()
	if len(pinned) != 2 || pinned["x"].state != store.BuildWaiting || other != nil {
		t.Fatalf("models after making them: pinned %v, other %v; want the pinned one's two waiting builds only", pinned, other)
	}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		t.Fatal(err)
	}
	s.j.mu.Lock()
	m := s.j.model["bs"]["a"]
	s.j.mu.Unlock()
	if m == nil || m.state != store.BuildRunning || m.attempt != 1 || len(m.open) != 1 {
		t.Fatalf("bs's model after its first batch: %+v, want a RUNNING at attempt 1", m)
	}
	if n := s.j.n.Load(); n != 1 {
		t.Fatalf("%d batches journaled, want the first batch of a model read for it", n)
	}
	if _, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: "bs", Result: store.Canceled, BuildResult: store.Canceled, Fence: &f}); err != nil {
		t.Fatal(err)
	}
	s.j.mu.Lock()
	_, kept := s.j.model["bs"]
	s.j.mu.Unlock()
	if kept {
		t.Error("the model of an ended buildset is kept")
	}
}

// TestJournalBadBatch: a journaled batch that fails for a reason of its
// own (here a row the model did not know of) is refused alone: the
// batches around it are applied, its buildset's next batch gets the
// refusal, and another buildset's go on.
func TestJournalBadBatch(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, f := journalFixture(t, filepath.Join(t.TempDir(), "sortie.db"), "a", "b")
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset: &store.Buildset{ID: "other", Pipeline: "p", Commit: "c", CreatedAt: time.Now()}, Jobs: []string{"c"},
	}); err != nil {
		t.Fatal(err)
	}
	startC := startW(f, "c", 1)
	startC.Start.Attempt.BuildsetID = "other"
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		t.Fatal(err)
	}
	// Behind the model's back, as a bug would: b's attempt 1 exists.
	if _, err := s.w.ExecContext(ctx, `INSERT INTO attempts (buildset_id, job, number, started_at) VALUES ('bs', 'b', 1, 1)`); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "b", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startC}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Attempts(ctx, "bs", "a"); err != nil {
		t.Fatalf("a read after a batch that cannot be applied: %v", err)
	}
	if got, want := states(t, s), "a:RUNNING::1:1 b:WAITING::0:1"; got != want {
		t.Fatalf("after the apply: %s, want %s (b's batch refused alone)", got, want)
	}
	if running, err := s.RunningAttempts(ctx, "other"); err != nil || len(running) != 1 {
		t.Fatalf("the other buildset's running attempts: %v, %v; want c's", running, err)
	}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "b", 2)}); err == nil || !strings.Contains(err.Error(), "applied late") {
		t.Fatalf("bs's next batch: %v, want the refusal of the one before", err)
	}
	endC := store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "other", Job: "c", Number: 1, Result: store.Success, Fence: f}}
	if err := s.WriteBuilds(ctx, []store.BuildWrite{endC}); err != nil {
		t.Fatalf("the other buildset's next batch: %v", err)
	}
}

// TestJournalCannotWrite: a batch the journal's file refuses (a full disk,
// here a file that cannot be written) is written in a transaction instead,
// and WriteBuilds says nothing of it.
func TestJournalCannotWrite(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, f := journalFixture(t, filepath.Join(t.TempDir(), "sortie.db"), "a", "b")
	if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, "a", 1)}); err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(s.j.path)
	if err != nil {
		t.Fatal(err)
	}
	s.j.mu.Lock()
	rw := s.j.f
	s.j.f = ro
	s.j.mu.Unlock()
	defer rw.Close()
	if err := s.WriteBuilds(ctx, append(endW(f, "a", 1, store.Success), startW(f, "b", 1))); err != nil {
		t.Fatalf("a batch the journal cannot take: %v", err)
	}
	if got, want := states(t, s), "a:DONE:SUCCESS:1:0 b:RUNNING::1:1"; got != want {
		t.Fatalf("after it: %s, want %s (written in a transaction, after the journaled batch)", got, want)
	}
	if s.j.broken == nil {
		t.Error("a journal whose file can be neither written nor cut back is still used")
	}
}

// TestJournalAppliedInTheBackground: with nothing reading or writing, the
// store's applier applies a batch after journalDelay, and at once when
// journalBatch batches wait; another process sees them then.
func TestJournalAppliedInTheBackground(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		delay   time.Duration
		batches int
	}{{"after the delay", journalDelay, 1}, {"a full journal", time.Hour, journalBatch}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			path := filepath.Join(t.TempDir(), "sortie.db")
			jobs := make([]string, c.batches)
			for i := range jobs {
				jobs[i] = fmt.Sprintf("j%02d", i)
			}
			s, f := journalFixture(t, path, jobs...)
			s.j.delay = c.delay
			other := open2(t, path)
			for _, job := range jobs {
				if err := s.WriteBuilds(ctx, []store.BuildWrite{startW(f, job, 1)}); err != nil {
					t.Fatal(err)
				}
			}
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				running, err := other.RunningAttempts(ctx, "bs")
				if err != nil {
					t.Fatal(err)
				}
				if len(running) == c.batches {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("another process sees %d running attempts after 30 s, want %d", len(running), c.batches)
				}
			}
		})
	}
}
