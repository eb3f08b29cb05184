package pgcluster

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestCluster starts a cluster with settings of its own and stops it,
// even where $SORTIE_TEST_DATABASE_URL points the other tests elsewhere
// (as in CI), so that the way a developer's tests and the benchmarks get
// a server is tested in CI too. Stopping closes the watchdog's pipe, as
// the death of this process would.
func TestCluster(t *testing.T) {
	c, err := Start("sortie-pgcluster-test-", "-c max_connections=37")
	switch {
	case errors.Is(err, ErrNoBinaries) && os.Getenv("CI") == "":
		t.Skip(err)
	case err != nil:
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.Stop()
		}
	}()
	conn, err := pgx.Connect(t.Context(), c.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	var maxConns, db string
	err = conn.QueryRow(t.Context(), `SELECT current_setting('max_connections'), current_database()`).Scan(&maxConns, &db)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if maxConns != "37" || db != "postgres" {
		t.Errorf("max_connections = %s in database %s, want 37 in postgres", maxConns, db)
	}
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after Stop: %v", c.Dir, err)
	}
	if conn, err := pgx.Connect(t.Context(), c.URL("postgres")); err == nil {
		conn.Close(context.Background())
		t.Error("the cluster answers after Stop")
	}
}
