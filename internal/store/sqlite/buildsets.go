package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

const defaultLimit = 50

// CreateBuildset inserts a QUEUED buildset and a WAITING build for each job,
// in the order given, and sets its Seq. Of p.Buildset it keeps ID,
// Pipeline, Commit, Files, Plan, Spec, Cause, RerunOf, PinnedTo and CreatedAt
// (which must be set); state, result and the other times start empty. With
// p.ConfigError (p.Skipped) set it inserts the buildset DONE with
// CONFIG_ERROR (SKIPPED) and its FinishedAt instead, in the same statement,
// so that no reader sees it QUEUED. An existing ID is an ErrConflict.
func (s *Store) CreateBuildset(ctx context.Context, p store.CreateBuildsetParams) error {
	bs := p.Buildset
	if bs == nil || bs.ID == "" {
		return errors.New("sqlite: create buildset: no id")
	}
	if bs.CreatedAt.IsZero() {
		return fmt.Errorf("sqlite: create buildset %s: %w", bs.ID, errZeroTime("CreatedAt"))
	}
	state, result, finished := store.BuildsetQueued, store.Result(""), sql.NullInt64{}
	why := p.ConfigError
	switch {
	case p.ConfigError != "" && p.Skipped != "":
		return fmt.Errorf("sqlite: create buildset %s: both a config error and skipped", bs.ID)
	case p.ConfigError != "":
		if len(p.Jobs) > 0 {
			return fmt.Errorf("sqlite: create buildset %s: a config error with %d jobs: a graph that could not be made has no builds", bs.ID, len(p.Jobs))
		}
		state, result = store.BuildsetDone, store.ConfigError
	case p.Skipped != "":
		if len(p.Jobs) > 0 {
			return fmt.Errorf("sqlite: create buildset %s: skipped with %d jobs: a buildset that selects no job has no builds", bs.ID, len(p.Jobs))
		}
		state, result, why = store.BuildsetDone, store.Skipped, p.Skipped
	}
	if state == store.BuildsetDone && bs.FinishedAt != nil {
		finished = nullNanos(*bs.FinishedAt)
	}
	var files sql.NullString
	if bs.Files != nil {
		b, err := json.Marshal(bs.Files)
		if err != nil {
			return fmt.Errorf("sqlite: create buildset %s: %w", bs.ID, err)
		}
		files = sql.NullString{String: string(b), Valid: true}
	}
	var plan any // a nil []byte would be stored as an empty blob, not NULL
	if bs.Plan != nil {
		plan = bs.Plan
	}
	var spec, mode any // nil and empty are both NULL
	if len(bs.Spec) > 0 {
		spec = bs.Spec
	}
	if len(bs.Mode) > 0 {
		mode = bs.Mode
	}
	jobs, err := json.Marshal(p.Jobs)
	if err != nil {
		return fmt.Errorf("sqlite: create buildset %s: %w", bs.ID, err)
	}
	var seq int64
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var exists bool
		if err := s.txRow(ctx, tx, `SELECT EXISTS (SELECT 1 FROM buildsets WHERE id = ?)`, bs.ID).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("already exists: %w", store.ErrConflict)
		}
		res, err := s.txExec(ctx, tx, `
			INSERT INTO buildsets (id, pipeline, commit_sha, files, state, result, error, mode, cause, rerun_of, pinned_to, created_at, finished_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			bs.ID, bs.Pipeline, bs.Commit, files, state, result, why, mode, bs.Cause, bs.RerunOf, bs.PinnedTo,
			nanos(bs.CreatedAt), finished)
		if err != nil {
			return err
		}
		// seq is the table's INTEGER PRIMARY KEY, so the rowid.
		if seq, err = res.LastInsertId(); err != nil {
			return err
		}
		if plan != nil || spec != nil {
			if _, err := s.txExec(ctx, tx, `INSERT INTO buildset_specs (seq, plan, spec) VALUES (?, ?, ?)`, seq, plan, spec); err != nil {
				return err
			}
		}
		if err := s.claimTriggers(ctx, tx, bs, p); err != nil {
			return err
		}
		if len(p.Jobs) > 0 {
			// One statement for all the builds: one each cost 10 µs or
			// more a build, over 100 ms before a run of 10,000 jobs
			// started (BenchmarkCreateBuildset10k: 105-245 ms, now 40-50).
			_, err := s.txExec(ctx, tx, `
				INSERT INTO builds (buildset_id, job, seq, state)
				SELECT ?, value, key, ? FROM json_each(?)`,
				bs.ID, store.BuildWaiting, string(jobs))
			if err != nil {
				return fmt.Errorf("builds: %w", err)
			}
		}
		return s.insertReports(ctx, tx, bs.ID, p.Reports)
	})
	if err != nil {
		return fmt.Errorf("sqlite: create buildset %s: %w", bs.ID, err)
	}
	bs.Seq, bs.Owner = seq, ""
	if bs.PinnedTo != "" && state == store.BuildsetQueued {
		// Made to be run by this process (`sortie run`): its builds'
		// states are known, rather than read again at its first write
		// (some 10 ms for 10,000 builds).
		s.j.seed(bs.ID, p.Jobs)
	}
	return nil
}

const buildsetColumns = `seq, id, pipeline, commit_sha, files, state, result, error, plan, spec, mode, cause, rerun_of, owner, pinned_to, created_at, started_at, finished_at`

// withSpecs is what buildsetColumns are read from: the buildsets and,
// apart, their plans and specs (migration 0013), which are never changed.
const withSpecs = `buildsets LEFT JOIN buildset_specs USING (seq)`

type scanner interface{ Scan(dest ...any) error }

func scanBuildset(row scanner) (*store.Buildset, error) {
	var (
		bs                store.Buildset
		files             sql.NullString
		created           int64
		started, finished sql.NullInt64
		state, result     string
	)
	err := row.Scan(&bs.Seq, &bs.ID, &bs.Pipeline, &bs.Commit, &files, &state, &result, &bs.Error,
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
	if files.Valid {
		if err := json.Unmarshal([]byte(files.String), &bs.Files); err != nil {
			return nil, fmt.Errorf("files: %w", err)
		}
		if bs.Files == nil {
			bs.Files = []string{}
		}
	}
	bs.State = store.BuildsetState(state)
	bs.Result = store.Result(result)
	bs.CreatedAt = fromNanos(created)
	bs.StartedAt = fromNullNanos(started)
	bs.FinishedAt = fromNullNanos(finished)
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
	row := s.row(ctx, `SELECT `+columns+` FROM `+withSpecs+` WHERE id = ?`, id)
	bs, err := scanBuildset(row)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: get buildset %s: %w", id, err)
	}
	return bs, nil
}

// ListBuildsets returns the buildsets matching f, newest first (by
// CreatedAt, then creation order). A Before naming no buildset is an
// ErrNotFound.
func (s *Store) ListBuildsets(ctx context.Context, f store.Filter) ([]*store.Buildset, error) {
	var (
		where []string
		args  []any
	)
	if f.Pipeline != "" {
		where = append(where, "pipeline = ?")
		args = append(args, f.Pipeline)
	}
	if f.Commit != "" {
		where = append(where, "commit_sha = ?")
		args = append(args, f.Commit)
	}
	if f.Result != "" {
		where = append(where, "result = ?")
		args = append(args, string(f.Result))
	}
	if f.State != "" {
		where = append(where, "state = ?")
		args = append(args, string(f.State))
	}
	if f.Before != "" {
		var created, seq int64
		err := s.row(ctx, `SELECT created_at, seq FROM buildsets WHERE id = ?`, f.Before).Scan(&created, &seq)
		if errors.Is(err, sql.ErrNoRows) {
			err = fmt.Errorf("before %s: %w", f.Before, store.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: list buildsets: %w", err)
		}
		where = append(where, "(created_at, seq) < (?, ?)")
		args = append(args, created, seq)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = defaultLimit
	}
	q := `SELECT ` + lightColumns + ` FROM ` + withSpecs
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, seq DESC LIMIT ?`
	args = append(args, limit)

	rows, err := s.rows(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: list buildsets: %w", err)
	}
	defer rows.Close()
	var out []*store.Buildset
	for rows.Next() {
		bs, err := scanBuildset(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: list buildsets: %w", err)
		}
		out = append(out, bs)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: list buildsets: %w", err)
	}
	return out, nil
}

