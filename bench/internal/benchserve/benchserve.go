// Package benchserve starts `sortie serve` for the benchmark commands that
// measure a running server (bench/webhookflood, bench/triggers): it builds
// the binary, makes a source repository, starts the server on a free port,
// waits until it is ready, and reads its memory and CPU time from /proc.
package benchserve

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
// the environment, and waits until it answers /readyz.
func Start(bin, config, state string, env ...string) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "serve", "--config", config, "--state-dir", state, "--listen", addr)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = io.Discard
	cmd.Stdout = io.Discard
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
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Pid()))
	if err != nil {
		return 0, err
	}
	// The fields after the command's name, which is in parentheses and
	// may hold spaces: utime, stime, cutime, cstime are fields 14-17.
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 15 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", s.Pid(), len(f))
	}
	var ticks int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", s.Pid(), err)
		}
		ticks += n
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ticks) * time.Second / hz, nil
}
