//go:build linux

// Command gofloor measures the floor of running no-op jobs from Go: N
// /bin/true processes on P workers, each in a process group of its own
// with its output on a pipe, as Sortie's local bastion starts a build, and
// nothing else (no state, no scheduling, no logs). It tells how much of
// Sortie's time on the no-op benchmark is Go's cost of starting a process
// and how much is Sortie's own (docs/benchmarks.md).
//
// -start says how a process starts: "forkexec" (the default) as the local
// bastion starts one, syscall.ForkExec and wait4; "osexec" with os/exec's
// Cmd, as it did before. It prints the wall time, and its own CPU time and
// its children's.
//
//	go run ./bench/gofloor -n 10000 -p 2
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 10000, "jobs")
	p := flag.Int("p", 2, "workers")
	how := flag.String("start", "forkexec", "how to start a process: forkexec or osexec")
	flag.Parse()
	runOne := map[string]func() error{"forkexec": forkExec, "osexec": osExec}[*how]
	if runOne == nil {
		fmt.Fprintf(os.Stderr, "gofloor: -start %q: want forkexec or osexec\n", *how)
		os.Exit(2)
	}
	start := time.Now()
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range *p {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if err := runOne(); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
			}
		}()
	}
	for range *n {
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	wall := time.Since(start)
	var self, children syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	fmt.Printf("%d jobs on %d workers (%s): %v; own CPU %v (%.0f µs a job), children's %v\n",
		*n, *p, *how, wall.Round(time.Millisecond), cpu(self).Round(time.Millisecond),
		float64(cpu(self).Microseconds())/float64(*n), cpu(children).Round(time.Millisecond))
}

// cpu is the user and system time of a rusage.
func cpu(r syscall.Rusage) time.Duration {
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// env is every job's environment.
var env = []string{"PATH=/usr/bin:/bin"}

// devNull is every job's stdin, opened once.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// forkExec starts /bin/true as the local bastion starts a job: its stdin
// /dev/null, its output on a pipe whose write end only the child keeps,
// its own process group; the output read to its end, the child reaped
// (the bastion waits for the exit in a goroutine of its own, and reaps it
// then; here the worker does both).
func forkExec() error {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	// The read end in Go's poller, as the local bastion reads it.
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return err
	}
	r := os.NewFile(uintptr(fds[0]), "|0")
	null, err := devNull()
	if err != nil {
		r.Close()
		syscall.Close(fds[1])
		return err
	}
	pid, err := syscall.ForkExec("/bin/true", []string{"/bin/true"}, &syscall.ProcAttr{
		Env: env, Files: []uintptr{null.Fd(), uintptr(fds[1]), uintptr(fds[1])}, Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	syscall.Close(fds[1])
	if err != nil {
		r.Close()
		return err
	}
	io.Copy(io.Discard, r)
	r.Close()
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return err
		}
	}
}

// osExec starts /bin/true with os/exec.
func osExec() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{
		Path: "/bin/true", Args: []string{"/bin/true"}, Env: env,
		Stdout: w, Stderr: w, SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return err
	}
	io.Copy(io.Discard, r)
	r.Close()
	return cmd.Wait()
}
