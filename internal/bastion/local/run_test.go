//go:build linux

package local

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

const grace = 200 * time.Millisecond

func pathEnv(extra ...string) map[string]string {
	env := map[string]string{"PATH": os.Getenv("PATH")}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}

func run(t *testing.T, ctx context.Context, spec bastion.Spec) (bastion.Outcome, string) {
	t.Helper()
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	if spec.Grace == 0 {
		spec.Grace = grace
	}
	var log buffer
	o, err := New(t.TempDir()).Run(ctx, spec, &log)
	if err != nil {
		t.Fatalf("Run(%q): %v", spec.Command, err)
	}
	return o, log.String()
}

func TestRunExitCodes(t *testing.T) {
	t.Parallel()
	for cmd, want := range map[string]int{
		"true":       0,
		"exit 3":     3,
		"kill -9 $$": -1,
	} {
		o, _ := run(t, context.Background(), bastion.Spec{Command: cmd})
		if o != (bastion.Outcome{ExitCode: want}) {
			t.Errorf("%q: %+v, want exit code %d", cmd, o, want)
		}
	}
}

func TestRunOutput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	o, log := run(t, context.Background(), bastion.Spec{
		Command: "echo out; echo err >&2; pwd",
		Dir:     dir,
		Env:     pathEnv(),
	})
	if o.ExitCode != 0 || log != "out\nerr\n"+dir+"\n" {
		t.Errorf("%+v, log %q", o, log)
	}
}

// The environment is this machine's values of bastion.BaseEnv, the job's
// Env over them, the run's id and, with Spec.Events, the events file
// (which the job cannot set), and nothing else of Sortie's.
func TestRunEnvIsExact(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env    map[string]string
		events io.Writer
	}{
		{env: map[string]string{"A": "1", "B": "two words", "EMPTY": "", "NL": "x\ny", "HOME": "/job/home", bastion.RunEnv: "forged"}},
		{env: map[string]string{}},
		{env: map[string]string{"PATH": "/job/bin", bastion.EventsEnv: "forged"}, events: io.Discard},
	} {
		env := c.env
		// The shell's own environment, before it adds PWD for its children.
		b := New(t.TempDir())
		var out buffer
		o, err := b.Run(context.Background(), bastion.Spec{
			Command: `/usr/bin/tr '\0' '\n' < /proc/$$/environ`,
			Env:     env,
			Events:  c.events,
		}, &out)
		if err != nil {
			t.Fatal(err)
		}
		log := out.String()
		all := map[string]string{}
		for _, k := range bastion.BaseEnv {
			if v, ok := os.LookupEnv(k); ok {
				all[k] = v
			}
		}
		for k, v := range env {
			all[k] = v
		}
		// Each run has an id of its own: take it from the log.
		all[bastion.RunEnv] = "?"
		if _, after, ok := strings.Cut(log, bastion.RunEnv+"="); ok {
			if id, _, _ := strings.Cut(after, "\n"); len(id) == 32 {
				all[bastion.RunEnv] = id
			}
		}
		if c.events != nil {
			// A file of this run's, in the bastion's events directory.
			all[bastion.EventsEnv] = "?"
			if _, after, ok := strings.Cut(log, bastion.EventsEnv+"="); ok {
				if p, _, _ := strings.Cut(after, "\n"); filepath.Dir(p) == b.path("events") && strings.HasSuffix(p, ".jsonl") {
					all[bastion.EventsEnv] = p
				}
			}
		}
		var want []string
		for k, v := range all {
			want = append(want, k+"="+v)
		}
		slices.Sort(want)
		got := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
		if log == "" {
			got = nil
		}
		// Sorting the output would split NL's value; compare as text.
		if o.ExitCode != 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("environment %q, want %q (%+v)", got, want, o)
		}
	}
}

func TestRunStartFailures(t *testing.T) {
	t.Parallel()
	b := New(t.TempDir())
	for name, spec := range map[string]bastion.Spec{
		"missing dir": {Command: "true", Dir: filepath.Join(t.TempDir(), "missing")},
		"bad env":     {Command: "true", Dir: t.TempDir(), Env: map[string]string{"A=B": "c"}},
	} {
		_, err := b.Run(context.Background(), spec, nil)
		if !bastion.IsInfra(err) {
			t.Errorf("%s: %v, want an InfraError", name, err)
		}
	}
}

func TestRunCanceledBeforeStart(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	marker := filepath.Join(t.TempDir(), "ran")
	o, _ := run(t, ctx, bastion.Spec{Command: "touch " + marker, Env: pathEnv()})
	if !o.Canceled {
		t.Errorf("%+v, want Canceled", o)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the command ran")
	}
}

func TestRunStreamsOutput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	var log buffer
	done := make(chan bastion.Outcome, 1)
	go func() {
		o, err := New(dir).Run(context.Background(), bastion.Spec{
			Command: `echo ready; while [ ! -e "$GATE" ]; do sleep 0.01; done; echo done`,
			Dir:     dir,
			Env:     pathEnv("GATE", gate),
		}, &log)
		if err != nil {
			t.Error(err)
		}
		done <- o
	}()
	eventually(t, "first line in the log", func() bool { return log.String() == "ready\n" })
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if o := <-done; o.ExitCode != 0 || log.String() != "ready\ndone\n" {
		t.Errorf("%+v, log %q", o, log.String())
	}
}