// ActiveBuildsets returns every buildset not DONE (QUEUED, ADMITTED,
// RUNNING), oldest first (by Seq).
func (s *Store) ActiveBuildsets(ctx context.Context) ([]*store.Buildset, error) {
	rows, err := s.rows(ctx, `SELECT `+buildsetColumns+` FROM `+withSpecs+` WHERE state IN (?, ?, ?) ORDER BY seq`,
		store.BuildsetQueued, store.BuildsetAdmitted, store.BuildsetRunning)
	if err != nil {
		return nil, fmt.Errorf("sqlite: active buildsets: %w", err)
	}
	defer rows.Close()
	var out []*store.Buildset
	for rows.Next() {
		bs, err := scanBuildset(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: active buildsets: %w", err)
		}
		out = append(out, bs)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: active buildsets: %w", err)
	}
	return out, nil
}

// lightColumns are buildsetColumns, read from withSpecs, without the
// plan, and without the spec unless the mode is not kept apart (a
// buildset made before 0014), for the reads that list buildsets: a
// reader of changes, a page of history. SQLite reads a column's overflow
// pages only when the CASE picks it.
const lightColumns = `seq, id, pipeline, commit_sha, files, state, result, error, NULL, CASE WHEN mode IS NULL THEN spec END, mode, cause, rerun_of, owner, pinned_to, created_at, started_at, finished_at`

