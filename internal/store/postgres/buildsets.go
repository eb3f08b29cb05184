package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sortie-ci/sortie/internal/store"
)

const defaultLimit = 50

// CreateBuildset inserts a QUEUED buildset and a WAITING build for each job,
// in the order given, and sets its Seq. Of p.Buildset it keeps ID,
// Pipeline, Commit, Files, Plan, Spec, Cause, RerunOf, PinnedTo and CreatedAt
// (which must be set); state, result and the other times start empty. With
// p.ConfigError (p.Skipped) set it inserts the buildset DONE with
// CONFIG_ERROR (SKIPPED) and its FinishedAt instead, in the same
// statement, so that no reader sees it QUEUED. An existing ID is an ErrConflict.
//
// Buildsets are made one at a time (an advisory lock held to the commit),
// so that they become visible in Seq order: a reader that sees one sees
// every buildset of a smaller Seq, as with SQLite's single writer.
func (s *Store) CreateBuildset(ctx context.Context, p store.CreateBuildsetParams) error {
	bs := p.Buildset
	if bs == nil || bs.ID == "" {
		return errors.New("postgres: create buildset: no id")
	}
	if bs.CreatedAt.IsZero() {
		return fmt.Errorf("postgres: create buildset %s: %w", bs.ID, errZeroTime("CreatedAt"))
	}
	state, result, finished := store.BuildsetQueued, store.Result(""), any(nil)
	why := p.ConfigError
	switch {
	case p.ConfigError != "" && p.Skipped != "":
		return fmt.Errorf("postgres: create buildset %s: both a config error and skipped", bs.ID)
	case p.ConfigError != "":
		if len(p.Jobs) > 0 {
			return fmt.Errorf("postgres: create buildset %s: a config error with %d jobs: a graph that could not be made has no builds", bs.ID, len(p.Jobs))
		}
		state, result = store.BuildsetDone, store.ConfigError
	case p.Skipped != "":
		if len(p.Jobs) > 0 {
			return fmt.Errorf("postgres: create buildset %s: skipped with %d jobs: a buildset that selects no job has no builds", bs.ID, len(p.Jobs))
		}
		state, result, why = store.BuildsetDone, store.Skipped, p.Skipped
	}
	if state == store.BuildsetDone && bs.FinishedAt != nil {
		finished = nullTime(*bs.FinishedAt)
	}
	var spec, mode []byte // nil and empty are both NULL
	if len(bs.Spec) > 0 {
		spec = bs.Spec
	}
	if len(bs.Mode) > 0 {
		mode = bs.Mode
	}
	var seq int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockCreate); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `
			INSERT INTO buildsets (id, pipeline, commit_sha, files, state, result, error, plan, spec, mode, cause, rerun_of, pinned_to, created_at, finished_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
			ON CONFLICT (id) DO NOTHING
			RETURNING seq`,
			bs.ID, bs.Pipeline, bs.Commit, bs.Files, state, result, why, bs.Plan, spec, mode, bs.Cause, bs.RerunOf, bs.PinnedTo,
			bs.CreatedAt, finished).Scan(&seq)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("already exists: %w", store.ErrConflict)
		}
		if err != nil {
			return err
		}
		if err := claimTriggers(ctx, tx, bs, p); err != nil {
			return err
		}
		if err := insertReports(ctx, tx, bs.ID, p.Reports); err != nil {
			return err
		}
		if len(p.Jobs) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO builds (buildset_id, job, seq, state)
			SELECT $1, j.job, j.n - 1, $3 FROM unnest($2::text[]) WITH ORDINALITY AS j (job, n)`,
			bs.ID, p.Jobs, store.BuildWaiting)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create buildset %s: %w", bs.ID, err)
	}
	bs.Seq, bs.Owner = seq, ""
	return nil
}

const buildsetColumns = `seq, id, pipeline, commit_sha, files, state, result, error, plan, spec, mode, cause, rerun_of, owner, pinned_to, created_at, started_at, finished_at`

func scanBuildset(row pgx.Row) (*store.Buildset, error) {
	var (
		bs                store.Buildset
		created           time.Time
		started, finished *time.Time
		state, result     string
	)
	err := row.Scan(&bs.Seq, &bs.ID, &bs.Pipeline, &bs.Commit, &bs.Files, &state, &result, &bs.Error,
		&bs.Plan, &bs.Spec, &bs.Mode, &bs.Cause, &bs.RerunOf, &bs.Owner, &bs.PinnedTo, &created, &started, &finished)
	if err != nil {
		return nil, err
	}
	if len(bs.Spec) == 0 {
		bs.Spec = nil
	}
	if len(bs.Mode) == 0 {
		bs.Mode = nil
	}
	bs.State = store.BuildsetState(state)
	bs.Result = store.Result(result)
	bs.CreatedAt = created.UTC()
	bs.StartedAt = utc(started)
	bs.FinishedAt = utc(finished)
	return &bs, nil
}

// GetBuildset returns the buildset with the given id, or ErrNotFound.
func (s *Store) GetBuildset(ctx context.Context, id string) (*store.Buildset, error) {
	return s.getBuildset(ctx, buildsetColumns, id)
}

// GetBuildsetLight returns the buildset with the given id as the lists
// give it (lightColumns), or ErrNotFound.
func (s *Store) GetBuildsetLight(ctx context.Context, id string) (*store.Buildset, error) {
	return s.getBuildset(ctx, lightColumns, id)
}

func (s *Store) getBuildset(ctx context.Context, columns, id string) (*store.Buildset, error) {
	bs, err := scanBuildset(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM buildsets WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: get buildset %s: %w", id, mapErr(ctx, err))
	}
	return bs, nil
}

// queryBuildsets runs a query of buildsetColumns.
func (s *Store) queryBuildsets(ctx context.Context, sql string, args ...any) ([]*store.Buildset, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, mapErr(ctx, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Buildset, error) { return scanBuildset(row) })
	return out, mapErr(ctx, err)
}

// ListBuildsets returns the buildsets matching f, newest first (by
// CreatedAt, then Seq). A Before naming no buildset is an ErrNotFound.
func (s *Store) ListBuildsets(ctx context.Context, f store.Filter) ([]*store.Buildset, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.Pipeline != "" {
		where = append(where, "pipeline = "+arg(f.Pipeline))
	}
	if f.Commit != "" {
		where = append(where, "commit_sha = "+arg(f.Commit))
	}
	if f.Result != "" {
		where = append(where, "result = "+arg(string(f.Result)))
	}
	if f.State != "" {
		where = append(where, "state = "+arg(string(f.State)))
	}
	if f.Before != "" {
		var (
			created time.Time
			seq     int64
		)
		err := s.pool.QueryRow(ctx, `SELECT created_at, seq FROM buildsets WHERE id = $1`, f.Before).Scan(&created, &seq)
		if errors.Is(err, pgx.ErrNoRows) {
			err = fmt.Errorf("before %s: %w", f.Before, store.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("postgres: list buildsets: %w", mapErr(ctx, err))
		}
		where = append(where, fmt.Sprintf("(created_at, seq) < (%s, %s)", arg(created), arg(seq)))
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	q := `SELECT ` + lightColumns + ` FROM buildsets`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, seq DESC LIMIT ` + arg(limit)
	out, err := s.queryBuildsets(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list buildsets: %w", err)
	}
	return out, nil
}

