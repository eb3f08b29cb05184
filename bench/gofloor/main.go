// Command gofloor measures the floor of running no-op jobs from Go: N
// /bin/true processes on P workers, each started with os/exec in a process
// group of its own with its output on a pipe, as Sortie's local bastion
// starts a build, and nothing else (no state, no scheduling, no logs). It
// tells how much of Sortie's time on the no-op benchmark is Go's cost of
// starting a process and how much is Sortie's own (docs/benchmarks.md).
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
	flag.Parse()
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
	fmt.Printf("%d jobs on %d workers: %v\n", *n, *p, time.Since(start).Round(time.Millisecond))
}

func runOne() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := &exec.Cmd{
		Path: "/bin/true", Args: []string{"/bin/true"}, Env: []string{"PATH=/usr/bin:/bin"},
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
