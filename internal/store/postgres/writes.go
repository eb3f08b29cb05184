package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// WriteBuilds makes writes in order in one transaction; see
// store.Buildsets. The transaction's BEGIN, a check of each fence and
// every write go to the server in one batch, and its COMMIT in a second
// round trip: two round trips for any number of writes, where each write
// alone costs one. An attempt's end followed by its build's (the end of
// every build that ran) is one statement, FinishAttemptAndBuild's.
func (s *Store) WriteBuilds(ctx context.Context, writes []store.BuildWrite) error {
	ops, err := planWrites(writes)
	if err != nil {
		return err
	}
	var failed error // a write that could not be made: not retried
	err = s.retry(ctx, func() error {
		failed = nil
		var err error
		failed, err = s.writeBuilds(ctx, ops)
		return err
	})
	if err != nil {
		err = fmt.Errorf("postgres: write builds: %w", err)
	} else {
		err = failed
	}
	s.CountFenced(err)
	return err
}

// writeOp is one statement of a WriteBuilds batch.
type writeOp struct {
	start  *store.StartAttemptParams
	finish *store.FinishAttemptParams // with build, FinishAttemptAndBuild
	build  *store.FinishBuildParams
}

// planWrites checks writes and pairs an attempt's end with its build's
// end that follows it.
func planWrites(writes []store.BuildWrite) ([]writeOp, error) {
	for _, w := range writes {
		if err := w.Check(); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
	}
	var ops []writeOp
	for i := 0; i < len(writes); i++ {
		switch w := writes[i]; {
		case w.Start != nil:
			ops = append(ops, writeOp{start: w.Start})
		case w.FinishAttempt != nil:
			p := w.FinishAttempt
			op := writeOp{finish: p}
			if i+1 < len(writes) {
				if b := writes[i+1].FinishBuild; b != nil && b.BuildsetID == p.BuildsetID && b.Job == p.Job && b.Fence == p.Fence {
					op.build = b
					i++
				}
			}
			ops = append(ops, op)
		default:
			ops = append(ops, writeOp{build: w.FinishBuild})
		}
	}
	return ops, nil
}

const fenceLiveSQL = `SELECT EXISTS (SELECT 1 FROM owners WHERE id = $1 AND epoch = $2 AND state = $3 FOR SHARE)`