// ActiveBuildsets returns every buildset not DONE (QUEUED, ADMITTED,
// RUNNING), oldest first (by Seq).
func (s *Store) ActiveBuildsets(ctx context.Context) ([]*store.Buildset, error) {
	out, err := s.queryBuildsets(ctx, `SELECT `+buildsetColumns+` FROM buildsets WHERE state = ANY($1) ORDER BY seq`,
		activeStates)
	if err != nil {
		return nil, fmt.Errorf("postgres: active buildsets: %w", err)
	}
	return out, nil
}

// lightColumns are buildsetColumns without the plan, and without the
// spec unless the mode is not kept apart (a buildset made before
// migration 0011), for the reads that list buildsets: a reader of
// changes, a page of history. A TOASTed spec the CASE does not pick is
// not read.
const lightColumns = `seq, id, pipeline, commit_sha, files, state, result, error, NULL::bytea, CASE WHEN mode IS NULL THEN spec END, mode, cause, rerun_of, owner, pinned_to, created_at, started_at, finished_at`

// ChangedBuildsets reads the buildsets changed after since, or every one
// not DONE for a zero since; see store.Buildsets. The cursor is the
// oldest transaction still running when the read begins (the xmin of a
// snapshot taken first, in a statement of its own): every change this
// read may miss is made by it or a later transaction, and the next read
// takes every buildset whose changed_xid is at or above it. What those
// transactions changed that this read saw already is read again.
func (s *Store) ChangedBuildsets(ctx context.Context, since store.BuildsetCursor) (*store.BuildsetChanges, error) {
	var xmin int64
	if err := s.pool.QueryRow(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&xmin); err != nil {
		return nil, fmt.Errorf("postgres: changed buildsets: %w", mapErr(ctx, err))
	}
	q, args := `SELECT `+lightColumns+` FROM buildsets WHERE changed_xid >= $1::bigint::text::xid8 ORDER BY seq`, []any{int64(since)}
	if since == 0 {
		q, args = `SELECT `+lightColumns+` FROM buildsets WHERE state = ANY($1) ORDER BY seq`, []any{activeStates}
	}
	bss, err := s.queryBuildsets(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: changed buildsets: %w", err)
	}
	return &store.BuildsetChanges{Buildsets: bss, Cursor: store.BuildsetCursor(xmin)}, nil
}