// ChangedBuildsets reads the buildsets changed after since, or every one
// not DONE for a zero since; see store.Buildsets. The counter is read
// before the buildsets, in a statement of its own: a change committed
// after it has a larger number, and is read again next time if this read
// saw it already.
func (s *Store) ChangedBuildsets(ctx context.Context, since store.BuildsetCursor) (*store.BuildsetChanges, error) {
	var n int64
	if err := s.row(ctx, `SELECT n FROM buildset_changes`).Scan(&n); err != nil {
		return nil, fmt.Errorf("sqlite: changed buildsets: %w", err)
	}
	q, args := `SELECT `+lightColumns+` FROM `+withSpecs+` WHERE changed > ? ORDER BY seq`, []any{int64(since)}
	if since == 0 {
		q, args = `SELECT `+lightColumns+` FROM `+withSpecs+` WHERE state IN (?, ?, ?) ORDER BY seq`,
			[]any{store.BuildsetQueued, store.BuildsetAdmitted, store.BuildsetRunning}
	}
	rows, err := s.rows(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: changed buildsets: %w", err)
	}
	defer rows.Close()
	out := &store.BuildsetChanges{Cursor: store.BuildsetCursor(n)}
	for rows.Next() {
		bs, err := scanBuildset(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: changed buildsets: %w", err)
		}
		out.Buildsets = append(out.Buildsets, bs)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: changed buildsets: %w", err)
	}
	return out, nil
}

// AdmitBuildset moves QUEUED -> ADMITTED with no owner, for a server to
// claim, or returns ErrConflict (also for a buildset pinned to a run;
// ErrNotFound for an unknown id), or ErrFenced. StartedAt stays nil until
// StartBuildset.
func (s *Store) AdmitBuildset(ctx context.Context, id string, f store.Fence, at time.Time) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.checkFence(ctx, tx, f); err != nil {
			return err
		}
		return s.txCAS(ctx, tx, "buildsets", "id = ?", []any{id},
			`state = ?, owner = '', admitted_at = ?`, []any{store.BuildsetAdmitted, nullNanos(at)},
			`pinned_to = ''`, nil, store.BuildsetQueued)
	})
	if err != nil {
		return fmt.Errorf("sqlite: admit buildset %s: %w", id, err)
	}
	return nil
}

// ClaimBuildsets gives p.Fence's owner up to p.Max buildsets with no
// owner, running ones first (one at least, if any), with their semaphore
// holders and waiters; see store.Buildsets. The transaction is the
// database's only writer: two claims never see the same row free.
func (s *Store) ClaimBuildsets(ctx context.Context, p store.ClaimParams) ([]*store.Buildset, error) {
	var out []*store.Buildset
	err := s.tx(ctx, func(tx *sql.Tx) error {
		out = nil
		if err := s.checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		// Running ones first, one at least; then admitted ones, up to Max
		// in all.
		rows, err := s.txQuery(ctx, tx, `SELECT `+buildsetColumns+` FROM (
				SELECT * FROM (SELECT * FROM buildsets WHERE state = ? AND owner = '' AND pinned_to = '' ORDER BY seq LIMIT max(?, 1))
				UNION ALL
				SELECT * FROM (SELECT * FROM buildsets WHERE state = ? AND owner = '' AND pinned_to = '' ORDER BY seq LIMIT ?))
			LEFT JOIN buildset_specs USING (seq)
			ORDER BY state = ? DESC, seq LIMIT max(?, 1)`,
			store.BuildsetRunning, max(p.Max, 0), store.BuildsetAdmitted, max(p.Max, 0), store.BuildsetRunning, max(p.Max, 0))
		if err != nil {
			return err
		}
		for rows.Next() {
			bs, err := scanBuildset(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, bs)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, bs := range out {
			bs.Owner = p.Fence.Owner
			for _, table := range []string{"buildsets", "semaphore_holders", "semaphore_waiters"} {
				col := "buildset"
				if table == "buildsets" {
					col = "id"
				}
				if _, err := s.txExec(ctx, tx, `UPDATE `+table+` SET owner = ? WHERE `+col+` = ?`, p.Fence.Owner, bs.ID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim buildsets: %w", err)
	}
	return out, nil
}

// StartBuildset moves QUEUED or ADMITTED -> RUNNING with p.Fence's owner
// as its owner and records p.Reports, in one transaction, or returns
// ErrConflict (also for a buildset pinned to another owner; ErrNotFound
// for an unknown id), or ErrFenced.
func (s *Store) StartBuildset(ctx context.Context, p store.StartBuildsetParams) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		if err := s.txCAS(ctx, tx, "buildsets", "id = ?", []any{p.ID},
			`state = ?, owner = ?, started_at = ?`, []any{store.BuildsetRunning, p.Fence.Owner, nullNanos(p.At)},
			`pinned_to IN ('', ?)`, []any{p.Fence.Owner}, store.BuildsetQueued, store.BuildsetAdmitted); err != nil {
			return err
		}
		return s.insertReports(ctx, tx, p.ID, p.Reports)
	})
	if err != nil {
		return fmt.Errorf("sqlite: start buildset %s: %w", p.ID, err)
	}
	return nil
}

// RequestCancel records a cancel asked of the owner of a buildset not
// DONE; see store.Buildsets.
func (s *Store) RequestCancel(ctx context.Context, id, by string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		return s.txCAS(ctx, tx, "buildsets", "id = ?", []any{id}, `cancel_by = ?`, []any{by}, "", nil,
			store.BuildsetQueued, store.BuildsetAdmitted, store.BuildsetRunning)
	})
	if err != nil {
		return fmt.Errorf("sqlite: request the cancel of buildset %s: %w", id, err)
	}
	return nil
}

