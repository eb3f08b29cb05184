// Package pgcluster starts a throwaway PostgreSQL cluster: initdb and
// pg_ctl, run as the postgres user when this process is root (initdb
// refuses root), a data directory and a postmaster listening on a unix
// socket in a temporary directory only (two processes never race for a
// port), and a watchdog process that stops the server and removes the
// directory should this process die without Stop (killed, a go test
// -timeout panic, a Ctrl-C). The tests' databases (pgtest) and the
// benchmarks' (bench/internal/benchkit) run on one.
package pgcluster

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
)

// ErrNoBinaries is why Start could not start a cluster when no initdb was
// found.
var ErrNoBinaries = errors.New("no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql package")

// Cluster is a running throwaway cluster.
type Cluster struct {
	// Dir is its temporary directory: the data directory (data), the
	// socket and the server's log (server.log).
	Dir        string
	bin        string
	asPostgres []string // runuser -u postgres --, as root
	// watchdog stops the server once its stdin reaches EOF: keep, its
	// write end, is open in this process only.
	watchdog *exec.Cmd
	keep     *os.File
}

// Start initdbs a cluster in a new temporary directory named after prefix
// and starts it with settings (-c name=value ...) on top of its socket
// only; about 1.5 s here. On failure nothing is left behind.
func Start(prefix, settings string) (_ *Cluster, err error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin}
	// Not under t.TempDir or another 0700 directory of root's: the
	// postgres user must be able to enter it.
	if c.Dir, err = os.MkdirTemp("", prefix); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(c.Dir)
		}
	}()
	if os.Geteuid() == 0 {
		pg, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("initdb refuses root and there is no postgres user to run it: %w", err)
		}
		uid, _ := strconv.Atoi(pg.Uid)
		gid, _ := strconv.Atoi(pg.Gid)
		if err := os.Chown(c.Dir, uid, gid); err != nil {
			return nil, err
		}
		c.asPostgres = []string{"runuser", "-u", "postgres", "--"}
	}
	data := c.DataDir()
	// --no-sync only skips flushing initdb's own files: the server then
	// runs with settings.
	if err := c.run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"); err != nil {
		return nil, err
	}
	opts := "-c listen_addresses= -k " + c.Dir + " " + settings
	log := filepath.Join(c.Dir, "server.log")
	if err := c.run("pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start"); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, tail(log))
	}
	if err := c.startWatchdog(); err != nil {
		c.stopServer()
		return nil, err
	}
	return c, nil
}

// DataDir is the cluster's data directory.
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// URL is the postgres:// URL of database db on the cluster, as the
// superuser postgres.
func (c *Cluster) URL(db string) string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + db,
		RawQuery: url.Values{"host": {c.Dir}, "sslmode": {"disable"}}.Encode()}).String()
}

// Stop has the watchdog stop the server and remove its directory, and
// waits for it.
func (c *Cluster) Stop() error {
	c.keep.Close()
	if err := c.watchdog.Wait(); err != nil {
		return fmt.Errorf("stop the PostgreSQL cluster in %s: %w", c.Dir, err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("stop the PostgreSQL cluster: %s is left", c.Dir)
	}
	return nil
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
	return "", ErrNoBinaries
}

// run runs a PostgreSQL program as the postgres user. Its output goes to
// a file, not a pipe: pg_ctl's postmaster would otherwise hold the pipe
// open, and the wait would last as long as the server.
func (c *Cluster) run(prog string, args ...string) error {
	out, err := os.CreateTemp("", "sortie-pg-out-")
	if err != nil {
		return err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	argv := append(append(slices.Clone(c.asPostgres), filepath.Join(c.bin, prog)), args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		return fmt.Errorf("%s %s: %w\n%s", prog, args[len(args)-1], err, b)
	}
	return nil
}

// startWatchdog starts a shell that, once its stdin reaches EOF (Stop, or
// this process's death), stops the server and removes its directory. It
// runs in a session of its own, so that a Ctrl-C meant for this process
// does not kill it first.
func (c *Cluster) startWatchdog() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	const script = `read -r line; dir=$1; shift; "$@" >/dev/null 2>&1; rm -rf "$dir"`
	argv := append([]string{"-c", script, "pgcluster-watchdog", c.Dir}, c.stopArgv()...)
	c.watchdog = exec.Command("sh", argv...)
	c.watchdog.Stdin = r
	c.watchdog.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.watchdog.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the cluster's watchdog: %w", err)
	}
	c.keep = w
	return nil
}

// stopArgv stops the server at once (no checkpoint: nothing in it is
// kept).
func (c *Cluster) stopArgv() []string {
	return append(append(slices.Clone(c.asPostgres), filepath.Join(c.bin, "pg_ctl")), "-D", c.DataDir(), "-m", "immediate", "-w", "stop")
}

// stopServer stops the server without the watchdog.
func (c *Cluster) stopServer() {
	argv := c.stopArgv()
	_ = exec.Command(argv[0], argv[1:]...).Run()
}

// tail returns the end of a server log, for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