// activeStates are the states of a buildset not DONE.
var activeStates = []store.BuildsetState{store.BuildsetQueued, store.BuildsetAdmitted, store.BuildsetRunning}

// AdmitBuildset moves QUEUED -> ADMITTED with no owner, for any server to
// claim, and tells the servers (store.TopicClaims); or it returns
// ErrConflict (also for a buildset pinned to a run; ErrNotFound for an
// unknown id), or ErrFenced. StartedAt stays nil until StartBuildset.
func (s *Store) AdmitBuildset(ctx context.Context, id string, f store.Fence, at time.Time) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx, f); err != nil {
			return err
		}
		if err := txCAS(ctx, tx,
			`UPDATE buildsets SET state = $1, owner = '', admitted_at = $2 WHERE id = $3 AND state = $4 AND pinned_to = ''`,
			[]any{store.BuildsetAdmitted, nullTime(at), id, store.BuildsetQueued},
			`SELECT state || CASE WHEN pinned_to <> '' THEN ', pinned to ' || pinned_to ELSE '' END FROM buildsets WHERE id = $1`, id); err != nil {
			return err
		}
		return Notify(ctx, tx, store.TopicClaims, "")
	})
	if err != nil {
		return fmt.Errorf("postgres: admit buildset %s: %w", id, err)
	}
	return nil
}

