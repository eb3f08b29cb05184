package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// AppendLog stores one chunk of an attempt's log (store.Logs).
func (s *Store) AppendLog(ctx context.Context, p store.AppendLogParams) error {
	if err := checkAppend(p); err != nil {
		return fmt.Errorf("sqlite: append log %s: %w", logName(p.LogKey), err)
	}
	at := p.At
	if at.IsZero() {
		at = time.Now()
	}
	const insert = `
		INSERT INTO log_chunks (buildset_id, job, attempt, seq, start_offset, data, written_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	args := []any{p.BuildsetID, p.Job, p.Attempt, p.Seq, p.Offset, p.Data, nanos(at)}
	var (
		res sql.Result
		err error
	)
	if p.Fence == nil {
		res, err = s.exec(ctx, insert, args...)
	} else {
		err = s.tx(ctx, func(tx *sql.Tx) error {
			if err := s.checkFence(ctx, tx, *p.Fence); err != nil {
				return err
			}
			res, err = s.txExec(ctx, tx, insert, args...)
			return err
		})
	}
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = s.sameChunk(ctx, p)
		}
	}
	if err != nil {
		return fmt.Errorf("sqlite: append log %s chunk %d: %w", logName(p.LogKey), p.Seq, err)
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
	err := s.row(ctx, `SELECT start_offset, data FROM log_chunks WHERE buildset_id = ? AND job = ? AND attempt = ? AND seq = ?`,
		p.BuildsetID, p.Job, p.Attempt, p.Seq).Scan(&off, &data)
	if errors.Is(err, sql.ErrNoRows) || err == nil && (off != p.Offset || !bytes.Equal(data, p.Data)) {
		return fmt.Errorf("another chunk is stored there: %w", store.ErrConflict)
	}
	return err
}

// ReadLog returns the chunks of an attempt's log from the one holding
// p.From on (store.Logs).
func (s *Store) ReadLog(ctx context.Context, p store.ReadLogParams) ([]store.LogChunk, error) {
	limit := int64(p.MaxBytes)
	if limit <= 0 {
		limit = store.DefaultReadLog
	}
	rows, err := s.rows(ctx, `
		SELECT seq, start_offset, data, written_at FROM log_chunks
		WHERE buildset_id = ?1 AND job = ?2 AND attempt = ?3 AND start_offset < ?4 + ?5
		AND start_offset >= (SELECT COALESCE(MAX(start_offset), 0) FROM log_chunks
			WHERE buildset_id = ?1 AND job = ?2 AND attempt = ?3 AND start_offset <= ?4)
		ORDER BY start_offset`,
		p.BuildsetID, p.Job, p.Attempt, p.From, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read log %s: %w", logName(p.LogKey), err)
	}
	defer rows.Close()
	var out []store.LogChunk
	for rows.Next() {
		var (
			c  store.LogChunk
			at int64
		)
		if err := rows.Scan(&c.Seq, &c.Offset, &c.Data, &at); err != nil {
			return nil, fmt.Errorf("sqlite: read log %s: %w", logName(p.LogKey), err)
		}
		c.WrittenAt = fromNanos(at)
		if c.End() > p.From {
			out = append(out, c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: read log %s: %w", logName(p.LogKey), err)
	}
	return out, nil
}

// LogSize is the size of an attempt's log (store.Logs).
func (s *Store) LogSize(ctx context.Context, k store.LogKey) (int64, error) {
	var size int64
	err := s.row(ctx, `
		SELECT start_offset + length(data) FROM log_chunks
		WHERE buildset_id = ? AND job = ? AND attempt = ? ORDER BY start_offset DESC LIMIT 1`,
		k.BuildsetID, k.Job, k.Attempt).Scan(&size)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("sqlite: log size %s: %w", logName(k), err)
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
