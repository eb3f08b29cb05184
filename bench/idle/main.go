// Command idle measures what a queue costs a `sortie serve` that has
// nothing to run: for each queue length it starts a server on a fresh
// state dir, pauses its pipeline, triggers that many buildsets (which
// stay QUEUED), and then reads the server's CPU time (its own and its
// children's) over a window in which nothing happens but the managers'
// passes. It prints the CPU used as a share of one core, for each length,
// so that a queue of thousands is compared with an empty one in the same
// run (docs/benchmarks.md). It measures; it asserts nothing.
//
// -base PATH measures another sortie binary too (built from the commit
// before a change), as sortie-base, alternating with this tree's at each
// queue length, -reps times: on a shared machine, figures taken in turn
// compare, figures taken apart do not.
//
//	go run ./bench/idle -queued 0,5000 -window 30s [-base /tmp/sortie-before] [-reps 2]
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/bench/internal/benchkit"
)

func main() {
	queued := flag.String("queued", "0,5000", "comma-separated queue lengths to measure")
	window := flag.Duration("window", 30*time.Second, "how long the idle server's CPU is read")
	base := flag.String("base", "", "another sortie binary, measured as sortie-base in turn with this tree's")
	reps := flag.Int("reps", 1, "how many times each binary is measured at each queue length")
	flag.Parse()
	if err := run(*queued, *window, *base, max(*reps, 1)); err != nil {
		fmt.Fprintln(os.Stderr, "idle:", err)
		os.Exit(1)
	}
}

func run(queued string, window time.Duration, base string, reps int) error {
	work, err := os.MkdirTemp("", "sortie-idle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin, err := benchkit.Build(work)
	if err != nil {
		return err
	}
	tools := []struct{ name, bin string }{{"sortie", bin}}
	if base != "" {
		if base, err = filepath.Abs(base); err != nil {
			return err
		}
		tools = append([]struct{ name, bin string }{{"sortie-base", base}}, tools...)
	}
	fmt.Println(benchkit.Machine())
	fmt.Printf("a paused serial pipeline; CPU of the idle server over %v\n", window)
	fmt.Printf("%8s %-12s %12s %10s\n", "queued", "tool", "CPU", "% of a core")
	runs := 0
	for _, s := range strings.Split(queued, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-queued: %w", err)
		}
		for range reps {
			for _, tool := range tools {
				runs++
				cpu, err := measure(tool.bin, filepath.Join(work, fmt.Sprint(runs)), n, window)
				if err != nil {
					return fmt.Errorf("%s, %d queued: %w", tool.name, n, err)
				}
				fmt.Printf("%8d %-12s %9.0f ms %9.2f%%\n", n, tool.name, float64(cpu.Microseconds())/1000, 100*cpu.Seconds()/window.Seconds())
			}
		}
	}
	return nil
}

func measure(bin, dir string, n int, window time.Duration) (time.Duration, error) {
	repo := filepath.Join(dir, "repo")
	if err := benchkit.Repo(repo); err != nil {
		return 0, err
	}
	cfg := filepath.Join(dir, "sortie.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`source: {url: %q, branch: main}
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  deploy:
    manager: serial
    jobs: [boot]
`, repo)), 0o644); err != nil {
		return 0, err
	}
	srv, err := benchkit.Start(bin, cfg, filepath.Join(dir, "state"), nil, "SORTIE_TOKENS=bench-token")
	if err != nil {
		return 0, err
	}
	defer srv.Stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: time.Minute}
	if err := benchkit.Post(client, srv.Base+"/api/v1/pause", "bench-token", `{"pipeline": "deploy", "reason": "bench"}`); err != nil {
		return 0, err
	}
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		first atomic.Pointer[error]
	)
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := benchkit.Post(client, srv.Base+"/api/v1/pipelines/deploy/trigger", "bench-token", "{}"); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := first.Load(); err != nil {
		return 0, *err
	}
	// Let what the triggers started (git, the managers' wake-ups) settle.
	time.Sleep(3 * time.Second)
	cpu0, err := srv.CPU()
	if err != nil {
		return 0, err
	}
	time.Sleep(window)
	cpu1, err := srv.CPU()
	if err != nil {
		return 0, err
	}
	return cpu1 - cpu0, nil
}