// ClaimBuildsets gives p.Fence's owner up to p.Max buildsets with no
// owner, running ones first (one at least, if any), with their semaphore
// holders and waiters; see store.Buildsets. The rows are locked FOR
// UPDATE SKIP LOCKED: a buildset another server is claiming is left to
// it, not waited for.
func (s *Store) ClaimBuildsets(ctx context.Context, p store.ClaimParams) ([]*store.Buildset, error) {
	var out []*store.Buildset
	err := s.tx(ctx, func(tx pgx.Tx) error {
		out = nil
		if err := checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			WITH running AS (
				SELECT id, seq FROM buildsets WHERE state = $1 AND owner = '' AND pinned_to = ''
				ORDER BY seq LIMIT GREATEST($3, 1) FOR UPDATE SKIP LOCKED),
			admitted AS (
				SELECT id, seq FROM buildsets WHERE state = $2 AND owner = '' AND pinned_to = ''
				ORDER BY seq LIMIT GREATEST($3 - (SELECT count(*) FROM running), 0) FOR UPDATE SKIP LOCKED),
			claimed AS (
				UPDATE buildsets b SET owner = $4
				WHERE b.id IN (SELECT id FROM running UNION ALL SELECT id FROM admitted)
				RETURNING b.*)
			SELECT `+buildsetColumns+` FROM claimed ORDER BY state = $1 DESC, seq`,
			store.BuildsetRunning, store.BuildsetAdmitted, max(p.Max, 0), p.Fence.Owner)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Buildset, error) { return scanBuildset(row) })
		if err != nil || len(out) == 0 {
			return err
		}
		ids := make([]string, len(out))
		for i, bs := range out {
			ids[i] = bs.ID
		}
		_, err = tx.Exec(ctx, `
			WITH h AS (UPDATE semaphore_holders SET owner = $1 WHERE buildset = ANY($2))
			UPDATE semaphore_waiters SET owner = $1 WHERE buildset = ANY($2)`, p.Fence.Owner, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: claim buildsets: %w", err)
	}
	return out, nil
}

// StartBuildset moves QUEUED or ADMITTED -> RUNNING with p.Fence's owner
// as its owner and records p.Reports, in one transaction, or returns
// ErrConflict (also for a buildset pinned to another owner; ErrNotFound
// for an unknown id), or ErrFenced.
func (s *Store) StartBuildset(ctx context.Context, p store.StartBuildsetParams) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		if err := txCAS(ctx, tx,
			`UPDATE buildsets SET state = $1, owner = $2, started_at = $3
			WHERE id = $4 AND state IN ($5, $6) AND pinned_to IN ('', $2)`,
			[]any{store.BuildsetRunning, p.Fence.Owner, nullTime(p.At), p.ID, store.BuildsetQueued, store.BuildsetAdmitted},
			`SELECT state || CASE WHEN pinned_to <> '' THEN ', pinned to ' || pinned_to ELSE '' END FROM buildsets WHERE id = $1`, p.ID); err != nil {
			return err
		}
		return insertReports(ctx, tx, p.ID, p.Reports)
	})
	if err != nil {
		return fmt.Errorf("postgres: start buildset %s: %w", p.ID, err)
	}
	return nil
}

// cas runs update, an UPDATE of one row guarded by its state, and when it
// changes no row tells why with check, a SELECT of that row's state:
// ErrNotFound when there is no such row, else ErrConflict. Rows are never
// deleted, so the answer cannot go stale between the two.
func (s *Store) cas(ctx context.Context, update string, args []any, check string, checkArgs ...any) error {
	return s.tx(ctx, func(tx pgx.Tx) error { return txCAS(ctx, tx, update, args, check, checkArgs...) })
}

// txCAS is cas inside tx.
func txCAS(ctx context.Context, tx pgx.Tx, update string, args []any, check string, checkArgs ...any) error {
	tag, err := tx.Exec(ctx, update, args...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var state string
	err = tx.QueryRow(ctx, check, checkArgs...).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("is %s: %w", state, store.ErrConflict)
}

// RequestCancel records a cancel asked of the owner of a buildset not
// DONE, and tells the servers (store.TopicCancels); see store.Buildsets.
func (s *Store) RequestCancel(ctx context.Context, id, by string) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := txCAS(ctx, tx, `UPDATE buildsets SET cancel_by = $1 WHERE id = $2 AND state <> $3`,
			[]any{by, id, store.BuildsetDone}, `SELECT state FROM buildsets WHERE id = $1`, id); err != nil {
			return err
		}
		return Notify(ctx, tx, store.TopicCancels, "")
	})
	if err != nil {
		return fmt.Errorf("postgres: request the cancel of buildset %s: %w", id, err)
	}
	return nil
}

// CancelRequests returns the cancels asked of owner; see store.Buildsets.
func (s *Store) CancelRequests(ctx context.Context, owner string) ([]store.CancelRequest, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, cancel_by FROM buildsets
		WHERE owner = $1 AND cancel_by <> '' AND state <> $2 ORDER BY seq`, owner, store.BuildsetDone)
	if err == nil {
		var out []store.CancelRequest
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.CancelRequest, error) {
			var r store.CancelRequest
			return r, row.Scan(&r.Buildset, &r.By)
		})
		if err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("postgres: cancel requests of %s: %w", owner, mapErr(ctx, err))
}

