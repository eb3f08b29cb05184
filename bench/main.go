// Command bench measures Sortie running generated job graphs through the
// real binary, persisting everything as in production (SQLite state dir,
// one log file per attempt, local bastion), and prints a Markdown table for
// docs/benchmarks.md.
//
//	go run ./bench [-reps 3] [-only layered|noop]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

type workload struct {
	name     string
	about    string
	parallel int
	config   func(repo string) string
	// nominal is the lower bound from the jobs' nominal durations (0: n/a):
	// the per-job cost of starting a process, logging and recording counts
	// against Sortie here, not in the bound.
	nominal time.Duration
}

type report struct {
	Result     string    `json:"result"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Builds     []struct {
		Job        string     `json:"job"`
		Result     string     `json:"result"`
		StartedAt  *time.Time `json:"started_at"`
		FinishedAt *time.Time `json:"finished_at"`
	} `json:"builds"`
}

func main() {
	reps := flag.Int("reps", 3, "repetitions of each workload (medians are reported)")
	only := flag.String("only", "", "run only this workload")
	flag.Parse()
	if err := run(*reps, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// layered makes L layers of W jobs, each depending on 1-3 random jobs of
// the layer above.
func layered(layers, width int, cmd string) func(string) string {
	return func(repo string) string {
		r := rand.New(rand.NewPCG(7, 7))
		var b strings.Builder
		fmt.Fprintf(&b, "source: {url: %s}\njobs:\n  boot: {bootstrap: true, install: [\"true\"]}\n", repo)
		var names []string
		for l := range layers {
			for w := range width {
				name := fmt.Sprintf("j%02d-%03d", l, w)
				names = append(names, name)
				fmt.Fprintf(&b, "  %s:\n    run: %q\n", name, cmd)
				if l > 0 {
					deps := map[int]bool{}
					for range 1 + r.IntN(3) {
						deps[r.IntN(width)] = true
					}
					b.WriteString("    dependencies: [")
					first := true
					for d := range deps {
						if !first {
							b.WriteString(", ")
						}
						first = false
						fmt.Fprintf(&b, "j%02d-%03d", l-1, d)
					}
					b.WriteString("]\n")
				}
			}
		}
		fmt.Fprintf(&b, "pipelines:\n  bench: {jobs: [%s]}\n", strings.Join(names, ", "))
		return b.String()
	}
}

func wide(n int, cmd string) func(string) string {
	return layered(1, n, cmd)
}

func run(reps int, only string) error {
	work, err := os.MkdirTemp("", "sortie-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "sortie")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/sortie").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	repo := filepath.Join(work, "repo")
	for _, args := range [][]string{{"init", "-q", "-b", "main", repo}, {"-C", repo, "commit", "-q", "--allow-empty", "-m", "bench"}} {
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@x", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@x")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %v: %v\n%s", args, err, out)
		}
	}
	workloads := []workload{
		{"layered", "1,000 `sleep 0.05` jobs, 20 layers of 50, 1-3 random deps on the layer above, max_parallel 16", 16, layered(20, 50, "sleep 0.05"),
			max(20*50*time.Millisecond, 1000*50*time.Millisecond/16)},
		{"noop", "10,000 no-op jobs (`true`), all after the bootstrap, max_parallel 2", 2, wide(10_000, "true"), 0},
	}
	fmt.Printf("Machine: %s, %d cores, %s. Repetitions: %d (medians).\n\n", cpuName(), runtime.NumCPU(), runtime.Version(), reps)
	fmt.Println("| workload | jobs | makespan | bound (measured durations) | makespan / bound | nominal bound | makespan / nominal | wall (process) | peak RSS | per job |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, w := range workloads {
		if only != "" && only != w.name {
			continue
		}
		dir := filepath.Join(work, w.name)
		os.MkdirAll(dir, 0o755)
		cfg := filepath.Join(dir, "sortie.yaml")
		if err := os.WriteFile(cfg, []byte(w.config(repo)), 0o644); err != nil {
			return err
		}
		var makespans, bounds, walls []time.Duration
		var rss []int64
		jobs := 0
		for i := range reps {
			state := filepath.Join(dir, fmt.Sprintf("state-%d", i))
			rep := filepath.Join(dir, fmt.Sprintf("report-%d.json", i))
			cmd := exec.CommandContext(context.Background(), bin, "run", "--config", cfg, "--pipeline", "bench",
				"--state-dir", state, "--report", rep, "--max-parallel", fmt.Sprint(w.parallel))
			cmd.Stdout, cmd.Stderr = nil, os.Stderr
			start := time.Now()
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%s: %v", w.name, err)
			}
			walls = append(walls, time.Since(start))
			rss = append(rss, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss*1024)
			r, err := readReport(rep)
			if err != nil {
				return err
			}
			if r.Result != "SUCCESS" {
				return fmt.Errorf("%s: buildset %s", w.name, r.Result)
			}
			jobs = len(r.Builds)
			makespans = append(makespans, r.FinishedAt.Sub(r.StartedAt))
			bounds = append(bounds, lowerBound(r, cfgDeps(w.config(repo)), w.parallel))
			os.RemoveAll(state)
		}
		ms, lb, wall := median(makespans), median(bounds), median(walls)
		nominal, ratio := "n/a", "n/a"
		if w.nominal > 0 {
			nominal, ratio = fmt.Sprintf("%.3fs", w.nominal.Seconds()), fmt.Sprintf("%.3f", ms.Seconds()/w.nominal.Seconds())
		}
		fmt.Printf("| %s | %d | %.3fs | %.3fs | %.3f | %s | %s | %.3fs | %.1f MiB | %.2f ms |\n", w.name, jobs, ms.Seconds(), lb.Seconds(),
			ms.Seconds()/lb.Seconds(), nominal, ratio, wall.Seconds(), float64(medianInt(rss))/(1<<20), float64(ms.Microseconds())/1000/float64(jobs))
		fmt.Fprintf(os.Stderr, "%s: %s\n", w.name, w.about)
	}
	return nil
}

func readReport(path string) (*report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r report
	return &r, json.Unmarshal(data, &r)
}

// cfgDeps extracts each job's dependencies from a generated config.
func cfgDeps(cfg string) map[string][]string {
	deps := map[string][]string{}
	var cur string
	for _, line := range strings.Split(cfg, "\n") {
		if strings.HasPrefix(line, "  j") && strings.HasSuffix(line, ":") {
			cur = strings.TrimSuffix(strings.TrimSpace(line), ":")
			deps[cur] = []string{"boot"}
		}
		if d, ok := strings.CutPrefix(line, "    dependencies: ["); ok {
			for _, n := range strings.Split(strings.TrimSuffix(d, "]"), ", ") {
				deps[cur] = append(deps[cur], n)
			}
		}
	}
	return deps
}

// lowerBound is max(critical path, total work / parallelism), both from
// the durations the builds actually took: no scheduler can beat it.
func lowerBound(r *report, deps map[string][]string, parallel int) time.Duration {
	dur := map[string]time.Duration{}
	var total time.Duration
	for _, b := range r.Builds {
		d := b.FinishedAt.Sub(*b.StartedAt)
		dur[b.Job] = d
		total += d
	}
	finish := map[string]time.Duration{}
	var longest func(string) time.Duration
	longest = func(j string) time.Duration {
		if f, ok := finish[j]; ok {
			return f
		}
		var start time.Duration
		for _, d := range deps[j] {
			start = max(start, longest(d))
		}
		finish[j] = start + dur[j]
		return finish[j]
	}
	var cp time.Duration
	for j := range dur {
		cp = max(cp, longest(j))
	}
	return max(cp, total/time.Duration(parallel))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianInt(xs []int64) int64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func cpuName() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return runtime.GOARCH
}
