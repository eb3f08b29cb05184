package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

func TestMigrations(t *testing.T) {
	t.Parallel()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 {
		t.Fatalf("migrations = %v", ms)
	}

	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sortie.db")
	for range 2 { // the second Open applies nothing
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		var versions int
		if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&versions); err != nil {
			t.Fatal(err)
		}
		if versions != len(ms) {
			t.Errorf("schema_migrations has %d rows, want %d", versions, len(ms))
		}
		var mode string
		if err := s.r.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" {
			t.Errorf("journal_mode = %s, want wal", mode)
		}
		var fk int
		if err := s.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
			t.Fatal(err)
		}
		if fk != 1 {
			t.Errorf("foreign_keys = %d, want 1", fk)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (999)`); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if !strings.Contains(err.Error(), "newer") {
		t.Errorf("error = %v, want one about a newer schema", err)
	}
}

// upgraded makes a database with the migrations up to version only, runs
// rows on it (a version's data), then opens it as a store, which applies
// the rest; the store is closed when the test ends.
func upgraded(t *testing.T, version int, rows ...string) *Store {
	t.Helper()
	s, err := Open(t.Context(), databaseAt(t, version, rows...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// databaseAt makes a database file at schema version, with rows inserted
// by the statements given, and returns its path.
func databaseAt(t *testing.T, version int, rows ...string) string {
	t.Helper()
	ctx := t.Context()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sortie.db")
	db, err := openDB(path, false)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	qs := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)`}
	for _, m := range ms {
		if m.Version <= version {
			qs = append(qs, m.SQL, fmt.Sprintf(`INSERT INTO schema_migrations (version) VALUES (%d)`, m.Version))
		}
	}
	for _, q := range append(qs, rows...) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%.200s: %v", q, err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUpgradeFrom1 opens a database of the first schema that holds data:
// rebuilding buildsets keeps every row and its seq, does not cascade to the
// builds and attempts, keeps the AUTOINCREMENT counter, and leaves foreign
// keys on.
func TestUpgradeFrom1(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	s := upgraded(t, 1,
		`INSERT INTO buildsets (id, pipeline, commit_sha, files, state, plan, owner, created_at, started_at)
			VALUES ('bs1', 'deploy', 'c1', '["a.yaml"]', 'RUNNING', x'7b7d', 'proc', 10, 20)`,
		`INSERT INTO buildsets (id, pipeline, commit_sha, state, result, created_at, finished_at)
			VALUES ('bs2', 'hourly', 'c2', 'DONE', 'SUCCESS', 30, 40)`,
		`INSERT INTO buildsets (id, pipeline, commit_sha, state, created_at) VALUES ('bs3', 'deploy', 'c3', 'QUEUED', 50)`,
		`INSERT INTO builds (buildset_id, job, seq, state) VALUES ('bs1', 'bootstrap', 0, 'DONE'), ('bs1', 'base', 1, 'RUNNING')`,
		`INSERT INTO attempts (buildset_id, job, number, owner, started_at) VALUES ('bs1', 'base', 1, 'proc', 25)`,
		`DELETE FROM buildsets WHERE id = 'bs3'`, // its seq, 3, must not come back
	)
	var versions int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", versions, len(ms))
	}

	bs1, err := s.GetBuildset(ctx, "bs1")
	if err != nil {
		t.Fatal(err)
	}
	// Its owner had no lease: carried over released, which leaves the
	// buildset for any server to claim.
	if bs1.Seq != 1 || bs1.State != store.BuildsetRunning || bs1.Owner != "" || string(bs1.Plan) != "{}" ||
		len(bs1.Files) != 1 || bs1.StartedAt == nil || bs1.StartedAt.UnixNano() != 20 || bs1.Spec != nil || bs1.Cause != "" {
		t.Errorf("bs1 after upgrade: %+v", bs1)
	}
	bs2, err := s.GetBuildset(ctx, "bs2")
	if err != nil {
		t.Fatal(err)
	}
	if bs2.Seq != 2 || bs2.Result != store.Success || bs2.FinishedAt == nil {
		t.Errorf("bs2 after upgrade: %+v", bs2)
	}
	builds, err := s.Builds(ctx, "bs1")
	if err != nil || len(builds) != 2 {
		t.Errorf("builds of bs1 after upgrade: %v, %v", builds, err)
	}
	running, err := s.RunningAttempts(ctx, "bs1")
	if err != nil || len(running) != 1 {
		t.Errorf("running attempts of bs1 after upgrade: %v, %v", running, err)
	}

	bs4 := &store.Buildset{ID: "bs4", Pipeline: "deploy", Commit: "c4", CreatedAt: time.Unix(60, 0)}
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs4, Jobs: []string{"base"}}); err != nil {
		t.Fatal(err)
	}
	if bs4.Seq != 4 {
		t.Errorf("Seq of a buildset created after the upgrade = %d, want 4", bs4.Seq)
	}
	server, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "server", Kind: store.OwnerNode, Lease: time.Minute, Now: time.Unix(65, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AdmitBuildset(ctx, "bs4", server, time.Unix(70, 0)); err != nil {
		t.Errorf("admit after upgrade: %v", err)
	}

	var fk int
	if err := s.w.QueryRowContext(ctx, `PRAGMA foreign_keys`).Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if fk != 1 {
		t.Errorf("foreign_keys = %d after migrating, want 1", fk)
	}
	if _, err := s.w.ExecContext(ctx, `INSERT INTO builds (buildset_id, job, seq, state) VALUES ('nope', 'x', 0, 'WAITING')`); err == nil {
		t.Error("a build of no buildset was inserted: the rebuilt table is not referenced")
	}
	var check string
	if err := s.w.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil {
		t.Fatal(err)
	}
	if check != "ok" {
		t.Errorf("integrity_check: %s", check)
	}
}