// writeBuilds runs ops in a transaction on one connection. failed is
// why a write could not be made (the transaction rolled back); err is
// an error of the database, maybe retryable.
func (s *Store) writeBuilds(ctx context.Context, ops []writeOp) (failed, err error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A connection released inside a transaction (an error below) is
	// closed by the pool, not reused.
	defer c.Release()
	var fences []store.Fence
	seen := map[store.Fence]bool{}
	for _, op := range ops {
		f := op.fence()
		if !seen[f] {
			seen[f] = true
			fences = append(fences, f)
		}
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	for _, f := range fences {
		b.Queue(fenceLiveSQL, f.Owner, f.Epoch, store.OwnerLive)
	}
	for _, op := range ops {
		switch {
		case op.start != nil:
			b.Queue(startAttemptSQL, startAttemptArgs(*op.start)...)
		case op.finish != nil && op.build != nil:
			b.Queue(finishAttemptAndBuildSQL, finishAttemptAndBuildArgs(*op.finish, *op.build)...)
		case op.finish != nil:
			p := op.finish
			b.Queue(finishAttemptSQL, p.Result, p.Error, nullTime(p.At), p.BuildsetID, p.Job, p.Number)
		default:
			p := op.build
			b.Queue(finishBuildSQL, store.BuildDone, p.Result, p.Reason, nullTime(p.At), p.BuildsetID, p.Job, store.BuildWaiting, store.BuildRunning)
		}
	}
	failed, err = readWrites(ctx, c.Conn(), c.SendBatch(ctx, b), fences, ops)
	if err != nil || failed != nil {
		_, rerr := c.Exec(ctx, "ROLLBACK")
		if err == nil && rerr != nil {
			err = rerr
		}
		return failed, err
	}
	_, err = c.Exec(ctx, "COMMIT")
	return nil, err
}

// readWrites reads the batch's results, in the order writeBuilds queued
// them, and closes it; the first write that could not be made is
// failed, asked why in the transaction still open.
func readWrites(ctx context.Context, conn *pgx.Conn, br pgx.BatchResults, fences []store.Fence, ops []writeOp) (failed, err error) {
	var why func() error // asks the database why the failed write was not made
	var whyOf string     // names that write
	read := func() error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		for _, f := range fences {
			var live bool
			if err := br.QueryRow().Scan(&live); err != nil {
				return err
			}
			if !live && failed == nil {
				failed = fmt.Errorf("postgres: write builds: owner %q epoch %d: %w", f.Owner, f.Epoch, store.ErrFenced)
			}
		}
		for _, op := range ops {
			var werr error
			switch {
			case op.start != nil:
				var r startResult
				if err := br.QueryRow().Scan(r.dest()...); err != nil {
					return err
				}
				a := op.start.Attempt
				if e := r.err(*op.start); e != nil {
					werr = fmt.Errorf("postgres: start attempt %s/%s #%d: %w", a.BuildsetID, a.Job, a.Number, e)
				}
			case op.finish != nil && op.build != nil:
				var r finishResult
				if err := br.QueryRow().Scan(r.dest()...); err != nil {
					return err
				}
				a := op.finish
				if e := r.err(*a); e != nil {
					werr = fmt.Errorf("postgres: finish attempt and build %s/%s #%d: %w", a.BuildsetID, a.Job, a.Number, e)
				}
			case op.finish != nil:
				tag, err := br.Exec()
				if err != nil {
					return err
				}
				if tag.RowsAffected() != 1 && failed == nil && why == nil {
					p := *op.finish
					why = func() error { return finishAttemptWhy(ctx, conn, p) }
					whyOf = fmt.Sprintf("finish attempt %s/%s #%d", p.BuildsetID, p.Job, p.Number)
				}
			default:
				tag, err := br.Exec()
				if err != nil {
					return err
				}
				if tag.RowsAffected() != 1 && failed == nil && why == nil {
					p := *op.build
					why = func() error { return buildStateWhy(ctx, conn, p.BuildsetID, p.Job) }
					whyOf = fmt.Sprintf("finish build %s/%s", p.BuildsetID, p.Job)
				}
			}
			if werr != nil && failed == nil && why == nil {
				failed = werr
			}
		}
		return nil
	}
	err = read()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && failed == nil && why != nil {
		failed, err = whyNot(whyOf, why())
	}
	return failed, err
}

// whyNot sorts the answer of a question asked after a write of the batch,
// named name, changed no row: the reason the write could not be made
// (ErrNotFound, ErrConflict), failed; or a failure of the database to
// answer, err, which the caller treats as any other error of the
// database's (retried, or mapped to ErrUnavailable by mapErr), not as
// the write refused.
func whyNot(name string, answer error) (failed, err error) {
	switch {
	case errors.Is(answer, store.ErrNotFound) || errors.Is(answer, store.ErrConflict):
		return fmt.Errorf("postgres: %s: %w", name, answer), nil
	case answer == nil:
		// Not made all the same: the batch must not commit.
		return fmt.Errorf("postgres: %s: changed no row", name), nil
	}
	return nil, answer
}

// finishAttemptWhy says why finishAttemptSQL changed no row.
func finishAttemptWhy(ctx context.Context, q conn, p store.FinishAttemptParams) error {
	var prev string
	err := q.QueryRow(ctx, `SELECT result FROM attempts WHERE buildset_id = $1 AND job = $2 AND number = $3`,
		p.BuildsetID, p.Job, p.Number).Scan(&prev)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.ErrNotFound
	case err != nil:
		return err
	}
	return fmt.Errorf("attempt finished %s: %w", prev, store.ErrConflict)
}

// buildStateWhy says why finishBuildSQL changed no row.
func buildStateWhy(ctx context.Context, q conn, buildsetID, job string) error {
	var state string
	err := q.QueryRow(ctx, `SELECT state FROM builds WHERE buildset_id = $1 AND job = $2`, buildsetID, job).Scan(&state)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.ErrNotFound
	case err != nil:
		return err
	}
	return fmt.Errorf("is %s: %w", state, store.ErrConflict)
}

func (op writeOp) fence() store.Fence {
	switch {
	case op.start != nil:
		return op.start.Fence
	case op.finish != nil:
		return op.finish.Fence
	}
	return op.build.Fence
}
