// Package pgtest gives tests a PostgreSQL database of their own. It is for
// tests only.
//
// URL finds a server: $SORTIE_TEST_DATABASE_URL when set (CI starts one
// cluster for the whole run, see .ci/run), else a throwaway cluster that
// this test binary starts once, with initdb and pg_ctl as the postgres user,
// listening only on a unix socket in a temporary directory. NewDatabase
// makes each test a database of its own on it, because NOTIFY channels and
// advisory locks are per database: tests cannot wake or block each other.
// A package that uses pgtest calls Main from its TestMain, which stops the
// cluster it started; a watchdog process stops it too if the test binary
// dies first (killed, or a go test -timeout panic).
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
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

// EnvURL names the variable that points the tests at a running server, as a
// postgres:// URL of a superuser: tests create databases, and roles to
// test refusals.
const EnvURL = "SORTIE_TEST_DATABASE_URL"

// errNoBinaries is why a cluster could not be started when no initdb was found.
var errNoBinaries = errors.New("no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql package, or set " + EnvURL)

var (
	mu      sync.Mutex
	tried   bool     // a cluster was asked for: started, or err says why not
	running *cluster // the cluster this binary started; nil with an external URL
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
			baseURL = running.url
		}
	}
	switch {
	case errors.Is(baseErr, errNoBinaries) && os.Getenv("CI") == "":
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
		if err := c.stop(); err != nil {
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

// cluster is a throwaway PostgreSQL cluster: a data directory and a
// postmaster listening on a unix socket in dir only, so that two test
// binaries never race for a port.
type cluster struct {
	dir, pgCtl string
	url        string
	// asPostgres prefixes commands with runuser when this process is root,
	// as initdb refuses to run as root.
	asPostgres []string
	// watchdog stops the cluster if this process dies without Main (a
	// killed binary, a go test -timeout panic): it waits for EOF on its
	// stdin, whose write end is keep, open only in this process.
	watchdog *exec.Cmd
	keep     *os.File
}

// startCluster runs the memo's commands (initdb, then pg_ctl start): about
// 1.5 s here. On failure nothing is left behind.
func startCluster() (_ *cluster, err error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	c := &cluster{pgCtl: filepath.Join(bin, "pg_ctl")}
	// t.TempDir's parent is 0700 and root's: the postgres user could not
	// enter it.
	if c.dir, err = os.MkdirTemp("", "sortie-pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.remove()
		}
	}()
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("initdb refuses root and there is no postgres user to run it: %w", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			return nil, err
		}
		c.asPostgres = []string{"runuser", "-u", "postgres", "--"}
	}
	data := filepath.Join(c.dir, "data")
	if err := c.run(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		return nil, err
	}
	opts := "-c listen_addresses= -k " + c.dir +
		" -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
	if err := c.run(c.pgCtl, "-D", data, "-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tail(filepath.Join(c.dir, "server.log")))
	}
	if err := c.startWatchdog(); err != nil {
		c.stopServer()
		return nil, err
	}
	c.url = (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres",
		RawQuery: url.Values{"host": {c.dir}, "sslmode": {"disable"}}.Encode()}).String()
	return c, nil
}

// binDir returns the directory of the newest Debian PostgreSQL binaries,
// else that of an initdb on PATH.
func binDir() (string, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) > 0 {
		version := func(p string) int {
			v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
			return v
		}
		slices.SortFunc(found, func(a, b string) int { return version(a) - version(b) })
		return filepath.Dir(found[len(found)-1]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		p, _ = filepath.EvalSymlinks(p)
		return filepath.Dir(p), nil
	}
	return "", errNoBinaries
}

// run runs a PostgreSQL command as the postgres user. Its output goes to a
// file, not a pipe: pg_ctl's postmaster would otherwise hold the pipe open
// and the wait would last as long as the server.
func (c *cluster) run(name string, args ...string) error {
	out, err := os.CreateTemp("", "sortie-pg-out-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	argv := append(append(slices.Clone(c.asPostgres), name), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), args[len(args)-1], err, b)
	}
	return nil
}

// startWatchdog starts a shell that, once its stdin reaches EOF, stops the
// server and removes dir. It runs in its own session, so a Ctrl-C meant for
// the test binary does not kill it first.
func (c *cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `read -r line; dir=$1; shift; "$@" >/dev/null 2>&1; rm -rf "$dir"`
	argv := append([]string{"-c", script, "pgtest-watchdog", c.dir}, c.stopArgv()...)
	c.watchdog = exec.Command("sh", argv...)
	c.watchdog.Stdin = r
	c.watchdog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.watchdog.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start watchdog: %w", err)
	}
	c.keep = w
	return nil
}

// stopArgv is the command that stops the server at once (no checkpoint:
// nothing in it is kept).
func (c *cluster) stopArgv() []string {
	return append(append(slices.Clone(c.asPostgres), c.pgCtl), "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
}

// stopServer stops the server without the watchdog.
func (c *cluster) stopServer() {
	argv := c.stopArgv()
	_ = exec.Command(argv[0], argv[1:]...).Run()
}

// stop has the watchdog stop the server and remove its directory, and
// waits for it.
func (c *cluster) stop() error {
	c.keep.Close()
	if err := c.watchdog.Wait(); err != nil {
		return fmt.Errorf("stop the test cluster in %s: %w", c.dir, err)
	}
	if _, err := os.Stat(c.dir); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stop the test cluster: %s is left", c.dir)
	}
	return nil
}

func (c *cluster) remove() { _ = os.RemoveAll(c.dir) }

// tail returns the end of a server log, for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