// TestUpgradeLeasesToOwners: migration 0006 makes an owner of every lease
// row, its kind read from the id's old prefix, live until its lease's end;
// an owner of rows without a lease (released before the upgrade, its kept
// holder waiting for an adopter) is carried over released; a `sortie
// run`'s QUEUED buildset becomes pinned to it, with no owner.
func TestUpgradeLeasesToOwners(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := upgraded(t, 3,
		`INSERT INTO leases (owner, expires_at) VALUES ('run-a', 100), ('srv-b', 200)`,
		`INSERT INTO semaphore_holders (semaphore, holder, buildset, owner, acquired_at) VALUES ('P', 'bs1', 'bs1', 'srv-c', 5)`,
		`INSERT INTO buildsets (id, pipeline, commit_sha, state, owner, created_at) VALUES
			('bs1', 'deploy', 'c', 'RUNNING', 'srv-c', 1), ('bs2', 'deploy', 'c', 'QUEUED', 'run-a', 2),
			('bs3', 'deploy', 'c', 'ADMITTED', 'srv-b', 3)`,
	)
	owners, err := s.Owners(ctx, store.OwnerFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	epochs := map[int64]bool{}
	for _, o := range owners {
		got[o.ID] = fmt.Sprintf("%s %s %d", o.Kind, o.State, o.ExpiresAt.UnixNano())
		epochs[o.Epoch] = true
	}
	want := map[string]string{"run-a": "run live 100", "srv-b": "node live 200", "srv-c": "node released 0"}
	if !maps.Equal(got, want) || len(epochs) != 3 {
		t.Errorf("owners after upgrade: %v (epochs %v), want %v", got, epochs, want)
	}
	// bs1's owner was released: the buildset is any server's to claim.
	for id, want := range map[string][2]string{"bs1": {"", ""}, "bs2": {"run-a", ""}, "bs3": {"", "srv-b"}} {
		bs, err := s.GetBuildset(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if bs.PinnedTo != want[0] || bs.Owner != want[1] {
			t.Errorf("%s after upgrade: pinned to %q, owner %q; want %q, %q", id, bs.PinnedTo, bs.Owner, want[0], want[1])
		}
	}
	// An epoch given after the upgrade is above those carried over.
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "o-new", Kind: store.OwnerNode, Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for e := range epochs {
		if f.Epoch <= e {
			t.Errorf("new epoch %d, not above %d", f.Epoch, e)
		}
	}
}

// TestJobDurationsByIndex: JobDurations reads a job's latest successful
// attempts from the partial index attempts_succeeded (migration 0012), in
// its order, without sorting them: the index that every attempt's start
// and end wrote to is gone, and nothing else reads attempts by job.
func TestJobDurationsByIndex(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.r.QueryContext(ctx, `EXPLAIN QUERY PLAN `+jobDurationsSQL, `["base"]`, durationHistory)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notUsed int
		var detail string
		if err := rows.Scan(&id, &parent, &notUsed, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, step := range plan {
		found = found || strings.Contains(step, "INDEX attempts_succeeded (job=?")
		if strings.Contains(step, "TEMP B-TREE") && strings.Contains(step, "ORDER BY") {
			t.Errorf("JobDurations sorts: %q", step)
		}
	}
	if !found {
		t.Errorf("JobDurations' plan: %q; want a search by attempts_succeeded for each job, no sort", plan)
	}
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'attempts_job_result_finished'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("attempts_job_result_finished is still there: every attempt's start and end still writes it")
	}
}

// TestUpgradeMovesPlansAndSpecs: migration 0013 moves every buildset's
// plan and spec out of its row into buildset_specs, as they were, and
// leaves a buildset that had neither without a row there; the buildsets
// read after the upgrade are those read before it, and one made after it
// reads back as made.
func TestUpgradeMovesPlansAndSpecs(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	big := `{"jobs":"` + strings.Repeat("x", 50_000) + `"}` // on overflow pages
	s := upgraded(t, 12,
		`INSERT INTO buildsets (id, pipeline, commit_sha, state, plan, spec, created_at) VALUES
			('both', 'deploy', 'c', 'RUNNING', CAST('`+big+`' AS BLOB), CAST('{"max_parallel":2}' AS BLOB), 1),
			('config-error', 'deploy', 'c', 'DONE', CAST('null' AS BLOB), NULL, 2),
			('neither', 'deploy', 'c', 'DONE', NULL, NULL, 3)`,
	)
	for id, want := range map[string][2]string{
		"both":         {big, `{"max_parallel":2}`},
		"config-error": {"null", ""},
		"neither":      {"", ""},
	} {
		bs, err := s.GetBuildset(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if string(bs.Plan) != want[0] || string(bs.Spec) != want[1] || (want[0] == "") != (bs.Plan == nil) {
			t.Errorf("%s after the upgrade: plan %.40q (nil %v), spec %q; want %.40q, %q", id, bs.Plan, bs.Plan == nil, bs.Spec, want[0], want[1])
		}
	}
	var rows int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM buildset_specs`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 2 {
		t.Errorf("buildset_specs has %d rows, want 2 (none for a buildset with neither)", rows)
	}
	if _, err := s.r.ExecContext(ctx, `SELECT plan FROM buildsets`); err == nil {
		t.Error("buildsets still has its plan column")
	}
	bs := &store.Buildset{ID: "after", Pipeline: "deploy", Commit: "c", CreatedAt: time.Unix(4, 0), Plan: []byte(`{"jobs":[]}`), Spec: []byte(`{}`)}
	if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs, Skipped: "nothing selected"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBuildset(ctx, "after")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Plan) != `{"jobs":[]}` || string(got.Spec) != `{}` || got.Seq != 4 {
		t.Errorf("made after the upgrade: seq %d, plan %q, spec %q", got.Seq, got.Plan, got.Spec)
	}
	var check string
	if err := s.w.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil {
		t.Fatal(err)
	}
	if check != "ok" {
		t.Errorf("integrity_check: %s", check)
	}
}

// TestUpgradeLeavesModeInSpec: a buildset made before migration 0014 has
// no mode of its own; the lists, which leave specs out, give its spec for
// its mode to be read there.
func TestUpgradeLeavesModeInSpec(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := upgraded(t, 13,
		`INSERT INTO buildsets (id, pipeline, commit_sha, state, created_at) VALUES ('old', 'deploy', 'c', 'QUEUED', 1)`,
		`INSERT INTO buildset_specs (seq, plan, spec) VALUES (1, CAST('{"jobs":[]}' AS BLOB), CAST('{"check":true}' AS BLOB))`,
	)
	list, err := s.ListBuildsets(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.ChangedBuildsets(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for what, got := range map[string][]*store.Buildset{"ListBuildsets": list, "ChangedBuildsets": ch.Buildsets} {
		if len(got) != 1 || got[0].Mode != nil || string(got[0].Spec) != `{"check":true}` || got[0].Plan != nil {
			t.Errorf("%s after the upgrade: %+v, want old with its spec, no mode and no plan", what, got)
		}
	}
}

// TestChecksCompared: from migration 0015 on, a write of a build's, a
// buildset's, an owner's, a delivery's or a host result's state builds no
// temporary index for its CHECK constraint, as an IN list of three values
// or more did on every write; on a new database, on the connection that
// migrated, and on one opened before the upgrade. Each constraint still
// refuses a value out of its list, and the rows are kept.
func TestChecksCompared(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	writes := map[string]string{
		"builds start":      startBuild,
		"builds end":        finishBuildSQL,
		"buildsets":         `UPDATE buildsets SET state = 'DONE' WHERE id = 'b'`,
		"owners":            `UPDATE owners SET state = 'ended' WHERE id = 'o'`,
		"report_deliveries": `UPDATE report_deliveries SET state = 'failed' WHERE id = 'd'`,
		"host_results":      `INSERT INTO host_results (buildset_id, job, seq, task, host, status) VALUES ('b', 'j', 2, 1, 'h', 'ok')`,
	}
	// ephemeral is the writes whose program opens a temporary index.
	ephemeral := func(q interface {
		QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	}) []string {
		var found []string
		for what, w := range writes {
			rows, err := q.QueryContext(ctx, `EXPLAIN `+w, make([]any, strings.Count(w, "?"))...)
			if err != nil {
				t.Fatalf("EXPLAIN %s: %v", what, err)
			}
			for rows.Next() {
				var addr, p1, p2, p3, p5 int
				var op string
				var p4, comment sql.NullString
				if err := rows.Scan(&addr, &op, &p1, &p2, &p3, &p4, &p5, &comment); err != nil {
					t.Fatal(err)
				}
				if op == "OpenEphemeral" {
					found = append(found, what)
				}
			}
			if err := rows.Close(); err != nil {
				t.Fatal(err)
			}
		}
		slices.Sort(found)
		return found
	}

	fresh, err := Open(ctx, filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if got := ephemeral(fresh.w); got != nil {
		t.Errorf("a new database: %v build a temporary index", got)
	}

	path := databaseAt(t, 14,
		`INSERT INTO buildsets (id, pipeline, commit_sha, state, created_at) VALUES ('b', 'deploy', 'c', 'RUNNING', 1)`,
		`INSERT INTO builds (buildset_id, job, seq, state) VALUES ('b', 'j', 0, 'RUNNING')`,
		`INSERT INTO owners (id, kind, epoch, started_at, renewed_at, expires_at) VALUES ('o', 'run', 1, 1, 1, 1)`,
		`INSERT INTO report_deliveries (id, buildset_id, reporter, event, target, state, created_at, next_at) VALUES ('d', 'b', 'r', 'end', X'7B7D', 'pending', 1, 1)`,
		`INSERT INTO host_builds (buildset_id, job, attempt) VALUES ('b', 'j', 1)`,
		`INSERT INTO host_results (buildset_id, job, seq, task, host, status) VALUES ('b', 'j', 1, 1, 'h', 'changed')`,
	)
	before, err := openDB(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	before.SetMaxOpenConns(1)
	if got := ephemeral(before); len(got) != len(writes) {
		t.Fatalf("at version 14, %v build a temporary index; want all %d writes", got, len(writes))
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := ephemeral(s.w); got != nil {
		t.Errorf("after the upgrade, on the connection that migrated: %v build a temporary index", got)
	}
	// A statement run checks the schema's version (an EXPLAIN does not),
	// and reads the schema again if it moved, as any write would.
	var n int
	if err := before.QueryRowContext(ctx, `SELECT COUNT(*) FROM builds`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if got := ephemeral(before); got != nil {
		t.Errorf("after the upgrade, on a connection opened before it: %v build a temporary index", got)
	}

	for _, bad := range []string{
		`UPDATE builds SET state = 'QUEUED'`,
		`UPDATE buildsets SET state = 'WAITING'`,
		`UPDATE owners SET state = 'run'`,
		`UPDATE report_deliveries SET state = 'sent'`,
		`UPDATE host_results SET status = 'pending'`,
	} {
		if _, err := s.w.ExecContext(ctx, bad); err == nil || !strings.Contains(err.Error(), "CHECK constraint failed") {
			t.Errorf("%s: %v, want a CHECK constraint failure", bad, err)
		}
	}
	var got string
	if err := s.w.QueryRowContext(ctx, `SELECT b.state || ' ' || bs.state || ' ' || o.state || ' ' || d.state || ' ' || h.status
		FROM builds b, buildsets bs, owners o, report_deliveries d, host_results h`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "RUNNING RUNNING live pending changed" {
		t.Errorf("rows after the upgrade: %q", got)
	}
	var check string
	if err := s.w.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil {
		t.Fatal(err)
	}
	if check != "ok" {
		t.Errorf("integrity_check: %s", check)
	}
}

var updateSchema = flag.Bool("update", false, "write schema.sql again from the migrations (TestSchemaSnapshot)")

// TestSchemaSnapshot: a new database, made from schema.sql at once, is the
// database the migrations make in turn: the same tables, indexes and
// triggers, written the same, and the same rows; and it was made at once,
// not by the migrations (its schema changed fewer times). After adding a
// migration, write schema.sql again with
//
//	go test ./internal/store/sqlite -run TestSchemaSnapshot -update
func TestSchemaSnapshot(t *testing.T) {
	ctx := t.Context()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	replayed, err := openDB(databaseAt(t, len(ms)), false)
	if err != nil {
		t.Fatal(err)
	}
	defer replayed.Close()
	replayed.SetMaxOpenConns(1)
	if *updateSchema {
		if err := os.WriteFile("schema.sql", []byte(schemaText(t, replayed, ms[len(ms)-1])), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Skip("schema.sql written; run the test again without -update")
	}
	if v := schemaVersion(); v != len(ms) {
		t.Fatalf("schema.sql holds migration %d, the last is %d: write it again with -update", v, len(ms))
	}
	s, err := Open(ctx, filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, want := dumpDatabase(t, s.w), dumpDatabase(t, replayed); !slices.Equal(got, want) {
		t.Errorf("a new database is not the migrations' (run -update after adding a migration):\n%s", firstDifference(got, want))
	}
	var made, migrated int
	if err := s.w.QueryRowContext(ctx, `PRAGMA schema_version`).Scan(&made); err != nil {
		t.Fatal(err)
	}
	if err := replayed.QueryRowContext(ctx, `PRAGMA schema_version`).Scan(&migrated); err != nil {
		t.Fatal(err)
	}
	if made >= migrated {
		t.Errorf("a new database's schema changed %d times, the migrations' %d: it was not made from schema.sql at once", made, migrated)
	}
}

// TestSchemaOlderThanMigrations: a schema.sql that holds fewer migrations
// than there are is followed by the migrations it lacks. Not parallel: it
// swaps schemaFile.
func TestSchemaOlderThanMigrations(t *testing.T) {
	ctx := t.Context()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	older, err := openDB(databaseAt(t, 13), false)
	if err != nil {
		t.Fatal(err)
	}
	older.SetMaxOpenConns(1)
	text := schemaText(t, older, ms[12])
	older.Close()
	saved := schemaFile
	schemaFile = text
	defer func() { schemaFile = saved }()
	if v := schemaVersion(); v != 13 {
		t.Fatalf("schemaVersion of a schema.sql of migration 13 = %d", v)
	}
	s, err := Open(ctx, filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	replayed, err := openDB(databaseAt(t, len(ms)), false)
	if err != nil {
		t.Fatal(err)
	}
	defer replayed.Close()
	replayed.SetMaxOpenConns(1)
	if got, want := dumpDatabase(t, s.w), dumpDatabase(t, replayed); !slices.Equal(got, want) {
		t.Errorf("a new database from an older schema.sql is not the migrations':\n%s", firstDifference(got, want))
	}
}

// schemaText is schema.sql for the database db, made by the migrations up
// to last: its tables, then its indexes, then its triggers, each as SQLite
// keeps its text, then the rows the migrations inserted.
func schemaText(t *testing.T, db *sql.DB, last store.Migration) string {
	t.Helper()
	ctx := t.Context()
	var b strings.Builder
	fmt.Fprintf(&b, "%s%d (%s), written from the migrations\n", schemaHeader, last.Version, last.Name)
	b.WriteString("-- by `go test ./internal/store/sqlite -run TestSchemaSnapshot -update`\n")
	b.WriteString("-- for a new database, which gets it at once. Not to be edited.\n\n")
	rows, err := db.QueryContext(ctx, `SELECT sql FROM sqlite_schema
		WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite\_%' ESCAPE '\' AND name <> 'schema_migrations'
		ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 ELSE 2 END, rowid`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var q string
		if err := rows.Scan(&q); err != nil {
			t.Fatal(err)
		}
		b.WriteString(q + ";\n\n")
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	rows, err = db.QueryContext(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name <> 'schema_migrations' ORDER BY rowid`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		var cols []string
		crows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?) ORDER BY cid`, table)
		if err != nil {
			t.Fatal(err)
		}
		for crows.Next() {
			var c string
			if err := crows.Scan(&c); err != nil {
				t.Fatal(err)
			}
			cols = append(cols, c)
		}
		crows.Close()
		quoted := make([]string, len(cols))
		for i, c := range cols {
			quoted[i] = "quote(" + c + ")"
		}
		vrows, err := db.QueryContext(ctx, `SELECT `+strings.Join(quoted, " || ', ' || ")+` FROM "`+table+`"`)
		if err != nil {
			t.Fatal(err)
		}
		for vrows.Next() {
			var values string
			if err := vrows.Scan(&values); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES (%s);\n", table, strings.Join(cols, ", "), values)
		}
		if err := vrows.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// dumpDatabase is every object of db's schema with its text, and every
// row of every table, as lines.
func dumpDatabase(t *testing.T, db *sql.DB) []string {
	t.Helper()
	ctx := t.Context()
	var out, tables []string
	rows, err := db.QueryContext(ctx, `SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_schema ORDER BY type, name`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var typ, name, table, text string
		if err := rows.Scan(&typ, &name, &table, &text); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s on %s: %s", typ, name, table, text))
		if typ == "table" {
			tables = append(tables, name)
		}
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	for _, table := range tables {
		rows, err := db.QueryContext(ctx, `SELECT * FROM "`+table+`"`)
		if err != nil {
			t.Fatal(err)
		}
		for _, vals := range scanAll(t, rows) {
			out = append(out, fmt.Sprintf("row of %s: %v", table, vals))
		}
	}
	return out
}

// scanAll reads every row of rows, each as its columns' values, and
// closes rows.
func scanAll(t *testing.T, rows *sql.Rows) [][]any {
	t.Helper()
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		out = append(out, vals)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	return out
}

// firstDifference says where two dumps part.
func firstDifference(got, want []string) string {
	for i := range max(len(got), len(want)) {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("line %d:\n  new database: %.300s\n  migrations:   %.300s", i, g, w)
		}
	}
	return "(none)"
}