// EndBuildset ends a buildset not DONE in one transaction: its unfinished
// builds, its running attempts, the buildset, and its semaphore holders
// and waiters; see store.Buildsets. It reports false, changing nothing,
// for a buildset DONE already, and ErrNotFound for an unknown id. The
// buildset's row is locked first: of concurrent ends, one ends it and the
// others, once it committed, find it DONE.
func (s *Store) EndBuildset(ctx context.Context, p store.EndBuildsetParams) (bool, error) {
	if p.Result == "" || p.BuildResult == "" {
		return false, fmt.Errorf("postgres: end buildset %s: empty result", p.ID)
	}
	started := cmp.Or(p.StartedResult, p.BuildResult)
	attempt := cmp.Or(p.AttemptResult, p.BuildResult)
	at := nullTime(p.At)
	var ended bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		ended = false
		if p.Fence != nil {
			if err := checkFence(ctx, tx, *p.Fence); err != nil {
				return err
			}
		}
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM buildsets WHERE id = $1 FOR UPDATE`, p.ID).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if store.BuildsetState(state) == store.BuildsetDone {
			return nil
		}
		steps := []struct {
			q    string
			args []any
		}{
			// A build that never started keeps null times (SPEC §2.4, §3).
			{`UPDATE builds SET state = $1, result = CASE WHEN state = $2 THEN $3::text ELSE $4::text END, reason = $5,
				finished_at = CASE WHEN started_at IS NULL THEN NULL ELSE $6::timestamptz END
				WHERE buildset_id = $7 AND state IN ($8, $9)`,
				[]any{store.BuildDone, store.BuildRunning, started, p.BuildResult, p.Reason, at, p.ID, store.BuildWaiting, store.BuildRunning}},
			{`UPDATE attempts SET result = $1, error = $2, finished_at = $3 WHERE buildset_id = $4 AND result = ''`,
				[]any{attempt, p.Reason, at, p.ID}},
			{`UPDATE buildsets SET state = $1, result = $2, error = $3, finished_at = $4 WHERE id = $5`,
				[]any{store.BuildsetDone, p.Result, p.Error, at, p.ID}},
			{`WITH h AS (DELETE FROM semaphore_holders WHERE buildset = $1)
				DELETE FROM semaphore_waiters WHERE buildset = $1`, []any{p.ID}},
		}
		for _, st := range steps {
			if _, err := tx.Exec(ctx, st.q, st.args...); err != nil {
				return err
			}
		}
		if err := insertReports(ctx, tx, p.ID, p.Reports); err != nil {
			return err
		}
		ended = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("postgres: end buildset %s: %w", p.ID, err)
	}
	return ended, nil
}

// Builds returns the builds of a buildset in creation order, or ErrNotFound
// for an unknown buildset.
func (s *Store) Builds(ctx context.Context, buildsetID string) ([]*store.Build, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+buildColumns+` FROM builds WHERE buildset_id = $1 ORDER BY seq`, buildsetID)
	if err != nil {
		return nil, fmt.Errorf("postgres: builds of %s: %w", buildsetID, mapErr(ctx, err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Build, error) { return scanBuild(row) })
	if err == nil && len(out) == 0 {
		err = s.buildsetExists(ctx, buildsetID)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: builds of %s: %w", buildsetID, mapErr(ctx, err))
	}
	return out, nil
}

// Build returns the build of job in a buildset, or ErrNotFound.
func (s *Store) Build(ctx context.Context, buildsetID, job string) (*store.Build, error) {
	b, err := scanBuild(s.pool.QueryRow(ctx, `SELECT `+buildColumns+` FROM builds WHERE buildset_id = $1 AND job = $2`, buildsetID, job))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: build %s/%s: %w", buildsetID, job, mapErr(ctx, err))
	}
	return b, nil
}

const buildColumns = `buildset_id, job, state, result, attempt, started_at, finished_at, log, reason`

func scanBuild(row pgx.Row) (*store.Build, error) {
	var (
		b                 store.Build
		state, result     string
		started, finished *time.Time
	)
	if err := row.Scan(&b.BuildsetID, &b.Job, &state, &result, &b.Attempt, &started, &finished, &b.Log, &b.Reason); err != nil {
		return nil, err
	}
	b.State = store.BuildState(state)
	b.Result = store.Result(result)
	b.StartedAt = utc(started)
	b.FinishedAt = utc(finished)
	return &b, nil
}

// buildsetExists returns ErrNotFound for an unknown buildset.
func (s *Store) buildsetExists(ctx context.Context, id string) error {
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM buildsets WHERE id = $1)`, id).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		return store.ErrNotFound
	}
	return nil
}

// StartAttempt moves the build WAITING or RUNNING (a retry) -> RUNNING, sets
// its Attempt and Log (and its StartedAt, the first time), and inserts the
// attempt row. a.Number must be above the build's current attempt, else
// ErrConflict: the build's row is locked first, so two processes cannot
// both start attempt 2. A DONE build is an ErrConflict, an unknown one
// ErrNotFound.
func (s *Store) StartAttempt(ctx context.Context, p store.StartAttemptParams) error {
	if err := (store.BuildWrite{Start: &p}).Check(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	a := p.Attempt
	// One statement, so one round trip: the fence, the build and the
	// attempt are read and written together, and what was read says why
	// nothing was written. The fence's FOR SHARE orders it with a fencing,
	// the build's FOR UPDATE with another writer of the build.
	var r startResult
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, startAttemptSQL, startAttemptArgs(p)...).Scan(r.dest()...)
	})
	if err == nil {
		err = r.err(p)
	}
	s.CountFenced(err)
	if err != nil {
		return fmt.Errorf("postgres: start attempt %s/%s #%d: %w", a.BuildsetID, a.Job, a.Number, err)
	}
	return nil
}

