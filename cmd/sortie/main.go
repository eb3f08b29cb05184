// Command sortie runs an infrastructure repository's deployment jobs as a
// dependency graph. main only wires: run parses the command line and calls
// the packages that do the work; tests call run in-process.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// exitError carries an exit code other than 1 (SPEC §3: 2 for bad usage or
// a config error). Its message has already been printed when msg is "".
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageError is bad usage: exit 2 with the message.
func usageError(format string, args ...any) error {
	return &exitError{code: 2, msg: fmt.Sprintf(format, args...)}
}

// exitCode is a bare exit code whose explanation was already printed.
func exitCode(code int) error { return &exitError{code: code} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tuneGC(os.Args[1:])
	c := code(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr)
	writeRusage(os.Args[1:])
	os.Exit(c)
}

// The garbage collector's settings for `sortie run`, a short-lived
// process whose live heap is small (some 20 MiB for 10,000 jobs): with
// Go's default GOGC of 100 it spent about 60-90 µs of CPU a job
// collecting, on a run that is CPU-bound when its jobs are short. GOGC
// 400 alone saved that but took the peak of a 10,000-job run from 110 to
// 165 MB; the soft limit caps the heap's growth, for the same saving at
// 125 MB. Past the limit (a graph several times larger, whose live heap
// nears it) the collector runs more often, at most half the CPU, and the
// run is slower than with the default: GOGC or GOMEMLIMIT in the
// environment then overrides both.
const (
	runGCPercent   = 400
	runMemoryLimit = 72 << 20
)

// tuneGC sets the collector for `sortie run`, unless the environment says
// otherwise. It is main's: tests that call run in-process keep theirs.
func tuneGC(args []string) {
	if len(args) == 0 || args[0] != "run" || os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	debug.SetGCPercent(runGCPercent)
	debug.SetMemoryLimit(runMemoryLimit)
}

// code prints err (if it has something to say) and returns the exit code.
func code(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stderr, "sortie: "+ee.msg)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "sortie: "+err.Error())
	return 1
}

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"validate", "check a config and print a summary", cmdValidate},
		{"plan", "show which jobs a change would run, in which order", cmdPlan},
		{"run", "run one buildset of a pipeline and wait for it", cmdRun},
		{"import", "turn a Zuul configuration into a Sortie config (import zuul PATH...)", cmdImport},
		{"history", "list past buildsets and their results", cmdHistory},
		{"serve", "run the server: pipelines, triggers, API", cmdServe},
		{"trigger", "ask a server for a buildset of a pipeline (--wait: and wait for it)", cmdTrigger},
		{"status", "show a server's pipelines, queues, pauses and semaphores", cmdStatus},
		{"logs", "print (-f: follow) the log of a build on a server", cmdLogs},
		{"cancel", "cancel a buildset, or one build of it, on a server", cmdCancel},
		{"pause", "pause all pipelines, or one, on a server", cmdPause},
		{"resume", "resume pipelines paused on a server", cmdResume},
		{"reload", "make a server load its config again", cmdReload},
		{"nodes", "list the servers sharing a server's database, the leader marked", cmdNodes},
		{"node", "forget a server that will not come back (node forget NAME)", cmdNode},
		{"rerun", "re-run the builds of a buildset that did not succeed", cmdRerun},
		{"version", "print the version, commit, Go version and schema version", cmdVersion},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		return cmdVersion(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return exitCode(2)
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	return usageError("unknown command %q; run sortie --help", args[0])
}

func usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Sortie runs deployment jobs as a dependency graph, in parallel, safely.\n\nUsage: sortie <command> [flags]\n\nCommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun sortie <command> --help for a command's flags.\n")
	io.WriteString(w, b.String())
}
