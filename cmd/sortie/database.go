package main

import (
	"cmp"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// envDatabase names the variable that stands for --database when the flag
// is not given.
const envDatabase = "SORTIE_DATABASE"

// databaseUsage is the help of --database.
const databaseUsage = "the store: postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=... (PostgreSQL; one server per database for now), " +
	"or sqlite:PATH (default: $" + envDatabase + ", else SQLite at <state-dir>/sortie.db)"

// database returns the store a command names: flag if set, else
// $SORTIE_DATABASE; "" is the state dir's SQLite file. Anything but
// postgres://, postgresql:// and sqlite:PATH is a usage error of cmd.
func database(cmd, flag string) (string, error) {
	db := cmp.Or(flag, os.Getenv(envDatabase))
	switch {
	case db == "", isPostgres(db):
		return db, nil
	case strings.HasPrefix(db, "sqlite:") && len(db) > len("sqlite:"):
		return db, nil
	}
	return "", usageError("%s: --database %s: want postgres://... (PostgreSQL) or sqlite:PATH", cmd, redact(db))
}

func isPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// redact hides the password of a database URL, for messages.
func redact(db string) string {
	if u, err := url.Parse(db); err == nil && u.User != nil {
		return u.Redacted()
	}
	return db
}

// openStore opens the store db names (see database) and brings its schema
// up to date; stateDir holds the default SQLite file. The caller closes
// it.
func openStore(ctx context.Context, db, stateDir string) (store.Store, error) {
	if isPostgres(db) {
		return postgres.Open(ctx, db)
	}
	s, err := sqlite.Open(ctx, sqlitePath(db, stateDir))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// sqlitePath is the file of a SQLite store db: sqlite:PATH's, or the state
// dir's sortie.db.
func sqlitePath(db, stateDir string) string {
	if path, ok := strings.CutPrefix(db, "sqlite:"); ok {
		return path
	}
	return filepath.Join(stateDir, "sortie.db")
}

// storeLogs is the sink of build logs kept in the store, written under
// the fence of the attempt's owner, which says on stderr when the store
// refuses a chunk for now and when it takes it.
func storeLogs(st store.Logs, fence func() store.Fence) logs.Chunks {
	return logs.Chunks{Store: st, Fence: fence,
		Waiting: func(k store.LogKey, err error) {
			fmt.Fprintf(os.Stderr, "sortie: buildset %s: build %s: log of attempt %d: %v; waiting until it can be recorded\n", k.BuildsetID, k.Job, k.Attempt, err)
		},
		Recovered: func(k store.LogKey) {
			fmt.Fprintf(os.Stderr, "sortie: buildset %s: build %s: log of attempt %d: recorded after all\n", k.BuildsetID, k.Job, k.Attempt)
		},
	}
}
