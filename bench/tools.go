package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/bench/internal/benchkit"
)

// tool runs a dag at a parallelism, from files it writes into dir.
type tool struct {
	name string
	// path of the program; "" when not installed.
	path string
	// how to install it, for the "not installed" note.
	install string
	write   func(dir string, d *dag, parallel int) error
	command func(path, dir string, parallel int) *exec.Cmd
	// after, when set, runs after each run (e.g. drops its database).
	after func(dir string) error
	// serverCPU, when set, is the CPU time so far of a server the tool
	// uses but did not start (PostgreSQL): its difference across a run is
	// added to the tool's CPU time.
	serverCPU func() (time.Duration, error)
}

// sortieRun runs the bench pipeline in dir at parallelism p, keeping
// everything as in production (the state dir, a log per attempt that
// writes, the report).
func sortieRun(path, dir string, p int, extra ...string) *exec.Cmd {
	args := []string{"run", "--config", filepath.Join(dir, "sortie.yaml"), "--pipeline", "bench",
		"--state-dir", filepath.Join(dir, "state"), "--max-parallel", fmt.Sprint(p), "--report", filepath.Join(dir, "report.json")}
	return exec.Command(path, append(args, extra...)...)
}

// pgTool is `sortie run --quiet` on PostgreSQL: each run on a fresh
// database of the cluster pg, named for its dir, dropped after it.
func pgTool(sortieBin, repo string, pg *benchkit.Postgres) *tool {
	dbName := func(dir string) string { return strings.ReplaceAll(filepath.Base(dir), "-", "_") }
	return &tool{name: "sortie-pg", path: sortieBin,
		write: func(dir string, d *dag, p int) error {
			if _, err := pg.NewDatabase(dbName(dir)); err != nil {
				return err
			}
			return writeSortie(dir, d, repo)
		},
		command: func(path, dir string, p int) *exec.Cmd {
			return sortieRun(path, dir, p, "--quiet", "--database", pg.URL(dbName(dir)))
		},
		after:     func(dir string) error { return pg.DropDatabase(dbName(dir)) },
		serverCPU: pg.CPU,
	}
}

func findTools(sortieBin, repo string) []*tool {
	look := func(names ...string) string {
		for _, n := range names {
			if p, err := exec.LookPath(n); err == nil {
				return p
			}
			if _, err := os.Stat(n); err == nil && filepath.IsAbs(n) {
				return n
			}
		}
		return ""
	}
	gopath, _ := exec.Command("go", "env", "GOPATH").Output()
	cwd, _ := os.Getwd()
	return []*tool{
		{name: "sortie", path: sortieBin, write: func(dir string, d *dag, p int) error { return writeSortie(dir, d, repo) },
			command: func(path, dir string, p int) *exec.Cmd { return sortieRun(path, dir, p, "--quiet") }},
		{name: "sortie-verbose", path: sortieBin, write: func(dir string, d *dag, p int) error { return writeSortie(dir, d, repo) },
			command: func(path, dir string, p int) *exec.Cmd { return sortieRun(path, dir, p) }},
		{name: "make", path: look("make"), install: "apt-get install make", write: writeMake,
			command: func(path, dir string, p int) *exec.Cmd {
				return exec.Command(path, "-s", "-j", fmt.Sprint(p), "-C", dir, "all")
			}},
		{name: "ninja", path: look("ninja"), install: "apt-get install ninja-build", write: writeNinja,
			command: func(path, dir string, p int) *exec.Cmd {
				return exec.Command(path, "-j", fmt.Sprint(p), "-C", dir, "--quiet")
			}},
		{name: "go-task", path: look("task", filepath.Join(strings.TrimSpace(string(gopath)), "bin", "task")),
			install: "go install github.com/go-task/task/v3/cmd/task@v3.54.0", write: writeTask,
			command: func(path, dir string, p int) *exec.Cmd {
				return exec.Command(path, "--silent", "--concurrency", fmt.Sprint(p), "-d", dir, "all")
			}},
		{name: "dagu", path: look("dagu", filepath.Join(cwd, "bench/peers/node_modules/@dagu-org/dagu-linux-x64/bin/dagu")),
			install: "npm install --prefix bench/peers @dagu-org/dagu-linux-x64@1.30.2", write: writeDagu,
			command: func(path, dir string, p int) *exec.Cmd {
				c := exec.Command(path, "start", filepath.Join(dir, "dag.yaml"))
				c.Env = append(os.Environ(), "DAGU_HOME="+filepath.Join(dir, "dagu-home"))
				return c
			}},
	}
}

