// Package pgtest gives tests a PostgreSQL database of their own. It is for
// tests only.
//
// URL finds a server: $SORTIE_TEST_DATABASE_URL when set (CI starts one
// cluster for the whole run, see .ci/run), else a throwaway cluster
// (pgcluster) that this test binary starts once. NewDatabase
// makes each test a database of its own on it, because NOTIFY channels and
// advisory locks are per database: tests cannot wake or block each other.
// A package that uses pgtest calls Main from its TestMain, which stops the
// cluster it started; the cluster's watchdog stops it too if the test
// binary dies first (killed, or a go test -timeout panic).
//
// Without PostgreSQL's binaries and without $SORTIE_TEST_DATABASE_URL, the
// tests that ask for a database are skipped, except in CI (CI set), where
// they fail: PostgreSQL tests never skip in CI.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/store/postgres/pgcluster"
)

// EnvURL names the variable that points the tests at a running server, as a
// postgres:// URL of a superuser: tests create databases, and roles to
// test refusals.
const EnvURL = "SORTIE_TEST_DATABASE_URL"

var (
	mu      sync.Mutex
	tried   bool               // a cluster was asked for: started, or err says why not
	running *pgcluster.Cluster // the cluster this binary started; nil with an external URL
	baseURL string
	baseErr error
	dbSeq   atomic.Int64
)

// URL returns the URL of a database on the test server, the maintenance
// database "postgres" of a cluster started for this test binary unless
// $SORTIE_TEST_DATABASE_URL is set. Tests that create objects use
// NewDatabase instead. Safe for concurrent use; the first call may take a
// second or two (initdb).
func URL(tb testing.TB) string {
	tb.Helper()
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	mu.Lock()
	defer mu.Unlock()
	if !tried {
		tried = true
		running, baseErr = startCluster()
		if baseErr == nil {
			baseURL = running.URL("postgres")
		}
	}
	switch {
	case errors.Is(baseErr, pgcluster.ErrNoBinaries) && os.Getenv("CI") == "":
		tb.Skipf("pgtest: %v", baseErr)
	case baseErr != nil:
		tb.Fatalf("pgtest: %v", baseErr)
	}
	return baseURL
}

// NewDatabase creates an empty database for this test on the test server
// and returns its URL. The database is dropped WITH (FORCE) when the test
// and its subtests end, whatever still connects to it.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	base := URL(tb)
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		tb.Fatalf("pgtest: %s is not a postgres:// URL", EnvURL)
	}
	name := fmt.Sprintf("sortie_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := admin(ctx, base, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := admin(ctx, base, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("pgtest: drop database: %v", err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

// admin runs one statement on its own connection to the database of url.
func admin(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// Main runs the tests of a package that uses pgtest, for its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// Whatever their result, it then stops and removes the cluster URL started.
// A run that passed fails if goroutines are left (goleak): a package that
// uses a database also starts goroutines (pools, listeners). It returns the
// exit code.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	c := running
	running, tried, baseURL, baseErr = nil, false, "", nil
	mu.Unlock()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			code = max(code, 1)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests passed: %v\n", err)
			code = 1
		}
	}
	return code
}

// testSettings are the test cluster's: fast, not durable (a test's data
// outlives nothing), and connections for many tests' pools at once.
const testSettings = "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"

// startCluster starts the throwaway cluster of this test binary.
func startCluster() (*pgcluster.Cluster, error) {
	c, err := pgcluster.Start("sortie-pg-", testSettings)
	if errors.Is(err, pgcluster.ErrNoBinaries) {
		return nil, fmt.Errorf("%w, or set %s", err, EnvURL)
	}
	return c, err
}
