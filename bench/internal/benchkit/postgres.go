package benchkit

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster for a benchmark: initdb and
// pg_ctl from Debian's packages, run as the postgres user when this
// process is root (initdb refuses root), listening on a unix socket in its
// directory only, without fsync (nothing in it is kept).
type Postgres struct {
	dir, bin   string
	asPostgres []string
}

// StartPostgres makes a cluster in a new directory under parent and starts
// it. Stop stops it and removes the directory.
func StartPostgres(parent string) (_ *Postgres, err error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return nil, fmt.Errorf("no PostgreSQL binaries in /usr/lib/postgresql/*/bin: apt-get install postgresql")
	}
	version := func(p string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	slices.SortFunc(found, func(a, b string) int { return version(a) - version(b) })
	pg := &Postgres{bin: filepath.Dir(found[len(found)-1])}
	// The postgres user must be able to enter it: not under a 0700 dir
	// of root's.
	if pg.dir, err = os.MkdirTemp(parent, "pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(pg.dir)
		}
	}()
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("initdb refuses root and there is no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{parent, pg.dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := os.Chown(pg.dir, uid, gid); err != nil {
			return nil, err
		}
		pg.asPostgres = []string{"runuser", "-u", "postgres", "--"}
	}
	data := filepath.Join(pg.dir, "data")
	if err := pg.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		return nil, err
	}
	opts := "-c listen_addresses= -k " + pg.dir + " -c max_connections=200 -c fsync=off"
	if err := pg.run("pg_ctl", "-D", data, "-l", filepath.Join(pg.dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		b, _ := os.ReadFile(filepath.Join(pg.dir, "server.log"))
		return nil, fmt.Errorf("%w\n%s", err, b)
	}
	return pg, nil
}

func (pg *Postgres) run(name string, args ...string) error {
	argv := append(append(slices.Clone(pg.asPostgres), filepath.Join(pg.bin, name)), args...)
	// Output to a file, not a pipe: the postmaster pg_ctl starts would
	// hold a pipe open for as long as it runs.
	out, err := os.CreateTemp("", "sortie-bench-pg-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s: %w\n%s", name, err, b)
	}
	return nil
}

// URL is the URL of database db as the superuser postgres.
func (pg *Postgres) URL(db string) string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + db,
		RawQuery: url.Values{"host": {pg.dir}, "sslmode": {"disable"}}.Encode()}).String()
}

// CreateDatabase creates an empty database named db and returns its URL.
func (pg *Postgres) CreateDatabase(ctx context.Context, db string) (string, error) {
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", db, err)
	}
	return pg.URL(db), nil
}

// CPU is the CPU time of the cluster so far: the postmaster's, its live
// processes' (the backends of open connections, the background workers),
// and that of those it has waited for (closed connections).
func (pg *Postgres) CPU() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(pg.dir, "data", "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	return TreeCPU(pid)
}

// Stop stops the cluster at once and removes its directory.
func (pg *Postgres) Stop() error {
	err := pg.run("pg_ctl", "-D", filepath.Join(pg.dir, "data"), "-m", "immediate", "-w", "stop")
	os.RemoveAll(pg.dir)
	return err
}
