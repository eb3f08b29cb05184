// Command bench runs the same job graphs with Sortie and with the tools a
// user might otherwise pick (make, ninja, go-task, Dagu), at the same
// parallelism, alternating runs, and reports medians and Sortie/peer
// ratios. Sortie persists everything as in production: its SQLite state
// dir, one log per attempt that writes, the bootstrap's checkout.
//
//	go run ./bench [-reps 3] [-quick] [-only REGEXP] [-tools REGEXP] [-base PATH] [-database sqlite|postgres|both] [-write]
//
// -only keeps the workloads whose name matches, e.g. -only 'wide 10000|chain
// 1000|sleep' for the three of the per-job targets; -tools keeps the tools
// whose name matches. -base PATH adds sortie-base, another sortie binary
// (the commit before a change), for a change's before and after in one
// run. -database postgres (or both) adds sortie-pg: the
// same quiet run on PostgreSQL, a throwaway cluster started for the bench
// (benchkit.StartPostgres; -pg-settings changes its settings), a fresh
// database per run.
// -write replaces the generated part of docs/benchmarks.md and, without
// -only, writes docs/bench-peers.svg. Peers that are not installed are reported and
// left out; docs/benchmarks.md says how to install them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sortie-ci/sortie/bench/internal/benchkit"
)

type workload struct {
	dag      *dag
	parallel int
	// chart puts it on the SVG (the wide no-op family).
	chart bool
}

func (w workload) name() string {
	kind := "no-op"
	if w.dag.sleep > 0 {
		kind = fmt.Sprintf("sleep %gs", w.dag.sleep.Seconds())
	}
	return fmt.Sprintf("%s %d, %s, parallelism %d", w.dag.family, w.dag.n(), kind, w.parallel)
}

type sample struct {
	wall    time.Duration
	cpu     time.Duration // user+sys, the tool's and its children's (and its database server's)
	dbcpu   time.Duration // of cpu, the database server's (sortie-pg)
	own     time.Duration // Sortie only: of cpu, its own (not its children's); 0 if unknown
	waits   int64         // Sortie only: its threads' voluntary context switches; 0 if unknown
	rss     int64
	failed  string
	latency []time.Duration // Sortie only: dispatch latencies of one run
	edges   edges           // Sortie only: its time before the first job and after the last
}

type result struct {
	w       workload
	samples map[string][]sample
}

func main() {
	reps := flag.Int("reps", 3, "repetitions of each workload and tool (medians are reported)")
	quick := flag.Bool("quick", false, "small sizes only (a smoke run)")
	write := flag.Bool("write", false, "rewrite the generated part of docs/benchmarks.md and docs/bench-peers.svg")
	timeout := flag.Duration("timeout", 2*time.Minute, "longest one run of one tool may take; a tool that times out is not run again on that workload")
	only := flag.String("only", "", "run only the workloads whose name matches this regexp (e.g. 'wide 10000|chain 1000|sleep')")
	toolsRE := flag.String("tools", "", "run only the tools whose name matches this regexp (e.g. '^(sortie|sortie-pg|make)$')")
	db := flag.String("database", "sqlite", "Sortie's store: sqlite, postgres (the sortie-pg tool only) or both")
	pgSettings := flag.String("pg-settings", benchkit.PostgresSettings, "settings of the PostgreSQL cluster (postgres -c name=value ...)")
	base := flag.String("base", "", "another sortie binary (e.g. built from the commit before a change), run quiet on SQLite as the tool sortie-base, alternating with the tree's")
	flag.Parse()
	keep, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: -only:", err)
		os.Exit(2)
	}
	keepTools, err := regexp.Compile(*toolsRE)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: -tools:", err)
		os.Exit(2)
	}
	if *db != "sqlite" && *db != "postgres" && *db != "both" {
		fmt.Fprintln(os.Stderr, "bench: -database: want sqlite, postgres or both")
		os.Exit(2)
	}
	opts := options{reps: *reps, quick: *quick, write: *write, only: keep, tools: keepTools, timeout: *timeout, database: *db, pgSettings: *pgSettings, base: *base}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func workloads(quick bool) ([]workload, error) {
	noop, sleep := "/bin/true", "sleep 0.05"
	real, err := realistic("examples", noop, 0)
	if err != nil {
		return nil, err
	}
	if quick {
		return []workload{
			{wide(100, noop, 0), 2, true},
			{chain(100, noop, 0), 2, false},
			{real, 2, false},
			{layered(100, 10, sleep, 50*time.Millisecond), 16, false},
		}, nil
	}
	return []workload{
		{wide(1, noop, 0), 2, false},
		{wide(100, noop, 0), 2, true},
		{wide(1000, noop, 0), 2, true},
		{wide(10_000, noop, 0), 2, true},
		{layered(1000, 50, noop, 0), 2, false},
		{chain(1000, noop, 0), 2, false},
		{real, 2, false},
		{layered(1000, 50, sleep, 50*time.Millisecond), 16, false},
	}, nil
}

