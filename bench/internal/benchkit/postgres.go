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
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresSettings are the server settings a benchmark's cluster runs
// with unless told otherwise: PostgreSQL's defaults for durability (fsync,
// synchronous_commit and full_page_writes on: every commit is flushed to
// disk before it returns), a unix socket only, and enough connections for
// several servers' pools.
const PostgresSettings = "-c max_connections=200"

// Postgres is a throwaway PostgreSQL cluster started for a benchmark: a
// data directory and a postmaster listening on a unix socket in a
// temporary directory only, run as the postgres user when this process is
// root (initdb refuses root). A watchdog stops it if the benchmark dies
// without Stop. The server's CPU time is not a child's of the tool that
// uses it: CPU reads it from /proc, so that a benchmark can add it to the
// tool's.
type Postgres struct {
	dir, bin   string
	asPostgres []string
	admin      string // URL of the maintenance database
	// Settings are the server settings it was started with (-c ...).
	Settings string
	// Version is the server's, e.g. "PostgreSQL 15.18".
	Version  string
	watchdog *exec.Cmd
	keep     *os.File
}

// StartPostgres initdbs and starts a cluster with settings (-c name=value
// ..., PostgresSettings when ""). On failure nothing is left behind.
func StartPostgres(settings string) (_ *Postgres, err error) {
	if settings == "" {
		settings = PostgresSettings
	}
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, Settings: settings}
	// The postgres user must be able to enter it: not under a 0700 dir.
	if p.dir, err = os.MkdirTemp("", "sortie-bench-pg-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(p.dir)
		}
	}()
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("initdb refuses root and there is no postgres user to run it: %w", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(p.dir, uid, gid); err != nil {
			return nil, err
		}
		p.asPostgres = []string{"runuser", "-u", "postgres", "--"}
	}
	data := filepath.Join(p.dir, "data")
	// --no-sync only skips flushing initdb's own files: the server then
	// runs with the settings above.
	if err := p.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		return nil, err
	}
	opts := "-c listen_addresses= -k " + p.dir + " " + settings
	if err := p.run("pg_ctl", "-D", data, "-l", filepath.Join(p.dir, "server.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		b, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
		return nil, fmt.Errorf("%w\n%s", err, b)
	}
	if err := p.startWatchdog(); err != nil {
		p.stopServer()
		return nil, err
	}
	p.admin = p.URL("postgres")
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

// postgresBin is the directory of the newest Debian PostgreSQL binaries,
// else that of an initdb on PATH.
func postgresBin() (string, error) {
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
	return "", fmt.Errorf("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql")
}

// run runs a PostgreSQL program as the postgres user, its output to a
// file: pg_ctl's postmaster would hold a pipe open as long as it runs.
func (p *Postgres) run(prog string, args ...string) error {
	out, err := os.CreateTemp("", "sortie-bench-pg-out-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	argv := append(append(slices.Clone(p.asPostgres), filepath.Join(p.bin, prog)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s %s: %w\n%s", prog, args[len(args)-1], err, b)
	}
	return nil
}

// URL is the postgres:// URL of database db on the cluster.
func (p *Postgres) URL(db string) string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + db,
		RawQuery: url.Values{"host": {p.dir}, "sslmode": {"disable"}}.Encode()}).String()
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
	b, err := os.ReadFile(filepath.Join(p.dir, "data", "postmaster.pid"))
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

// startWatchdog starts a shell that, once its stdin reaches EOF (Stop, or
// this process's death), stops the server and removes its directory. It
// runs in a session of its own, so that a Ctrl-C for the benchmark does
// not kill it first.
func (p *Postgres) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `read -r line; dir=$1; shift; "$@" >/dev/null 2>&1; rm -rf "$dir"`
	argv := append([]string{"-c", script, "benchkit-pg-watchdog", p.dir}, p.stopArgv()...)
	p.watchdog = exec.Command("sh", argv...)
	p.watchdog.Stdin = r
	p.watchdog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := p.watchdog.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the cluster's watchdog: %w", err)
	}
	p.keep = w
	return nil
}

// stopArgv stops the server at once: nothing in it is kept.
func (p *Postgres) stopArgv() []string {
	return append(append(slices.Clone(p.asPostgres), filepath.Join(p.bin, "pg_ctl")), "-D", filepath.Join(p.dir, "data"), "-m", "immediate", "-w", "stop")
}

func (p *Postgres) stopServer() {
	argv := p.stopArgv()
	_ = exec.Command(argv[0], argv[1:]...).Run()
}

// Stop stops the server and removes its directory, through the watchdog,
// and waits for it.
func (p *Postgres) Stop() error {
	p.keep.Close()
	if err := p.watchdog.Wait(); err != nil {
		return fmt.Errorf("stop the bench cluster in %s: %w", p.dir, err)
	}
	return nil
}
