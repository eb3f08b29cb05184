// Package benchkit is what the benchmark commands share: it builds sortie,
// makes a source repository, runs a tool under a wrapper that measures it
// honestly, and starts `sortie serve` on a free port for the commands that
// measure a running server (bench/webhookflood, bench/triggers), reading
// its memory and CPU time from /proc, and starts a throwaway PostgreSQL
// cluster for the benchmarks that run Sortie on PostgreSQL.
package benchkit

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Build builds ./cmd/sortie into dir and returns the binary's path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "sortie")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/sortie").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// Repo makes a git repository at dir with one empty commit on main.
func Repo(dir string) error {
	for _, args := range [][]string{{"init", "-q", "-b", "main", dir}, {"-C", dir, "commit", "-q", "--allow-empty", "-m", "bench"}} {
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@x", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@x")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v\n%s", args, err, out)
		}
	}
	return nil
}

// Server is a running `sortie serve`.
type Server struct {
	Base string // http://127.0.0.1:PORT
	cmd  *exec.Cmd
}

// Start starts bin serve with config, state dir state and env added to
// the environment, its output to log (nil: discarded), and waits until it
// answers /readyz.
func Start(bin, config, state string, log io.Writer, env ...string) (*Server, error) {
	return StartWith(bin, config, state, nil, log, env...)
}

// StartWith is Start with more arguments for serve, e.g. --database URL.
func StartWith(bin, config, state string, args []string, log io.Writer, env ...string) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, append([]string{"serve", "--config", config, "--state-dir", state, "--listen", addr}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	if log == nil {
		log = io.Discard
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{Base: "http://" + addr, cmd: cmd}
	if err := waitReady(s.Base + "/readyz"); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Stop ends the server with SIGTERM and waits for it.
func (s *Server) Stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
}

// Pid is the server's process id.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

func waitReady(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sortie serve not ready at %s", url)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Memory reads a field of /proc/PID/status (VmRSS, VmHWM), in bytes.
func (s *Server) Memory(field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.Pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), field+":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return kb << 10, err
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, s.Pid())
}

// CPU is the server's CPU time so far, user and system, its own and that
// of the children it has waited for (the git processes it starts).
func (s *Server) CPU() (time.Duration, error) {
	cpu, _, err := procCPU(s.Pid())
	return cpu, err
}

// Usage is what a run of a tool cost: CPU time (user and system, the
// tool's and every descendant's it waited for) and peak resident memory.
type Usage struct {
	CPU    time.Duration
	MaxRSS int64 // bytes
}

// Measure wraps cmd in GNU time, which forks (rather than vforks) the tool:
// the tool's peak resident memory is then its own, where a child started by
// a Go program inherits, at exec, the high-water mark of the parent's
// memory it shared until then (a harness of 100 MB would make every peer
// look 100 MB big). Run the returned command instead of cmd, then call
// usage with its ProcessState. time(1) is in the `time` package.
func Measure(cmd *exec.Cmd, dir string) (wrapped *exec.Cmd, usage func(*os.ProcessState) (Usage, error), err error) {
	timeBin, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		return nil, nil, fmt.Errorf("GNU time is needed to measure peak memory honestly: apt-get install time (%w)", err)
	}
	out := filepath.Join(dir, ".maxrss")
	args := append([]string{"-f", "%M", "-o", out, "--", cmd.Path}, cmd.Args[1:]...)
	w := exec.Command(timeBin, args...)
	w.Env, w.Dir = cmd.Env, cmd.Dir
	usage = func(ps *os.ProcessState) (Usage, error) {
		u := Usage{CPU: ps.UserTime() + ps.SystemTime()}
		data, err := os.ReadFile(out)
		if err != nil {
			return u, err
		}
		// The last line is the figure; a tool that failed has a
		// "Command exited with non-zero status" line before it.
		lines := strings.Fields(strings.TrimSpace(string(data)))
		if len(lines) == 0 {
			return u, fmt.Errorf("%s: empty", out)
		}
		kb, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
		if err != nil {
			return u, fmt.Errorf("%s: %w", out, err)
		}
		u.MaxRSS = kb << 10
		return u, nil
	}
	return w, usage, nil
}

// Machine says what the figures were measured on: the CPU model, the cores,
// and whether it is a virtual machine (process creation costs several
// times more on some, which changes every ratio against a peer).
func Machine() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	model, virtual := runtime.GOARCH, false
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok && model == runtime.GOARCH {
			model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
		if strings.HasPrefix(line, "flags") && slices.Contains(strings.Fields(line), "hypervisor") {
			virtual = true
		}
	}
	kind := "bare metal"
	if virtual {
		kind = "a virtual machine"
	}
	return fmt.Sprintf("%s, %d cores, %s, %s", model, runtime.NumCPU(), kind, runtime.Version())
}

// Setup makes a work dir named for prefix, builds sortie into it and makes
// a source repository in its "repo": what every server benchmark starts
// with. cleanup removes the work dir.
func Setup(prefix string) (work, bin, repo string, cleanup func(), err error) {
	work, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(work) }
	if bin, err = Build(work); err != nil {
		cleanup()
		return "", "", "", nil, err
	}
	repo = filepath.Join(work, "repo")
	if err := Repo(repo); err != nil {
		cleanup()
		return "", "", "", nil, err
	}
	return work, bin, repo, cleanup, nil
}

// Post POSTs body (JSON) to url with the bearer token, and returns an
// error, with the answer's body, unless the answer is a 2xx.
func Post(client *http.Client, url, token, body string) error {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return nil
}