type options struct {
	reps         int
	quick, write bool
	only, tools  *regexp.Regexp
	timeout      time.Duration
	database     string
	pgSettings   string
	base         string
}

func run(o options) error {
	reps, quick, write, only, timeout := o.reps, o.quick, o.write, o.only, o.timeout
	work, err := os.MkdirTemp("", "sortie-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin, err := benchkit.Build(work)
	if err != nil {
		return err
	}
	repo := filepath.Join(work, "repo")
	if err := benchkit.Repo(repo); err != nil {
		return err
	}
	tools := findTools(bin, repo)
	if o.base != "" {
		b := *tools[0]
		b.name, b.path = "sortie-base", o.base
		tools = append([]*tool{tools[0], &b}, tools[1:]...)
	}
	var dbNote string
	if o.database != "sqlite" {
		pg, err := benchkit.StartPostgres(o.pgSettings)
		if err != nil {
			return err
		}
		defer pg.Stop()
		dbNote = fmt.Sprintf("`sortie-pg` is `sortie run --quiet --database postgres://...` on %s, a cluster started for the bench on the same machine (unix socket only; settings `%s` and PostgreSQL's defaults for the rest, whose fsync, synchronous_commit and full_page_writes are on), a fresh database per run; its CPU time includes the PostgreSQL server's (the postmaster and its processes, from /proc) during the run. ", pg.Version, pg.Settings)
		pgt := pgTool(bin, repo, pg)
		if o.database == "postgres" {
			tools = slices.DeleteFunc(tools, func(t *tool) bool { return strings.HasPrefix(t.name, "sortie") })
		}
		tools = append([]*tool{pgt}, tools...)
		if o.database == "both" {
			// sortie first: the tables' ratios are against it.
			tools[0], tools[1] = tools[1], tools[0]
		}
	}
	tools = slices.DeleteFunc(tools, func(t *tool) bool { return !o.tools.MatchString(t.name) })
	load0 := loadavg()
	var missing []string
	var present []*tool
	for _, t := range tools {
		if t.path == "" {
			missing = append(missing, fmt.Sprintf("%s (install: `%s`)", t.name, t.install))
			continue
		}
		present = append(present, t)
	}
	all, err := workloads(quick)
	if err != nil {
		return err
	}
	var ws []workload
	for _, w := range all {
		if only.MatchString(w.name()) {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return fmt.Errorf("-only %q matches no workload", only)
	}
	var results []*result
	for _, w := range ws {
		r := &result{w: w, samples: map[string][]sample{}}
		// Alternate the tools within each repetition, so that a slow
		// moment of the machine does not fall on one tool only.
		timedOut := map[string]bool{}
		for rep := range reps {
			for _, t := range present {
				if timedOut[t.name] {
					continue // once is enough to know it is too slow here
				}
				dir := filepath.Join(work, fmt.Sprintf("%s-%d-%s-%d", w.dag.family, w.dag.n(), t.name, rep))
				s := runOnce(t, w, dir, timeout)
				if t.after != nil {
					if err := t.after(dir); err != nil && s.failed == "" {
						s.failed = err.Error()
					}
				}
				r.samples[t.name] = append(r.samples[t.name], s)
				timedOut[t.name] = strings.HasPrefix(s.failed, "timeout")
				fmt.Fprintf(os.Stderr, "%-45s %-8s rep %d: %v %s\n", w.name(), t.name, rep+1, s.wall.Round(time.Millisecond), s.failed)
				os.RemoveAll(dir)
			}
		}
		results = append(results, r)
	}
	report := render(results, present, missing, command(), load0+"; at the end: "+loadavg(), dbNote)
	fmt.Print(report)
	if write {
		if err := replaceGenerated("docs/benchmarks.md", report); err != nil {
			return err
		}
		// The chart is of the whole wide family: a run of some workloads
		// only leaves it as it was.
		if only.String() == "" {
			if err := os.WriteFile("docs/bench-peers.svg", []byte(chart(results, present)), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

func runOnce(t *tool, w workload, dir string, timeout time.Duration) sample {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sample{failed: err.Error()}
	}
	if err := t.write(dir, w.dag, w.parallel); err != nil {
		return sample{failed: err.Error()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := t.command(t.path, dir, w.parallel)
	rusage := filepath.Join(dir, ".rusage")
	if strings.HasPrefix(t.name, "sortie") {
		// Sortie writes its own CPU time and its children's there as it
		// exits (older builds ignore the variable).
		env := c.Env
		if env == nil {
			env = os.Environ()
		}
		c.Env = append(env, "SORTIE_RUSAGE="+rusage)
	}
	cmd, usage, err := benchkit.Measure(c, dir)
	if err != nil {
		return sample{failed: err.Error()}
	}
	// Output goes to /dev/null for every tool: no pipe, no copying
	// goroutine in the harness.
	cmd.Stdout = nil
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var db0 time.Duration
	if t.serverCPU != nil {
		if db0, err = t.serverCPU(); err != nil {
			return sample{failed: err.Error()}
		}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return sample{failed: err.Error()}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return sample{failed: "timeout after " + timeout.String()}
	}
	s := sample{wall: time.Since(start)}
	if u, uerr := usage(cmd.ProcessState); uerr == nil {
		s.cpu, s.rss = u.CPU, u.MaxRSS
	} else if err == nil {
		s.failed = uerr.Error()
	}
	if t.serverCPU != nil {
		db1, derr := t.serverCPU()
		if derr != nil && err == nil {
			s.failed = derr.Error()
		}
		s.dbcpu = db1 - db0
		s.cpu += s.dbcpu
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 200 {
			msg = msg[len(msg)-200:]
		}
		s.failed = fmt.Sprintf("%v: %s", err, msg)
	}
	if strings.HasPrefix(t.name, "sortie") && s.failed == "" {
		s.latency, s.edges, err = fromReport(filepath.Join(dir, "report.json"), w.dag, start, start.Add(s.wall))
		if err != nil {
			s.failed = err.Error()
		}
		s.own, s.waits = ownUsage(rusage)
	}
	return s
}

// ownUsage is the CPU time Sortie used itself and its threads' voluntary
// context switches, from the file SORTIE_RUSAGE named (see
// cmd/sortie/rusage.go); 0 for what it does not hold (an older build).
func ownUsage(path string) (time.Duration, int64) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0
	}
	var u struct {
		User     time.Duration `json:"self_user_ns"`
		Sys      time.Duration `json:"self_sys_ns"`
		Switches int64         `json:"self_voluntary_switches"`
	}
	if json.Unmarshal(data, &u) != nil {
		return 0, 0
	}
	return u.User + u.Sys, u.Switches
}

// edges is where a run spends the time before its first job (the
// bootstrap's checkout aside) and after its last, from the harness's clock
// and the report's times (the same clock, the machine's): the process
// started to the buildset started (config, database, coordinator, mirror
// fetch, the buildset and its builds inserted, started); to the bootstrap
// job started; the bootstrap (the checkout); its end to the first other
// job started; the last job's end to the buildset's; that to the process's
// exit (report, summary, closing). The process start is the harness's
// just before it forks GNU time, which then execs the tool.
type edges [6]time.Duration

var edgeNames = [6]string{"to buildset start", "to bootstrap start", "bootstrap", "to first job", "to buildset end", "to exit"}

// fromReport reads Sortie's report: for each job, its start minus the end
// of its last dependency; and the run's edges, the process having run from
// start to exit.
func fromReport(path string, d *dag, start, exit time.Time) ([]time.Duration, edges, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, edges{}, err
	}
	var rep struct {
		Result     string     `json:"result"`
		StartedAt  *time.Time `json:"started_at"`
		FinishedAt *time.Time `json:"finished_at"`
		Builds     []struct {
			Job        string     `json:"job"`
			StartedAt  *time.Time `json:"started_at"`
			FinishedAt *time.Time `json:"finished_at"`
		} `json:"builds"`
	}
	var e edges
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, e, err
	}
	if rep.Result != "SUCCESS" {
		return nil, e, errors.New("buildset " + rep.Result)
	}
	begin, end := map[string]time.Time{}, map[string]time.Time{}
	var first, last time.Time
	for _, b := range rep.Builds {
		begin[b.Job], end[b.Job] = *b.StartedAt, *b.FinishedAt
		if b.Job == d.jobs[0] {
			continue
		}
		if first.IsZero() || b.StartedAt.Before(first) {
			first = *b.StartedAt
		}
		if b.FinishedAt.After(last) {
			last = *b.FinishedAt
		}
	}
	boot := d.jobs[0]
	e = edges{rep.StartedAt.Sub(start), begin[boot].Sub(*rep.StartedAt), end[boot].Sub(begin[boot]),
		first.Sub(end[boot]), rep.FinishedAt.Sub(last), exit.Sub(*rep.FinishedAt)}
	var out []time.Duration
	for _, j := range d.jobs[1:] {
		var ready time.Time
		for _, dep := range d.deps[j] {
			if end[dep].After(ready) {
				ready = end[dep]
			}
		}
		out = append(out, begin[j].Sub(ready))
	}
	return out, e, nil
}

func medianOf(ss []sample, f func(sample) float64) (float64, bool) {
	var xs []float64
	for _, s := range ss {
		if s.failed != "" {
			return 0, false
		}
		xs = append(xs, f(s))
	}
	if len(xs) == 0 {
		return 0, false
	}
	slices.Sort(xs)
	return xs[len(xs)/2], true
}

// pairedOf is the median over the repetitions of f(a's run) / f(b's run
// of the same repetition): the two ran one after the other, so a slow
// moment of the machine that lasts a few seconds weighs on both, where
// it may shift one median and not the other.
func pairedOf(a, b []sample, f func(sample) float64) (float64, bool) {
	if len(a) != len(b) || len(a) == 0 {
		return 0, false
	}
	var xs []float64
	for i := range a {
		if a[i].failed != "" || b[i].failed != "" || f(b[i]) == 0 {
			return 0, false
		}
		xs = append(xs, f(a[i])/f(b[i]))
	}
	slices.Sort(xs)
	return xs[len(xs)/2], true
}

func wallOf(s sample) float64  { return s.wall.Seconds() }
func cpuOf(s sample) float64   { return s.cpu.Seconds() }
func ownOf(s sample) float64   { return s.own.Seconds() }
func waitsOf(s sample) float64 { return float64(s.waits) }
func rssOf(s sample) float64   { return float64(s.rss) / (1 << 20) }

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// command is how this bench was run, to print with its figures.
func command() string {
	args := []string{"go", "run", "./bench"}
	for _, a := range os.Args[1:] {
		if strings.ContainsAny(a, " |'\"*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}

// loadavg is the machine's load (1, 5 and 15 minutes): on a shared
// machine it says how much the wall times are to be trusted.
func loadavg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// sortieTools are the quiet runs of Sortie, whose report is read.
var sortieTools = []string{"sortie", "sortie-base", "sortie-pg"}

func render(results []*result, tools []*tool, missing []string, cmd, load, dbNote string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Generated by `%s` on %s: %s; load average at the start: %s.\n\n",
		cmd, time.Now().UTC().Format("2006-01-02"), benchkit.Machine(), load)
	if len(missing) > 0 {
		fmt.Fprintf(&b, "Not installed, so not measured: %s.\n\n", strings.Join(missing, "; "))
	}
	b.WriteString("How each tool runs: every tool's output goes to /dev/null. `sortie` is `sortie run --quiet` (a line per build that did not succeed, and the result: as quiet as `make -s`, `ninja --quiet`, `task --silent`); `sortie-verbose` is the same run with its default output (a line per start and end, and the summary table). " + dbNote + "ninja starts `/bin/sh -c` for each edge, so its figure includes two processes per job where make, for a one-word recipe, execs it directly. Each tool runs under GNU time, which forks it, so that its peak memory is its own.\n\n")
	b.WriteString("Wall time of the whole run, median of the repetitions (in parentheses: Sortie's time / the peer's; below 1 means Sortie is faster).\n\n")
	table(&b, results, tools, wallOf, "%.3fs", true)
	b.WriteString("\nCPU time, user and system, of the tool and every process it started (median): on a shared machine it is steadier than wall time. In parentheses, Sortie's / the peer's.\n\n")
	table(&b, results, tools, cpuOf, "%.3fs", false)
	b.WriteString("\nPeak resident memory of the tool's process (MiB, median):\n\n| workload |")
	for _, t := range tools {
		fmt.Fprintf(&b, " %s |", t.name)
	}
	b.WriteString("\n|---|")
	for range tools {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %s |", r.w.name())
		for _, t := range tools {
			if m, ok := medianOf(r.samples[t.name], rssOf); ok {
				fmt.Fprintf(&b, " %.1f |", m)
			} else {
				b.WriteString(" - |")
			}
		}
		b.WriteString("\n")
	}
	b.WriteString("\nSortie's dispatch latency (a job's start minus the end of its last dependency, from the report; median over the repetitions of each run's percentile). It includes waiting for a free slot, so it is the scheduler's own latency only where slots are free, as in the chain:\n\n| workload | p50 | p99 |\n|---|---|---|\n")
	for _, r := range results {
		for _, name := range sortieTools {
			var p50, p99 []time.Duration
			for _, s := range r.samples[name] {
				if s.failed == "" {
					p50 = append(p50, percentile(s.latency, 0.50))
					p99 = append(p99, percentile(s.latency, 0.99))
				}
			}
			label := r.w.name()
			if name != "sortie" {
				label += " (" + name + ")"
			}
			if len(p50) > 0 {
				fmt.Fprintf(&b, "| %s | %.2f ms | %.2f ms |\n", label, ms(percentile(p50, 0.5)), ms(percentile(p99, 0.5)))
			}
		}
	}
	b.WriteString("\nSortie's time outside the jobs (ms, median): from the process's start (the harness's clock, just before it forks GNU time) to the buildset's start in the report (config, database, mirror fetch, the buildset and its builds inserted), to the bootstrap job's start, the bootstrap (the buildset's checkout), from its end to the first other job's start; and from the last job's end to the buildset's end, and to the process's exit (report, summary, closing):\n\n| workload |")
	for _, n := range edgeNames {
		fmt.Fprintf(&b, " %s |", n)
	}
	b.WriteString("\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		for _, name := range sortieTools {
			label := r.w.name()
			if name != "sortie" {
				label += " (" + name + ")"
			}
			ss := r.samples[name]
			if _, ok := medianOf(ss, wallOf); !ok {
				continue
			}
			fmt.Fprintf(&b, "| %s |", label)
			for i := range edgeNames {
				m, _ := medianOf(ss, func(s sample) float64 { return ms(s.edges[i]) })
				fmt.Fprintf(&b, " %.1f |", m)
			}
			b.WriteString("\n")
		}
	}
	b.WriteString("\nTargets (the per-job cost; Sortie keeps full durability: an attempt is in the store before its process starts, its result before anything depends on it):\n\n")
	for _, r := range results {
		for _, name := range sortieTools {
			targets(&b, r, name)
		}
	}
	if slices.ContainsFunc(tools, func(t *tool) bool { return t.name == "sortie-pg" }) {
		b.WriteString("\nPostgreSQL against SQLite (sortie-pg / sortie, medians of this run), and the PostgreSQL server's share of sortie-pg's CPU time:\n\n| workload | wall | CPU | server CPU |\n|---|---|---|---|\n")
		for _, r := range results {
			pw, ok1 := medianOf(r.samples["sortie-pg"], wallOf)
			pc, ok2 := medianOf(r.samples["sortie-pg"], cpuOf)
			dc, _ := medianOf(r.samples["sortie-pg"], func(s sample) float64 { return s.dbcpu.Seconds() })
			sw, ok3 := medianOf(r.samples["sortie"], wallOf)
			sc, ok4 := medianOf(r.samples["sortie"], cpuOf)
			switch {
			case ok1 && ok2 && ok3 && ok4:
				fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.3fs |\n", r.w.name(), pw/sw, pc/sc, dc)
			case ok1 && ok2:
				fmt.Fprintf(&b, "| %s | - | - | %.3fs |\n", r.w.name(), dc)
			}
		}
	}
	return b.String()
}

// targets writes the lines of the goals that workload r has, for the
// Sortie tool name (sortie, sortie-pg).
func targets(b *strings.Builder, r *result, name string) {
	s, ok := medianOf(r.samples[name], wallOf)
	mk, mok := medianOf(r.samples["make"], wallOf)
	if !ok || !mok {
		return
	}
	n := r.w.dag.n()
	label := r.w.name()
	if name != "sortie" {
		label += " (" + name + ")"
	}
	// Beside the ratio of the medians, the median of the repetitions'
	// own ratios, steadier when the machine slows down for a while.
	paired := func(digits int) string {
		p, ok := pairedOf(r.samples[name], r.samples["make"], wallOf)
		if !ok {
			return "."
		}
		return fmt.Sprintf("; run by run (each run / make's beside it, median), %.*f.", digits, p)
	}
	switch {
	case r.w.dag.family == "wide" && n == 10_000 && r.w.dag.sleep == 0:
		fmt.Fprintf(b, "- %s: Sortie / make wall = **%.2f** (target ≤ 1.30)%s\n", label, s/mk, paired(2))
		sc, _ := medianOf(r.samples[name], cpuOf)
		mc, _ := medianOf(r.samples["make"], cpuOf)
		// Both start the same n processes; what Sortie spends beyond
		// make is its own cost less make's own. The bench measures
		// Sortie's own (SORTIE_RUSAGE), not make's: make's is what is
		// left, if the jobs cost both tools the same.
		beyond := (sc - mc) / float64(n) * 1e6
		if own, ok := medianOf(r.samples[name], ownOf); ok && own > 0 {
			perJob := own / float64(n) * 1e6
			fmt.Fprintf(b, "- %s: Sortie's CPU beyond make's = **%.0f µs/job** (so make's own is about %.0f, if the jobs cost both tools the same).\n", label, beyond, perJob-beyond)
			fmt.Fprintf(b, "- %s: Sortie's own CPU = **%.0f µs/job** (target ≤ 250 µs/job).\n", label, perJob)
		} else {
			fmt.Fprintf(b, "- %s: Sortie's CPU beyond make's = **%.0f µs/job**.\n", label, beyond)
		}
		if m, ok := medianOf(r.samples[name], rssOf); ok {
			fmt.Fprintf(b, "- %s: peak memory %.1f MiB (target < 150 MB).\n", label, m)
		}
		// The repetitions one by one, in the order they ran: a median
		// hides whether the runs vary together or apart.
		walls := func(ss []sample) string {
			var w []string
			for _, s := range ss {
				w = append(w, fmt.Sprintf("%.2f", s.wall.Seconds()))
			}
			return strings.Join(w, " ")
		}
		fmt.Fprintf(b, "- %s: each repetition's wall (s), Sortie %s; make %s.\n", label, walls(r.samples[name]), walls(r.samples["make"]))
		if sw, ok := medianOf(r.samples[name], waitsOf); ok && sw > 0 {
			var w []string
			for _, s := range r.samples[name] {
				w = append(w, fmt.Sprintf("%.1f", float64(s.waits)/float64(n)))
			}
			fmt.Fprintf(b, "- %s: Sortie's threads' voluntary context switches = %.1f a job (each repetition: %s).\n", label, sw/float64(n), strings.Join(w, " "))
		}
	case r.w.dag.family == "chain" && n == 1000 && r.w.dag.sleep == 0:
		fmt.Fprintf(b, "- %s: Sortie / make wall = **%.2f** (target ≤ 1.40)%s\n", label, s/mk, paired(2))
	case r.w.dag.sleep > 0:
		bound := r.w.dag.bound(r.w.parallel).Seconds()
		fmt.Fprintf(b, "- %s: Sortie / make makespan = **%.3f** (target ≤ 1.03); Sortie / lower bound = %.3f, make / lower bound = %.3f%s\n", label, s/mk, s/bound, mk/bound, paired(3))
	}
}

// table writes one markdown row per workload of f's median per tool, with
// Sortie's / the peer's in parentheses, and the lower bound when bound is
// set.
func table(b *strings.Builder, results []*result, tools []*tool, f func(sample) float64, format string, bound bool) {
	b.WriteString("| workload |")
	for _, t := range tools {
		fmt.Fprintf(b, " %s |", t.name)
	}
	if bound {
		b.WriteString(" bound |")
	}
	b.WriteString("\n|---|")
	for range tools {
		b.WriteString("---|")
	}
	if bound {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range results {
		fmt.Fprintf(b, "| %s |", r.w.name())
		sortie, sok := medianOf(r.samples["sortie"], f)
		for _, t := range tools {
			m, ok := medianOf(r.samples[t.name], f)
			switch {
			case !ok:
				fmt.Fprintf(b, " failed: %s |", firstFailure(r.samples[t.name]))
			case t.name == "sortie" || t.name == "sortie-pg" || !sok || m == 0:
				// sortie-pg against sortie has a table of its own.
				fmt.Fprintf(b, " "+format+" |", m)
			default:
				fmt.Fprintf(b, " "+format+" (%.2f) |", m, sortie/m)
			}
		}
		switch {
		case !bound:
		case r.w.dag.sleep > 0:
			fmt.Fprintf(b, " %.3fs |", r.w.dag.bound(r.w.parallel).Seconds())
		default:
			b.WriteString(" - |")
		}
		b.WriteString("\n")
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func firstFailure(ss []sample) string {
	for _, s := range ss {
		if s.failed != "" {
			return strings.ReplaceAll(s.failed, "|", "/")
		}
	}
	return ""
}

const (
	startMark = "<!-- bench:start (generated by go run ./bench -write; edit above or below) -->"
	endMark   = "<!-- bench:end -->"
)

// replaceGenerated puts text between the markers of the file.
func replaceGenerated(path, text string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(data)
	i, j := strings.Index(s, startMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q markers", path, startMark, endMark)
	}
	s = s[:i+len(startMark)] + "\n" + text + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