// CancelRequests returns the cancels asked of owner; see store.Buildsets.
func (s *Store) CancelRequests(ctx context.Context, owner string) ([]store.CancelRequest, error) {
	rows, err := s.rows(ctx, `SELECT id, cancel_by FROM buildsets
		WHERE owner = ? AND cancel_by <> '' AND state <> ? ORDER BY seq`, owner, store.BuildsetDone)
	if err != nil {
		return nil, fmt.Errorf("sqlite: cancel requests of %s: %w", owner, err)
	}
	defer rows.Close()
	var out []store.CancelRequest
	for rows.Next() {
		var r store.CancelRequest
		if err := rows.Scan(&r.Buildset, &r.By); err != nil {
			return nil, fmt.Errorf("sqlite: cancel requests of %s: %w", owner, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: cancel requests of %s: %w", owner, err)
	}
	return out, nil
}

// EndBuildset ends a buildset not DONE in one transaction: its running
// attempts, its unfinished builds, the buildset, and its semaphore holders
// and waiters; see store.Buildsets. It reports false, changing nothing,
// for a buildset DONE already, and ErrNotFound for an unknown id.
func (s *Store) EndBuildset(ctx context.Context, p store.EndBuildsetParams) (bool, error) {
	if p.Result == "" || p.BuildResult == "" {
		return false, fmt.Errorf("sqlite: end buildset %s: empty result", p.ID)
	}
	started := cmp.Or(p.StartedResult, p.BuildResult)
	attempt := cmp.Or(p.AttemptResult, p.BuildResult)
	at := nullNanos(p.At)
	ended := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if p.Fence != nil {
			if err := s.checkFence(ctx, tx, *p.Fence); err != nil {
				return err
			}
		}
		var state string
		err := s.txRow(ctx, tx, `SELECT state FROM buildsets WHERE id = ?`, p.ID).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
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
			{`UPDATE attempts SET result = ?, error = ?, finished_at = ? WHERE buildset_id = ? AND result = ''`,
				[]any{attempt, p.Reason, at, p.ID}},
			// A build that never started keeps null times (SPEC §2.4, §3).
			{`UPDATE builds SET state = ?, result = CASE WHEN state = ? THEN ? ELSE ? END, reason = ?,
				finished_at = CASE WHEN started_at IS NULL THEN NULL ELSE ? END
				WHERE buildset_id = ? AND state IN (?, ?)`,
				[]any{store.BuildDone, store.BuildRunning, started, p.BuildResult, p.Reason, at, p.ID, store.BuildWaiting, store.BuildRunning}},
			{`UPDATE buildsets SET state = ?, result = ?, error = ?, finished_at = ? WHERE id = ?`,
				[]any{store.BuildsetDone, p.Result, p.Error, at, p.ID}},
			{`DELETE FROM semaphore_holders WHERE buildset = ?`, []any{p.ID}},
			{`DELETE FROM semaphore_waiters WHERE buildset = ?`, []any{p.ID}},
		}
		for _, st := range steps {
			if _, err := s.txExec(ctx, tx, st.q, st.args...); err != nil {
				return err
			}
		}
		if err := s.insertReports(ctx, tx, p.ID, p.Reports); err != nil {
			return err
		}
		ended = true
		return nil
	})
	// Its builds are written no more; if they were, the model would not
	// know of what this transaction made of them.
	s.j.forget(p.ID)
	if err != nil {
		return false, fmt.Errorf("sqlite: end buildset %s: %w", p.ID, err)
	}
	return ended, nil
}

// txCAS updates, inside tx, the row of table selected by key if its state
// is one of from and cond ("" for none, with condArgs) holds. It returns
// ErrNotFound when there is no such row and ErrConflict when the row is in
// another state or fails cond. The table, column names and cond are this
// package's constants, never input.
func (s *Store) txCAS(ctx context.Context, tx *sql.Tx, table, key string, keyArgs []any, set string, setArgs []any, cond string, condArgs []any, from ...any) error {
	placeholders := strings.TrimSuffix(strings.Repeat("?, ", len(from)), ", ")
	where := key + ` AND state IN (` + placeholders + `)`
	if cond != "" {
		where += ` AND ` + cond
	}
	x := sqlTx{s, tx}
	n, err := x.exec(ctx, `UPDATE `+table+` SET `+set+` WHERE `+where, slices.Concat(setArgs, keyArgs, from, condArgs)...)
	if err != nil || n == 1 {
		return err
	}
	return casRefused(ctx, x, table, key, keyArgs, cond, from...)
}

