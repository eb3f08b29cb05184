package postgres

import (
	"fmt"
	"time"
)

// nullTime is t for a nullable timestamptz column: NULL for the zero
// time.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// utc returns *t in UTC, or nil: pgx reads timestamptz in the local zone.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// errZeroTime reports a required time left zero: a programmer error that
// would otherwise store the year 1.
func errZeroTime(field string) error {
	return fmt.Errorf("%s is zero", field)
}