func writeSortie(dir string, d *dag, repo string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "source: {url: %s}\njobs:\n  boot: {bootstrap: true, install: [\"true\"], run: %q}\n", repo, d.cmd)
	for _, j := range d.jobs[1:] {
		fmt.Fprintf(&b, "  %s: {run: %q", j, d.cmd)
		if deps := d.deps[j][1:]; len(deps) > 0 {
			fmt.Fprintf(&b, ", dependencies: [%s]", strings.Join(deps, ", "))
		}
		b.WriteString("}\n")
	}
	fmt.Fprintf(&b, "pipelines:\n  bench: {jobs: [%s]}\n", strings.Join(d.jobs[1:], ", "))
	return os.WriteFile(filepath.Join(dir, "sortie.yaml"), []byte(b.String()), 0o644)
}

func writeMake(dir string, d *dag, _ int) error {
	var b strings.Builder
	fmt.Fprintf(&b, ".PHONY: all %s\nall: %s\n", strings.Join(d.jobs, " "), strings.Join(d.jobs[1:], " "))
	for _, j := range d.jobs {
		fmt.Fprintf(&b, "%s: %s\n\t@%s\n", j, strings.Join(d.deps[j], " "), d.cmd)
	}
	return os.WriteFile(filepath.Join(dir, "Makefile"), []byte(b.String()), 0o644)
}

func writeNinja(dir string, d *dag, _ int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "rule r\n  command = %s\n", d.cmd)
	for _, j := range d.jobs {
		// Outputs are never made, so every edge runs once per invocation;
		// order-only dependencies give the ordering.
		fmt.Fprintf(&b, "build %s: r", j)
		if deps := d.deps[j]; len(deps) > 0 {
			fmt.Fprintf(&b, " || %s", strings.Join(deps, " "))
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "build all: phony %s\ndefault all\n", strings.Join(d.jobs[1:], " "))
	return os.WriteFile(filepath.Join(dir, "build.ninja"), []byte(b.String()), 0o644)
}

func writeTask(dir string, d *dag, _ int) error {
	var b strings.Builder
	// run: once, or a dependency shared by several tasks runs once per
	// dependent. go-task refuses to call one task more than 1,000 times,
	// even with run: once, so the bootstrap is not every job's dependency
	// here: "all" runs it first, then the rest, which is the same order.
	b.WriteString("version: '3'\nrun: once\ntasks:\n")
	for _, j := range d.jobs {
		fmt.Fprintf(&b, "  %s:\n    cmds: [%q]\n", j, d.cmd)
		if deps := d.deps[j]; len(deps) > 1 {
			fmt.Fprintf(&b, "    deps: [%s]\n", strings.Join(deps[1:], ", "))
		}
	}
	fmt.Fprintf(&b, "  rest:\n    deps: [%s]\n", strings.Join(d.jobs[1:], ", "))
	b.WriteString("  all:\n    cmds: [{task: boot}, {task: rest}]\n")
	return os.WriteFile(filepath.Join(dir, "Taskfile.yml"), []byte(b.String()), 0o644)
}

func writeDagu(dir string, d *dag, parallel int) error {
	var b strings.Builder
	// type: graph runs steps by their dependencies, maxActiveSteps at once;
	// without it Dagu runs the steps one after another.
	fmt.Fprintf(&b, "type: graph\nmaxActiveSteps: %d\nsteps:\n", parallel)
	for _, j := range d.jobs {
		fmt.Fprintf(&b, "  - name: %s\n    command: %q\n", j, d.cmd)
		if deps := d.deps[j]; len(deps) > 0 {
			fmt.Fprintf(&b, "    depends: [%s]\n", strings.Join(deps, ", "))
		}
	}
	return os.WriteFile(filepath.Join(dir, "dag.yaml"), []byte(b.String()), 0o644)
}