// casRefused says why a compare-and-set of txCAS's changed no row:
// ErrNotFound, or ErrConflict with the row's state.
func casRefused(ctx context.Context, x wtx, table, key string, keyArgs []any, cond string, from ...any) error {
	var state string
	err := x.row(ctx, `SELECT state FROM `+table+` WHERE `+key, keyArgs...).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	for _, f := range from {
		if cond != "" && fmt.Sprint(f) == state {
			return fmt.Errorf("is %s, but not %s: %w", state, cond, store.ErrConflict)
		}
	}
	return fmt.Errorf("is %s: %w", state, store.ErrConflict)
}

// cas is txCAS in a transaction of its own, without a condition.
func (s *Store) cas(ctx context.Context, table, key string, keyArgs []any, set string, setArgs []any, from ...any) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		return s.txCAS(ctx, tx, table, key, keyArgs, set, setArgs, "", nil, from...)
	})
}

// Builds returns the builds of a buildset in creation order, or ErrNotFound
// for an unknown buildset.
func (s *Store) Builds(ctx context.Context, buildsetID string) ([]*store.Build, error) {
	rows, err := s.rows(ctx, `SELECT `+buildColumns+` FROM builds WHERE buildset_id = ? ORDER BY seq`, buildsetID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: builds of %s: %w", buildsetID, err)
	}
	defer rows.Close()
	var out []*store.Build
	for rows.Next() {
		b, err := scanBuild(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: builds of %s: %w", buildsetID, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: builds of %s: %w", buildsetID, err)
	}
	if len(out) == 0 {
		if err := s.buildsetExists(ctx, buildsetID); err != nil {
			return nil, fmt.Errorf("sqlite: builds of %s: %w", buildsetID, err)
		}
	}
	return out, nil
}

// Build returns the build of job in a buildset, or ErrNotFound.
func (s *Store) Build(ctx context.Context, buildsetID, job string) (*store.Build, error) {
	b, err := scanBuild(s.row(ctx, `SELECT `+buildColumns+` FROM builds WHERE buildset_id = ? AND job = ?`, buildsetID, job))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: build %s/%s: %w", buildsetID, job, err)
	}
	return b, nil
}

const buildColumns = `buildset_id, job, state, result, attempt, started_at, finished_at, log, reason`

func scanBuild(row scanner) (*store.Build, error) {
	var (
		b                 store.Build
		state, result     string
		started, finished sql.NullInt64
	)
	if err := row.Scan(&b.BuildsetID, &b.Job, &state, &result, &b.Attempt, &started, &finished, &b.Log, &b.Reason); err != nil {
		return nil, err
	}
	b.State = store.BuildState(state)
	b.Result = store.Result(result)
	b.StartedAt = fromNullNanos(started)
	b.FinishedAt = fromNullNanos(finished)
	return &b, nil
}

