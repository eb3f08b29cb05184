package postgres

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// migrationFiles are the schema changes, applied in version order. A file
// is named NNNN_what.sql; once released it is never edited, only followed.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations returns the embedded migrations in version order.
func migrations() ([]store.Migration, error) {
	return store.ReadMigrations(migrationFiles, "migrations")
}

// migrate applies the migrations the database lacks, each in its own
// transaction that first takes the migration lock (pg_advisory_xact_lock,
// released at commit or rollback) and then reads schema_migrations: nodes
// that start at once queue on the lock, and whoever comes second finds the
// version applied and skips it. A database migrated by a newer sortie is
// refused. The lock is waited for without lock_timeout (ctx bounds the
// wait): a migration may rewrite a table for longer than any lock_timeout.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		var tooNew error // not this migration's fault
		err := s.tx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = 0`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockMigrate); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
				version    integer     PRIMARY KEY,
				name       text        NOT NULL,
				applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
				return err
			}
			var newest int
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
				return err
			}
			if newest > len(ms) {
				tooNew = fmt.Errorf("migrate: database schema version %d is newer than this sortie knows (%d): upgrade sortie", newest, len(ms))
				return tooNew
			}
			if newest >= m.Version {
				return nil
			}
			// No arguments: the simple protocol, which runs every
			// statement of the file.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name)
			return err
		})
		if tooNew != nil {
			return tooNew
		}
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.Name, err)
		}
	}
	return nil
}

// SchemaVersion is the version of the schema this build brings a database
// to: the number of its migrations.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0 // a broken build; Open says why
	}
	return len(ms)
}