// tree is a script that starts a tree of processes and writes their pids,
// its own last, to $PIDS, then waits.
const tree = `
sleep 300 & echo $! >> "$PIDS"
sh -c 'sleep 300 & echo $! >> "$PIDS"; wait' & echo $! >> "$PIDS"
(sleep 300; echo never) & echo $! >> "$PIDS"
echo $$ >> "$PIDS"
wait
`

func TestRunTimeoutEndsTree(t *testing.T) {
	t.Parallel()
	for name, script := range map[string]string{
		"obeys TERM":   tree,
		"ignores TERM": "trap '' TERM\n" + tree,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pids := filepath.Join(t.TempDir(), "pids")
			// The timeout comes once the whole tree is up, however long
			// a loaded machine takes to start it.
			expire := make(chan struct{})
			type result struct {
				o   bastion.Outcome
				log string
			}
			done := make(chan result, 1)
			go func() {
				o, log := run(t, context.Background(), bastion.Spec{Command: script, Env: pathEnv("PIDS", pids), Expire: expire})
				done <- result{o, log}
			}()
			p := waitPids(t, pids, 5)
			close(expire)
			r := <-done
			if !r.o.TimedOut || r.o.Canceled || r.o.ExitCode != -1 {
				t.Errorf("%+v, want TimedOut", r.o)
			}
			if strings.Contains(r.log, "never") {
				t.Errorf("log %q", r.log)
			}
			assertGone(t, p)
		})
	}
}

// TestRunTimeoutFires: spec.Timeout's own timer ends a build.
func TestRunTimeoutFires(t *testing.T) {
	t.Parallel()
	o, _ := run(t, context.Background(), bastion.Spec{Command: "sleep 300", Env: pathEnv(), Timeout: 100 * time.Millisecond})
	if !o.TimedOut || o.Canceled || o.ExitCode != -1 {
		t.Errorf("%+v, want TimedOut", o)
	}
}

func TestRunCancelEndsTree(t *testing.T) {
	t.Parallel()
	pids := filepath.Join(t.TempDir(), "pids")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan bastion.Outcome, 1)
	go func() {
		o, _ := run(t, ctx, bastion.Spec{Command: tree, Env: pathEnv("PIDS", pids), Timeout: time.Minute})
		done <- o
	}()
	p := waitPids(t, pids, 5)
	cancel()
	if o := <-done; !o.Canceled || o.TimedOut || o.ExitCode != -1 {
		t.Errorf("%+v, want Canceled", o)
	}
	assertGone(t, p)
}

func TestRunEndsLeftovers(t *testing.T) {
	t.Parallel()
	for name, script := range map[string]string{
		"holding the output":   `sleep 300 & echo $! > "$PIDS"`,
		"not holding it":       `sleep 300 >/dev/null 2>&1 & echo $! > "$PIDS"`,
		"ignoring TERM":        `(trap '' TERM; sleep 300) & echo $! > "$PIDS"`,
		"after a failure":      `sleep 300 & echo $! > "$PIDS"; exit 4`,
		"grandchild of a tree": `sh -c 'sleep 300 & echo $! > "$PIDS"; wait' & while [ ! -s "$PIDS" ]; do sleep 0.01; done`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pids := filepath.Join(t.TempDir(), "pids")
			o, _ := run(t, context.Background(), bastion.Spec{Command: script, Env: pathEnv("PIDS", pids)})
			want := 0
			if strings.Contains(script, "exit 4") {
				want = 4
			}
			if o != (bastion.Outcome{ExitCode: want}) {
				t.Errorf("%+v, want exit code %d", o, want)
			}
			p := readPids(t, pids)
			if len(p) != 1 {
				t.Fatalf("pids %v", p)
			}
			assertGone(t, p)
		})
	}
}

func TestRunDoesNotWaitForEscapedProcess(t *testing.T) {
	t.Parallel()
	pids := filepath.Join(t.TempDir(), "pids")
	// setsid leaves the process group: out of Run's reach, and holding the
	// output pipe open. Run must still return.
	o, log := run(t, context.Background(), bastion.Spec{
		Command: `setsid sh -c 'echo $$ > "$PIDS"; echo escaped; exec sleep 300' & while [ ! -s "$PIDS" ]; do sleep 0.01; done; echo main done`,
		Env:     pathEnv("PIDS", pids),
	})
	p := readPids(t, pids)
	t.Cleanup(func() {
		for _, pid := range p {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if o.ExitCode != 0 || !strings.Contains(log, "main done\n") {
		t.Errorf("%+v, log %q", o, log)
	}
}

// A key given twice reaches the process once, with its last value, as
// exec.Cmd did: the run id appended last must win over one in the job's
// environment.
func TestLastWins(t *testing.T) {
	got := lastWins([]string{"A=1", "B=2", "A=3", "C=4", "B=5", "NOEQUALS"})
	want := []string{"A=3", "C=4", "B=5", "NOEQUALS"}
	if !slices.Equal(got, want) {
		t.Fatalf("lastWins = %q, want %q", got, want)
	}
}