func (s *Store) buildsetExists(ctx context.Context, id string) error {
	var exists bool
	if err := s.row(ctx, `SELECT EXISTS (SELECT 1 FROM buildsets WHERE id = ?)`, id).Scan(&exists); err != nil {
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
// ErrConflict: two processes cannot both start attempt 2. A DONE build is
// an ErrConflict, an unknown one ErrNotFound.
func (s *Store) StartAttempt(ctx context.Context, p store.StartAttemptParams) error {
	if err := (store.BuildWrite{Start: &p}).Check(); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	err := s.rawTx(ctx, func(x wtx) error {
		return startAttempt(ctx, x, p.Attempt, &p.Fence)
	})
	s.j.made(err, p.Attempt.BuildsetID, store.BuildWrite{Start: &p})
	if err != nil {
		a := p.Attempt
		return fmt.Errorf("sqlite: start attempt %s/%s #%d: %w", a.BuildsetID, a.Job, a.Number, err)
	}
	return nil
}

// startBuild is the first statement of startAttempt, and startBuildFenced
// that one with a fence (fenceCond).
const (
	startBuild = `UPDATE builds SET state = '` + string(store.BuildRunning) + `', attempt = ?, log = ?, started_at = COALESCE(started_at, ?)
		WHERE buildset_id = ? AND job = ? AND state <> '` + string(store.BuildDone) + `' AND attempt < ?`
	startBuildFenced = startBuild + ` AND ` + fenceCond
)

// startAttempt is StartAttempt inside tx, with fence checked in its first
// statement, or nil for one checked already. The build is updated where it
// may be, and only when it may not is it read again to say why: two
// statements on the path of every job instead of four.
func startAttempt(ctx context.Context, x wtx, a *store.Attempt, fence *store.Fence) error {
	q, args := startBuild, []any{a.Number, a.Log, nanos(a.StartedAt), a.BuildsetID, a.Job, a.Number}
	if fence != nil {
		q, args = startBuildFenced, append(args, fenceArgs(*fence)...)
	}
	if n, err := x.exec(ctx, q, args...); err != nil {
		return err
	} else if n == 0 {
		if fence != nil {
			if err := checkFence(ctx, x, *fence); err != nil {
				return err
			}
		}
		var (
			state   string
			attempt int
		)
		err := x.row(ctx, `SELECT state, attempt FROM builds WHERE buildset_id = ? AND job = ?`,
			a.BuildsetID, a.Job).Scan(&state, &attempt)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return store.ErrNotFound
		case err != nil:
			return err
		case store.BuildState(state) == store.BuildDone:
			return fmt.Errorf("build is %s: %w", state, store.ErrConflict)
		}
		return fmt.Errorf("build is at attempt %d: %w", attempt, store.ErrConflict)
	}
	_, err := x.exec(ctx, `
		INSERT INTO attempts (buildset_id, job, number, owner, started_at, log)
		VALUES (?, ?, ?, ?, ?, ?)`,
		a.BuildsetID, a.Job, a.Number, a.Owner, nanos(a.StartedAt), a.Log)
	return err
}

// FinishAttempt sets the result of a running attempt, or returns
// ErrConflict if it has one already (ErrNotFound if there is no such
// attempt). A zero p.At leaves FinishedAt nil.
func (s *Store) FinishAttempt(ctx context.Context, p store.FinishAttemptParams) error {
	if err := (store.BuildWrite{FinishAttempt: &p}).Check(); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	err := s.rawTx(ctx, func(x wtx) error {
		return finishAttempt(ctx, x, p, &p.Fence)
	})
	s.j.made(err, p.BuildsetID, store.BuildWrite{FinishAttempt: &p})
	if err != nil {
		return fmt.Errorf("sqlite: finish attempt %s/%s #%d: %w", p.BuildsetID, p.Job, p.Number, err)
	}
	return nil
}

// finishAttemptSQL is the statement of finishAttempt, and
// finishAttemptFenced that one with a fence (fenceCond).
const (
	finishAttemptSQL = `UPDATE attempts SET result = ?, error = ?, finished_at = ?
		WHERE buildset_id = ? AND job = ? AND number = ? AND result = ''`
	finishAttemptFenced = finishAttemptSQL + ` AND ` + fenceCond
)

// finishAttempt sets the result of a running attempt inside tx, with fence
// checked in the same statement, or nil for one checked already, and tells
// why when no row changed (ErrFenced, ErrNotFound or ErrConflict).
func finishAttempt(ctx context.Context, x wtx, p store.FinishAttemptParams, fence *store.Fence) error {
	q, args := finishAttemptSQL, []any{string(p.Result), p.Error, optNanos(p.At), p.BuildsetID, p.Job, p.Number}
	if fence != nil {
		q, args = finishAttemptFenced, append(args, fenceArgs(*fence)...)
	}
	if n, err := x.exec(ctx, q, args...); err != nil || n == 1 {
		return err
	}
	if fence != nil {
		if err := checkFence(ctx, x, *fence); err != nil {
			return err
		}
	}
	var prev string
	err := x.row(ctx, `SELECT result FROM attempts WHERE buildset_id = ? AND job = ? AND number = ?`,
		p.BuildsetID, p.Job, p.Number).Scan(&prev)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.ErrNotFound
	case err != nil:
		return err
	}
	return fmt.Errorf("attempt finished %s: %w", prev, store.ErrConflict)
}

// FinishBuild moves WAITING or RUNNING -> DONE with its result and reason,
// or returns ErrConflict if it is already DONE (ErrNotFound if unknown). A
// zero p.At leaves FinishedAt nil, as a SKIPPED build's times are.
func (s *Store) FinishBuild(ctx context.Context, p store.FinishBuildParams) error {
	if err := (store.BuildWrite{FinishBuild: &p}).Check(); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	err := s.rawTx(ctx, func(x wtx) error {
		return finishBuild(ctx, x, p, &p.Fence)
	})
	s.j.made(err, p.BuildsetID, store.BuildWrite{FinishBuild: &p})
	if err != nil {
		return fmt.Errorf("sqlite: finish build %s/%s: %w", p.BuildsetID, p.Job, err)
	}
	return nil
}

// finishBuildSQL is the statement of finishBuild, and finishBuildFenced
// that one with a fence (fenceCond). A build that never started keeps null
// times (SPEC §2.4, §3).
const (
	finishBuildSQL = `UPDATE builds SET state = '` + string(store.BuildDone) + `', result = ?, reason = ?,
			finished_at = CASE WHEN started_at IS NULL THEN NULL ELSE ? END
		WHERE buildset_id = ? AND job = ? AND state IN ('` + string(store.BuildWaiting) + `', '` + string(store.BuildRunning) + `')`
	finishBuildFenced = finishBuildSQL + ` AND ` + fenceCond
)

// finishBuild is FinishBuild inside tx, with fence checked in the same
// statement, or nil for one checked already.
func finishBuild(ctx context.Context, x wtx, p store.FinishBuildParams, fence *store.Fence) error {
	q, args := finishBuildSQL, []any{string(p.Result), p.Reason, optNanos(p.At), p.BuildsetID, p.Job}
	if fence != nil {
		q, args = finishBuildFenced, append(args, fenceArgs(*fence)...)
	}
	if n, err := x.exec(ctx, q, args...); err != nil || n == 1 {
		return err
	}
	if fence != nil {
		if err := checkFence(ctx, x, *fence); err != nil {
			return err
		}
	}
	return casRefused(ctx, x, "builds", "buildset_id = ? AND job = ?", []any{p.BuildsetID, p.Job}, "", store.BuildWaiting, store.BuildRunning)
}