// startAttemptSQL is StartAttempt's statement (startAttemptArgs), read
// into a startResult.
const startAttemptSQL = `
	WITH f AS (SELECT 1 FROM owners WHERE id = $1 AND epoch = $2 AND state = $3 FOR SHARE),
	b AS (SELECT state, attempt FROM builds WHERE buildset_id = $4 AND job = $5 FOR UPDATE),
	u AS (
		UPDATE builds SET state = $6, attempt = $7, log = $8, started_at = COALESCE(started_at, $9)
		WHERE buildset_id = $4 AND job = $5 AND state <> $10 AND attempt < $7 AND EXISTS (SELECT 1 FROM f)
		RETURNING 1),
	i AS (
		INSERT INTO attempts (buildset_id, job, number, owner, started_at, log)
		SELECT $4, $5, $7, $1, $9, $8 WHERE EXISTS (SELECT 1 FROM u)
		RETURNING 1)
	SELECT EXISTS (SELECT 1 FROM f), (SELECT state FROM b), (SELECT attempt FROM b), EXISTS (SELECT 1 FROM i)`

func startAttemptArgs(p store.StartAttemptParams) []any {
	a := p.Attempt
	return []any{p.Fence.Owner, p.Fence.Epoch, store.OwnerLive, a.BuildsetID, a.Job,
		store.BuildRunning, a.Number, a.Log, a.StartedAt, store.BuildDone}
}

// startResult is what startAttemptSQL read.
type startResult struct {
	live, inserted bool
	state          *string
	attempt        *int
}

func (r *startResult) dest() []any { return []any{&r.live, &r.state, &r.attempt, &r.inserted} }

// err says why nothing was written, or nil.
func (r *startResult) err(p store.StartAttemptParams) error {
	switch {
	case !r.live:
		return fmt.Errorf("owner %q epoch %d: %w", p.Fence.Owner, p.Fence.Epoch, store.ErrFenced)
	case r.state == nil:
		return store.ErrNotFound
	case r.inserted:
		return nil
	case store.BuildState(*r.state) == store.BuildDone:
		return fmt.Errorf("build is %s: %w", *r.state, store.ErrConflict)
	}
	return fmt.Errorf("build is at attempt %d: %w", *r.attempt, store.ErrConflict)
}

// conn runs statements: the pool, or a transaction.
type conn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// FinishAttempt sets the result of a running attempt, or returns
// ErrConflict if it has one already (ErrNotFound if there is no such
// attempt). A zero p.At leaves FinishedAt nil.
func (s *Store) FinishAttempt(ctx context.Context, p store.FinishAttemptParams) error {
	if err := (store.BuildWrite{FinishAttempt: &p}).Check(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		return finishAttempt(ctx, tx, p)
	})
	if err != nil {
		return fmt.Errorf("postgres: finish attempt %s/%s #%d: %w", p.BuildsetID, p.Job, p.Number, err)
	}
	return nil
}

// finishAttempt sets the result of a running attempt through q, and tells
// why when no row changed (ErrNotFound or ErrConflict). One UPDATE, atomic
// on its own: of two finishes, the second finds a result.
func finishAttempt(ctx context.Context, q conn, p store.FinishAttemptParams) error {
	tag, err := q.Exec(ctx, finishAttemptSQL, p.Result, p.Error, nullTime(p.At), p.BuildsetID, p.Job, p.Number)
	if err != nil || tag.RowsAffected() == 1 {
		return err
	}
	return finishAttemptWhy(ctx, q, p)
}

const finishAttemptSQL = `
	UPDATE attempts SET result = $1, error = $2, finished_at = $3
	WHERE buildset_id = $4 AND job = $5 AND number = $6 AND result = ''`

// FinishBuild moves WAITING or RUNNING -> DONE with its result and reason,
// or returns ErrConflict if it is already DONE (ErrNotFound if unknown). A
// zero p.At leaves FinishedAt nil, as a SKIPPED build's times are.
func (s *Store) FinishBuild(ctx context.Context, p store.FinishBuildParams) error {
	if err := (store.BuildWrite{FinishBuild: &p}).Check(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		return txCAS(ctx, tx, finishBuildSQL,
			[]any{store.BuildDone, p.Result, p.Reason, nullTime(p.At), p.BuildsetID, p.Job, store.BuildWaiting, store.BuildRunning},
			`SELECT state FROM builds WHERE buildset_id = $1 AND job = $2`, p.BuildsetID, p.Job)
	})
	if err != nil {
		return fmt.Errorf("postgres: finish build %s/%s: %w", p.BuildsetID, p.Job, err)
	}
	return nil
}

// finishBuildSQL is FinishBuild's update. A build that never started
// keeps null times (SPEC §2.4, §3).
const finishBuildSQL = `
	UPDATE builds SET state = $1, result = $2, reason = $3,
		finished_at = CASE WHEN started_at IS NULL THEN NULL ELSE $4::timestamptz END
	WHERE buildset_id = $5 AND job = $6 AND state IN ($7, $8)`

