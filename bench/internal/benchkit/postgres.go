package benchkit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store/postgres/pgcluster"
)

// PostgresSettings are the server settings a benchmark's cluster runs
// with unless told otherwise: PostgreSQL's defaults for durability (fsync,
// synchronous_commit and full_page_writes on: every commit is flushed to
// disk before it returns), a unix socket only, and enough connections for
// several servers' pools.
const PostgresSettings = "-c max_connections=200"

// Postgres is a throwaway PostgreSQL cluster (pgcluster) started for a
// benchmark. The server's CPU time is not a child's of the tool that uses
// it: CPU reads it from /proc, so that a benchmark can add it to the
// tool's.
type Postgres struct {
	*pgcluster.Cluster
	admin string // URL of the maintenance database
	// Settings are the server settings it was started with (-c ...).
	Settings string
	// Version is the server's, e.g. "PostgreSQL 15.18".
	Version string
}

// StartPostgres initdbs and starts a cluster with settings (-c name=value
// ..., PostgresSettings when ""). On failure nothing is left behind.
func StartPostgres(settings string) (_ *Postgres, err error) {
	if settings == "" {
		settings = PostgresSettings
	}
	c, err := pgcluster.Start("sortie-bench-pg-", settings)
	if err != nil {
		return nil, err
	}
	p := &Postgres{Cluster: c, Settings: settings, admin: c.URL("postgres")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.admin)
	if err != nil {
		p.Stop()
		return nil, fmt.Errorf("connect to the bench cluster: %w", err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		p.Stop()
		return nil, err
	}
	p.Version = "PostgreSQL " + strings.Fields(v)[0]
	return p, nil
}

// NewDatabase creates an empty database named name (a plain identifier)
// and returns its URL.
func (p *Postgres) NewDatabase(name string) (string, error) {
	if err := p.exec("CREATE DATABASE " + pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return p.URL(name), nil
}

// DropDatabase drops database name, whatever still connects to it.
func (p *Postgres) DropDatabase(name string) error {
	if err := p.exec("DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

func (p *Postgres) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// CPU is the cluster's CPU time so far, user and system: the postmaster's,
// that of its children that have exited (the backends of closed
// connections), and that of those still running (background workers,
// open connections). The difference across a run is what the tool cost
// the database server.
func (p *Postgres) CPU() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(p.DataDir(), "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return 0, fmt.Errorf("postmaster.pid: %w", err)
	}
	total, _, err := procCPU(pm)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == pm {
			continue
		}
		cpu, ppid, err := procCPU(pid)
		if err != nil || ppid != pm {
			continue // gone meanwhile, or not the cluster's
		}
		total += cpu
	}
	return total, nil
}

// procCPU reads utime+stime+cutime+cstime and the parent of pid.
func procCPU(pid int) (time.Duration, int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The fields after the command's name, which is in parentheses and
	// may hold spaces: ppid is field 4, utime..cstime are 14-17.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, _ := strconv.Atoi(f[1])
	var ticks int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ticks) * time.Second / hz, ppid, nil
}