// WriteBuilds makes writes in order, all or none; see store.Buildsets. A
// batch the store can vouch for is journaled (journal.go); any other is
// made in one transaction, where each fence is checked once, by the first
// write that carries it, in that write's own statement; a fenced owner's
// batch is refused with ErrFenced, as if its fence had been read before
// that write.
func (s *Store) WriteBuilds(ctx context.Context, writes []store.BuildWrite) error {
	for _, w := range writes {
		if err := w.Check(); err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
	}
	if err := s.j.refusedFor(writes); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if s.journalWrites(ctx, writes) {
		return nil
	}
	var failed error // the failing write's error, saying which it was
	err := s.rawTx(ctx, func(x wtx) error {
		err := writeBuilds(ctx, x, writes)
		if err != nil && !errors.Is(err, store.ErrFenced) {
			failed = err
		}
		return err
	})
	if err == nil {
		s.j.learn(writes...)
		return nil
	}
	if failed == nil {
		return fmt.Errorf("sqlite: write builds: %w", err)
	}
	return err
}

// writeBuilds makes writes in order in the transaction x, each fence
// checked once, by the first write that carries it. ErrFenced is returned
// as it is, any other error naming its write.
func writeBuilds(ctx context.Context, x wtx, writes []store.BuildWrite) error {
	var checked []store.Fence // few: one a batch, as a rule
	for _, w := range writes {
		var fence *store.Fence
		if f := w.Fence(); !slices.Contains(checked, f) {
			checked = append(checked, f)
			fence = &f
		}
		var err error
		switch {
		case w.Start != nil:
			err = startAttempt(ctx, x, w.Start.Attempt, fence)
		case w.FinishAttempt != nil:
			err = finishAttempt(ctx, x, *w.FinishAttempt, fence)
		case w.FinishBuild != nil:
			err = finishBuild(ctx, x, *w.FinishBuild, fence)
		}
		switch {
		case errors.Is(err, store.ErrFenced):
			// The batch's refusal rather than its write's, told as
			// when the fence was read before the write.
			return err
		case err != nil:
			return fmt.Errorf("sqlite: %s: %w", writeName(w), err)
		}
	}
	return nil
}

// writeName names w in an error, as its own method does.
func writeName(w store.BuildWrite) string {
	switch {
	case w.Start != nil:
		a := w.Start.Attempt
		return fmt.Sprintf("start attempt %s/%s #%d", a.BuildsetID, a.Job, a.Number)
	case w.FinishAttempt != nil:
		p := w.FinishAttempt
		return fmt.Sprintf("finish attempt %s/%s #%d", p.BuildsetID, p.Job, p.Number)
	case w.FinishBuild != nil:
		p := w.FinishBuild
		return fmt.Sprintf("finish build %s/%s", p.BuildsetID, p.Job)
	}
	return "write builds"
}

// FinishAttemptAndBuild finishes an attempt and its build in one
// transaction; see store.Buildsets. a and b must name the same build.
func (s *Store) FinishAttemptAndBuild(ctx context.Context, a store.FinishAttemptParams, b store.FinishBuildParams) error {
	if a.BuildsetID != b.BuildsetID || a.Job != b.Job {
		return fmt.Errorf("sqlite: finish attempt %s/%s #%d and build %s/%s: not the same build", a.BuildsetID, a.Job, a.Number, b.BuildsetID, b.Job)
	}
	if a.Result == "" || b.Result == "" {
		return fmt.Errorf("sqlite: finish attempt and build %s/%s #%d: empty result", a.BuildsetID, a.Job, a.Number)
	}
	err := s.rawTx(ctx, func(x wtx) error {
		fence := &a.Fence // checked by the attempt's end, when it is b's too
		if b.Fence != a.Fence {
			if err := checkFence(ctx, x, a.Fence); err != nil {
				return err
			}
			if err := checkFence(ctx, x, b.Fence); err != nil {
				return err
			}
			fence = nil
		}
		if err := finishAttempt(ctx, x, a, fence); err != nil {
			return err
		}
		if n, err := x.exec(ctx, `
			UPDATE builds SET state = ?, result = ?, reason = ?, finished_at = ?
			WHERE buildset_id = ? AND job = ? AND state IN (?, ?)`,
			store.BuildDone, b.Result, b.Reason, nullNanos(b.At), b.BuildsetID, b.Job, store.BuildWaiting, store.BuildRunning); err != nil {
			return err
		} else if n == 0 {
			// The attempt row exists, so its build does: it is DONE.
			return fmt.Errorf("build is DONE: %w", store.ErrConflict)
		}
		return nil
	})
	s.j.made(err, a.BuildsetID, store.BuildWrite{FinishAttempt: &a}, store.BuildWrite{FinishBuild: &b})
	if err != nil {
		return fmt.Errorf("sqlite: finish attempt and build %s/%s #%d: %w", a.BuildsetID, a.Job, a.Number, err)
	}
	return nil
}

