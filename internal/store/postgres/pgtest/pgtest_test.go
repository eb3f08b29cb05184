package pgtest

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestNewDatabase: each test gets an empty database of its own, dropped
// when the test ends even while a connection to it is open.
func TestNewDatabase(t *testing.T) {
	var name string
	t.Run("use", func(t *testing.T) {
		u1, u2 := NewDatabase(t), NewDatabase(t)
		if u1 == u2 {
			t.Fatalf("two databases at one URL %s", u1)
		}
		conn, err := pgx.Connect(t.Context(), u1)
		if err != nil {
			t.Fatal(err)
		}
		// Left open on purpose: the drop forces it closed.
		if err := conn.QueryRow(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		if _, err := conn.Exec(t.Context(), `CREATE TABLE t (x int)`); err != nil {
			t.Fatal(err)
		}
	})
	conn, err := pgx.Connect(t.Context(), URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var left int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if name == "" || left != 0 {
		t.Errorf("database %q: %d left after its test", name, left)
	}
}

// TestCluster starts and stops a cluster of its own, even where
// $SORTIE_TEST_DATABASE_URL points elsewhere (as in CI), so that the way a
// developer's tests get a server is tested in CI too. Stopping closes the
// watchdog's pipe, as the death of the test binary would.
func TestCluster(t *testing.T) {
	c, err := startCluster()
	switch {
	case errors.Is(err, errNoBinaries) && os.Getenv("CI") == "":
		t.Skip(err)
	case err != nil:
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.stop()
		}
	}()
	conn, err := pgx.Connect(t.Context(), c.url)
	if err != nil {
		t.Fatal(err)
	}
	var maxConns string
	err = conn.QueryRow(t.Context(), `SHOW max_connections`).Scan(&maxConns)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if maxConns != "300" {
		t.Errorf("max_connections = %s, want 300", maxConns)
	}
	stopped = true
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after stop: %v", c.dir, err)
	}
	if conn, err := pgx.Connect(t.Context(), c.url); err == nil {
		conn.Close(context.Background())
		t.Error("the cluster answers after stop")
	}
}
