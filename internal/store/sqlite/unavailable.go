package sqlite

import (
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sortie-ci/sortie/internal/store"
)

// unavailable marks the errors of a database that cannot be written for
// now, whatever was asked (SQLITE_FULL: the disk is full; SQLITE_IOERR),
// as store.ErrUnavailable, so that a caller tries the write again once
// space is freed instead of going on without it.
func unavailable(err error) error {
	if err == nil {
		return nil // before se, which escapes: no allocation on every write
	}
	var se *sqlite.Error
	if errors.Is(err, store.ErrUnavailable) || !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR:
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}