// FinishAttemptAndBuild finishes an attempt and its build in one
// transaction; see store.Buildsets. a and b must name the same build. The
// build's row is locked first, as StartAttempt and EndBuildset lock it
// before the attempts.
func (s *Store) FinishAttemptAndBuild(ctx context.Context, a store.FinishAttemptParams, b store.FinishBuildParams) error {
	if a.BuildsetID != b.BuildsetID || a.Job != b.Job {
		return fmt.Errorf("postgres: finish attempt %s/%s #%d and build %s/%s: not the same build", a.BuildsetID, a.Job, a.Number, b.BuildsetID, b.Job)
	}
	if a.Result == "" || b.Result == "" {
		return fmt.Errorf("postgres: finish attempt and build %s/%s #%d: empty result", a.BuildsetID, a.Job, a.Number)
	}
	if a.Fence == b.Fence {
		return s.finishAttemptAndBuild(ctx, a, b)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx, a.Fence); err != nil {
			return err
		}
		if b.Fence != a.Fence {
			if err := checkFence(ctx, tx, b.Fence); err != nil {
				return err
			}
		}
		var state string
		err := tx.QueryRow(ctx, `SELECT state FROM builds WHERE buildset_id = $1 AND job = $2 FOR UPDATE`,
			b.BuildsetID, b.Job).Scan(&state)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound // no build, so no attempt
		}
		if err != nil {
			return err
		}
		if err := finishAttempt(ctx, tx, a); err != nil {
			return err
		}
		if store.BuildState(state) == store.BuildDone {
			return fmt.Errorf("build is DONE: %w", store.ErrConflict)
		}
		_, err = tx.Exec(ctx, `
			UPDATE builds SET state = $1, result = $2, reason = $3, finished_at = $4
			WHERE buildset_id = $5 AND job = $6`,
			store.BuildDone, b.Result, b.Reason, nullTime(b.At), b.BuildsetID, b.Job)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: finish attempt and build %s/%s #%d: %w", a.BuildsetID, a.Job, a.Number, err)
	}
	return nil
}

// finishAttemptAndBuild is FinishAttemptAndBuild under one fence, in one
// statement, so one round trip (the end of every build's last attempt):
// the fence, the build and the attempt are read and written together, and
// what was read says why nothing was written.
func (s *Store) finishAttemptAndBuild(ctx context.Context, a store.FinishAttemptParams, b store.FinishBuildParams) error {
	var r finishResult
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, finishAttemptAndBuildSQL, finishAttemptAndBuildArgs(a, b)...).Scan(r.dest()...)
	})
	if err == nil {
		err = r.err(a)
	}
	s.CountFenced(err)
	if err != nil {
		return fmt.Errorf("postgres: finish attempt and build %s/%s #%d: %w", a.BuildsetID, a.Job, a.Number, mapErr(ctx, err))
	}
	return nil
}

// finishAttemptAndBuildSQL is finishAttemptAndBuild's statement
// (finishAttemptAndBuildArgs), read into a finishResult.
const finishAttemptAndBuildSQL = `
	WITH f AS (SELECT 1 FROM owners WHERE id = $1 AND epoch = $2 AND state = $3 FOR SHARE),
	b AS (SELECT state FROM builds WHERE buildset_id = $4 AND job = $5 FOR UPDATE),
	a AS (SELECT result FROM attempts WHERE buildset_id = $4 AND job = $5 AND number = $6),
	ua AS (
		UPDATE attempts SET result = $7, error = $8, finished_at = $9
		WHERE buildset_id = $4 AND job = $5 AND number = $6 AND result = ''
			AND EXISTS (SELECT 1 FROM f) AND EXISTS (SELECT 1 FROM b WHERE state <> $10)
		RETURNING 1),
	ub AS (
		UPDATE builds SET state = $10, result = $11, reason = $12, finished_at = $13
		WHERE buildset_id = $4 AND job = $5 AND EXISTS (SELECT 1 FROM ua)
		RETURNING 1)
	SELECT EXISTS (SELECT 1 FROM f), (SELECT state FROM b), (SELECT result FROM a), EXISTS (SELECT 1 FROM ub)`

func finishAttemptAndBuildArgs(a store.FinishAttemptParams, b store.FinishBuildParams) []any {
	return []any{a.Fence.Owner, a.Fence.Epoch, store.OwnerLive, a.BuildsetID, a.Job, a.Number,
		a.Result, a.Error, nullTime(a.At), store.BuildDone, b.Result, b.Reason, nullTime(b.At)}
}

