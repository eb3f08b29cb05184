package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sortie-ci/sortie/internal/store"
)

// AppendLog stores one chunk of an attempt's log (store.Logs). A zero At
// is the database's clock.
func (s *Store) AppendLog(ctx context.Context, p store.AppendLogParams) error {
	if err := checkAppend(p); err != nil {
		return fmt.Errorf("postgres: append log %s: %w", logName(p.LogKey), err)
	}
	const insert = `
		INSERT INTO log_chunks (buildset_id, job, attempt, seq, start_offset, data, written_at)
		VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, now())) ON CONFLICT DO NOTHING`
	args := []any{p.BuildsetID, p.Job, p.Attempt, p.Seq, p.Offset, p.Data, nullTime(p.At)}
	var (
		tag pgconn.CommandTag
		err error
	)
	if p.Fence == nil {
		tag, err = s.exec(ctx, insert, args...)
	} else {
		err = s.tx(ctx, func(tx pgx.Tx) error {
			if err := checkFence(ctx, tx, *p.Fence); err != nil {
				return err
			}
			tag, err = tx.Exec(ctx, insert, args...)
			return err
		})
	}
	if err == nil && tag.RowsAffected() == 0 {
		err = s.sameChunk(ctx, p)
	}
	if err != nil {
		return fmt.Errorf("postgres: append log %s chunk %d: %w", logName(p.LogKey), p.Seq, err)
	}
	return nil
}

// sameChunk tells a chunk written twice (nil) from another one under its
// Seq or Offset (ErrConflict).
func (s *Store) sameChunk(ctx context.Context, p store.AppendLogParams) error {
	var (
		off  int64
		data []byte
	)
	err := s.pool.QueryRow(ctx, `SELECT start_offset, data FROM log_chunks WHERE buildset_id = $1 AND job = $2 AND attempt = $3 AND seq = $4`,
		p.BuildsetID, p.Job, p.Attempt, p.Seq).Scan(&off, &data)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && (off != p.Offset || !bytes.Equal(data, p.Data)) {
		return fmt.Errorf("another chunk is stored there: %w", store.ErrConflict)
	}
	return mapErr(ctx, err)
}

// ReadLog returns the chunks of an attempt's log from the one holding
// p.From on (store.Logs).
func (s *Store) ReadLog(ctx context.Context, p store.ReadLogParams) ([]store.LogChunk, error) {
	limit := int64(p.MaxBytes)
	if limit <= 0 {
		limit = store.DefaultReadLog
	}
	rows, err := s.pool.Query(ctx, `
		SELECT seq, start_offset, data, written_at FROM log_chunks
		WHERE buildset_id = $1 AND job = $2 AND attempt = $3 AND start_offset < $4::bigint + $5::bigint
		AND start_offset >= (SELECT coalesce(max(start_offset), 0) FROM log_chunks
			WHERE buildset_id = $1 AND job = $2 AND attempt = $3 AND start_offset <= $4::bigint)
		ORDER BY start_offset`,
		p.BuildsetID, p.Job, p.Attempt, p.From, limit)
	if err == nil {
		var cs []store.LogChunk
		cs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.LogChunk, error) {
			var c store.LogChunk
			err := row.Scan(&c.Seq, &c.Offset, &c.Data, &c.WrittenAt)
			c.WrittenAt = c.WrittenAt.UTC()
			return c, err
		})
		if err == nil {
			out := cs[:0]
			for _, c := range cs {
				if c.End() > p.From {
					out = append(out, c)
				}
			}
			if len(out) == 0 {
				return nil, nil
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("postgres: read log %s: %w", logName(p.LogKey), mapErr(ctx, err))
}

// LogSize is the size of an attempt's log (store.Logs).
func (s *Store) LogSize(ctx context.Context, k store.LogKey) (int64, error) {
	var size int64
	err := s.pool.QueryRow(ctx, `
		SELECT start_offset + octet_length(data) FROM log_chunks
		WHERE buildset_id = $1 AND job = $2 AND attempt = $3 ORDER BY start_offset DESC LIMIT 1`,
		k.BuildsetID, k.Job, k.Attempt).Scan(&size)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("postgres: log size %s: %w", logName(k), mapErr(ctx, err))
	}
	return size, nil
}

// checkAppend refuses a chunk that cannot be part of a log.
func checkAppend(p store.AppendLogParams) error {
	switch {
	case len(p.Data) == 0:
		return errors.New("empty chunk")
	case p.Seq < 0 || p.Offset < 0:
		return fmt.Errorf("chunk %d at offset %d: negative", p.Seq, p.Offset)
	}
	return nil
}

func logName(k store.LogKey) string {
	return fmt.Sprintf("%s/%s.%d", k.BuildsetID, k.Job, k.Attempt)
}
