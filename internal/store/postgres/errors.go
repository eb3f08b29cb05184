package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sortie-ci/sortie/internal/store"
)

// unavailableCodes are the SQLSTATEs of a database that refuses work for
// now, whatever was asked: the same statement may succeed later.
var unavailableCodes = map[string]bool{
	"53000": true, // insufficient_resources
	"53100": true, // disk_full
	"53200": true, // out_of_memory
	"53300": true, // too_many_connections
	"57P01": true, // admin_shutdown: the server is stopping, or the backend was terminated
	"57P02": true, // crash_shutdown
	"57P03": true, // cannot_connect_now: starting up, shutting down, in recovery
	"58030": true, // io_error
}

// mapErr marks err, returned by work done under ctx, for the store's
// callers: a database that refuses work for now (unavailableCodes, the 08
// class of connection exceptions, a failed, timed out or broken
// connection) wraps store.ErrUnavailable, so that the write is tried again
// (store.Persist); a unique violation (23505) wraps store.ErrConflict. Any
// other error is returned as it is, and so is every error once ctx is done:
// the caller gave up, the database may be fine.
func mapErr(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrConflict) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case unavailableCodes[pe.Code] || strings.HasPrefix(pe.Code, "08"):
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		case pe.Code == "23505":
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		}
		// The server answered: an authentication failure or a missing
		// database will not mend by waiting.
		return err
	}
	if ctx.Err() != nil {
		return err
	}
	// With ctx live, a deadline is connect_timeout's.
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}