// finishResult is what finishAttemptAndBuildSQL read.
type finishResult struct {
	live, done  bool
	state, prev *string
}

func (r *finishResult) dest() []any { return []any{&r.live, &r.state, &r.prev, &r.done} }

// err says why nothing was written, or nil.
func (r *finishResult) err(a store.FinishAttemptParams) error {
	switch {
	case !r.live:
		return fmt.Errorf("owner %q epoch %d: %w", a.Fence.Owner, a.Fence.Epoch, store.ErrFenced)
	case r.state == nil || r.prev == nil:
		return store.ErrNotFound // no build, or no such attempt of it
	case r.done:
		return nil
	case *r.prev != "":
		return fmt.Errorf("attempt finished %s: %w", *r.prev, store.ErrConflict)
	}
	return fmt.Errorf("build is DONE: %w", store.ErrConflict)
}

const attemptColumns = `buildset_id, job, number, owner, started_at, finished_at, result, log, error`

// queryAttempts runs a query of attemptColumns.
func (s *Store) queryAttempts(ctx context.Context, sql string, args ...any) ([]*store.Attempt, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Attempt, error) {
		var (
			a        store.Attempt
			started  time.Time
			finished *time.Time
			result   string
		)
		if err := row.Scan(&a.BuildsetID, &a.Job, &a.Number, &a.Owner, &started, &finished, &result, &a.Log, &a.Error); err != nil {
			return nil, err
		}
		a.StartedAt = started.UTC()
		a.FinishedAt = utc(finished)
		a.Result = store.Result(result)
		return &a, nil
	})
}

// Attempts returns a build's attempts by number, or ErrNotFound for an
// unknown build.
func (s *Store) Attempts(ctx context.Context, buildsetID, job string) ([]*store.Attempt, error) {
	out, err := s.queryAttempts(ctx, `SELECT `+attemptColumns+`
		FROM attempts WHERE buildset_id = $1 AND job = $2 ORDER BY number`, buildsetID, job)
	if err == nil && len(out) == 0 {
		var exists bool
		err = s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM builds WHERE buildset_id = $1 AND job = $2)`,
			buildsetID, job).Scan(&exists)
		if err == nil && !exists {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: attempts of %s/%s: %w", buildsetID, job, mapErr(ctx, err))
	}
	return out, nil
}

// RunningAttempts returns the attempts of a buildset that have not finished
// (no Result, so no FinishedAt either), by job then number, or ErrNotFound
// for an unknown buildset. An attempt finished with a zero time has a Result
// and is not running.
func (s *Store) RunningAttempts(ctx context.Context, buildsetID string) ([]*store.Attempt, error) {
	out, err := s.queryAttempts(ctx, `SELECT `+attemptColumns+`
		FROM attempts WHERE buildset_id = $1 AND result = '' ORDER BY job COLLATE "C", number`, buildsetID)
	if err == nil && len(out) == 0 {
		err = s.buildsetExists(ctx, buildsetID)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: running attempts of %s: %w", buildsetID, mapErr(ctx, err))
	}
	return out, nil
}

// durationHistory is how many of a job's latest successful attempts
// JobDurations takes the median of.
const durationHistory = 5

// JobDurations returns, for each named job that has history, the median
// duration of its last 5 successful attempts (by finish time), in any
// pipeline. With an even count the median is the mean of the middle two.
func (s *Store) JobDurations(ctx context.Context, jobs []string) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(jobs))
	if len(jobs) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `
		SELECT job, started_at, finished_at FROM (
			SELECT job, started_at, finished_at,
				row_number() OVER (PARTITION BY job ORDER BY finished_at DESC, number DESC) AS n
			FROM attempts
			WHERE job = ANY($1) AND result = $2 AND finished_at IS NOT NULL) latest
		WHERE n <= $3`,
		jobs, store.Success, durationHistory)
	if err != nil {
		return nil, fmt.Errorf("postgres: job durations: %w", mapErr(ctx, err))
	}
	durations := map[string][]time.Duration{}
	var (
		job               string
		started, finished time.Time
	)
	_, err = pgx.ForEachRow(rows, []any{&job, &started, &finished}, func() error {
		durations[job] = append(durations[job], finished.Sub(started))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: job durations: %w", mapErr(ctx, err))
	}
	for job, ds := range durations {
		out[job] = median(ds)
	}
	return out, nil
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	n := len(ds)
	if n%2 == 1 {
		return ds[n/2]
	}
	return (ds[n/2-1] + ds[n/2]) / 2
}