// Attempts returns a build's attempts by number, or ErrNotFound for an
// unknown build.
func (s *Store) Attempts(ctx context.Context, buildsetID, job string) ([]*store.Attempt, error) {
	rows, err := s.rows(ctx, `
		SELECT `+attemptColumns+`
		FROM attempts WHERE buildset_id = ? AND job = ? ORDER BY number`, buildsetID, job)
	if err != nil {
		return nil, fmt.Errorf("sqlite: attempts of %s/%s: %w", buildsetID, job, err)
	}
	out, err := scanAttempts(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: attempts of %s/%s: %w", buildsetID, job, err)
	}
	if len(out) == 0 {
		var exists bool
		err := s.row(ctx, `SELECT EXISTS (SELECT 1 FROM builds WHERE buildset_id = ? AND job = ?)`,
			buildsetID, job).Scan(&exists)
		if err == nil && !exists {
			err = store.ErrNotFound
		}
		if err != nil {
			return nil, fmt.Errorf("sqlite: attempts of %s/%s: %w", buildsetID, job, err)
		}
	}
	return out, nil
}

const attemptColumns = `buildset_id, job, number, owner, started_at, finished_at, result, log, error`

// scanAttempts reads rows of attemptColumns and closes rows.
func scanAttempts(rows *sql.Rows) ([]*store.Attempt, error) {
	defer rows.Close()
	var out []*store.Attempt
	for rows.Next() {
		var (
			a        store.Attempt
			started  int64
			finished sql.NullInt64
			result   string
		)
		err := rows.Scan(&a.BuildsetID, &a.Job, &a.Number, &a.Owner, &started, &finished, &result, &a.Log, &a.Error)
		if err != nil {
			return nil, err
		}
		a.StartedAt = fromNanos(started)
		a.FinishedAt = fromNullNanos(finished)
		a.Result = store.Result(result)
		out = append(out, &a)
	}
	return out, rows.Err()
}

// RunningAttempts returns the attempts of a buildset that have not finished
// (no Result, so no FinishedAt either), by job then number, or ErrNotFound
// for an unknown buildset. An attempt finished with a zero time has a Result
// and is not running.
func (s *Store) RunningAttempts(ctx context.Context, buildsetID string) ([]*store.Attempt, error) {
	rows, err := s.rows(ctx, `
		SELECT `+attemptColumns+`
		FROM attempts WHERE buildset_id = ? AND result = '' ORDER BY job, number`, buildsetID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: running attempts of %s: %w", buildsetID, err)
	}
	out, err := scanAttempts(rows)
	if err != nil {
		return nil, fmt.Errorf("sqlite: running attempts of %s: %w", buildsetID, err)
	}
	if len(out) == 0 {
		if err := s.buildsetExists(ctx, buildsetID); err != nil {
			return nil, fmt.Errorf("sqlite: running attempts of %s: %w", buildsetID, err)
		}
	}
	return out, nil
}

// durationHistory is how many of a job's latest successful attempts
// JobDurations takes the median of.
const durationHistory = 5

// jobDurationsSQL reads the latest successful attempts of each job of a
// JSON list (?1), ?2 of them at most a job: for each job, a search of
// the partial index attempts_succeeded, which SQLite uses only with the
// result written in the statement, not bound, and whose order is the
// ORDER BY's.
const jobDurationsSQL = `SELECT j.value, a.finished_at - a.started_at
	FROM (SELECT DISTINCT value FROM json_each(?1)) AS j
	JOIN attempts AS a ON a.rowid IN (
		SELECT rowid FROM attempts
		WHERE job = j.value AND result = '` + string(store.Success) + `' AND finished_at IS NOT NULL
		ORDER BY finished_at DESC, number DESC LIMIT ?2)`

// JobDurations returns, for each named job that has history, the median
// duration of its last 5 successful attempts (by finish time), in any
// pipeline. With an even count the median is the mean of the middle two.
func (s *Store) JobDurations(ctx context.Context, jobs []string) (map[string]time.Duration, error) {
	out := make(map[string]time.Duration, len(jobs))
	if len(jobs) == 0 {
		return out, nil
	}
	names, err := json.Marshal(jobs)
	if err != nil {
		return nil, fmt.Errorf("sqlite: job durations: %w", err)
	}
	// One statement for every job, where a statement per job cost 50 ms
	// before the first build of a 10,000-job buildset.
	rows, err := s.rows(ctx, jobDurationsSQL, string(names), durationHistory)
	if err != nil {
		return nil, fmt.Errorf("sqlite: job durations: %w", err)
	}
	defer rows.Close()
	durations := map[string][]time.Duration{}
	for rows.Next() {
		var (
			job string
			d   int64
		)
		if err := rows.Scan(&job, &d); err != nil {
			return nil, fmt.Errorf("sqlite: job durations: %w", err)
		}
		durations[job] = append(durations[job], time.Duration(d))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: job durations: %w", err)
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
