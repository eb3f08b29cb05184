//go:build linux

package local

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/bastion"
)

func TestDirectArgv(t *testing.T) {
	env := []string{"PATH=/nonexistent:/usr/bin:/bin"}
	for cmd, want := range map[string][]string{
		"true":                         {"/usr/bin/true"},
		"  sleep   0.5 ":               {"/usr/bin/sleep", "0.5"},
		"/bin/true":                    {"/bin/true"},
		"git -C /tmp/x log --oneline":  {"/usr/bin/git", "-C", "/tmp/x", "log", "--oneline"},
		"echo $HOME":                   nil, // expansion
		"echo 'a b'":                   nil, // quoting
		"true; false":                  nil, // list
		"true && false":                nil,
		"ls *.yaml":                    nil, // glob
		"echo hi > f":                  nil, // redirection
		"cd /tmp":                      nil, // builtin
		"exit 3":                       nil,
		": nothing":                    nil,
		"FOO=1 env":                    nil, // assignment
		"./deploy.sh":                  nil, // relative to the job's dir: the shell's
		"no-such-program-sortie-x":     nil, // not found: the shell says so
		"echo a\nb":                    nil, // two commands
		"ansible-playbook -e x=1 p.ya": nil, // "=" in a word: the shell's
		"":                             nil,
	} {
		path, argv, ok := directArgv(cmd, env)
		got := argv
		if ok {
			got = append([]string{path}, argv[1:]...)
			if w := strings.Fields(cmd)[0]; argv[0] != w {
				t.Errorf("directArgv(%q): argv[0] %q, want %q as sh passes it", cmd, argv[0], w)
			}
		}
		if !slices.Equal(got, want) || ok != (want != nil) {
			t.Errorf("directArgv(%q) = %q, %q, %v; want %q", cmd, path, argv, ok, want)
		}
	}
}

// TestDirectArgvRelativePath: sh looks in an empty or relative directory of
// PATH relative to the job's directory, so a program must not be looked
// for past one.
func TestDirectArgvRelativePath(t *testing.T) {
	for path, want := range map[string][]string{
		":/usr/bin":                  nil,
		"bin:/usr/bin":               nil,
		"/nonexistent::/usr/bin":     nil,
		"/usr/bin:":                  {"/usr/bin/env"},
		"/usr/bin:bin":               {"/usr/bin/env"},
		"/usr/bin/":                  {"/usr/bin//env"},
		"/nonexistent/../usr/bin":    nil, // sh's kernel walks "nonexistent"
		"/usr/bin%builtin:/usr/bin":  nil, // dash's mark
		"/nonexistent:/usr/bin%func": nil,
	} {
		p, _, ok := directArgv("env", []string{"PATH=" + path})
		var got []string
		if ok {
			got = []string{p}
		}
		if !slices.Equal(got, want) {
			t.Errorf("PATH=%s: directArgv(env) = %q, %v; want %q", path, p, ok, want)
		}
	}
	// What sh then runs is the job's.
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "env"), []byte("#!/bin/sh\necho the job env\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := pathEnv()
	env["PATH"] = "bin:" + env["PATH"]
	if o, log := run(t, context.Background(), bastion.Spec{Command: "env", Dir: dir, Env: env}); o.ExitCode != 0 || strings.TrimSpace(log) != "the job env" {
		t.Errorf("env with bin first in PATH: %+v %q, want the job's bin/env", o, log)
	}
}

// TestRunDirectLikeShell: a command started without the shell sees what it
// would have seen with it: the same environment (PWD included), directory,
// arguments and exit status; a missing program still gets sh's 127.
func TestRunDirectLikeShell(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := pathEnv("A", "1")
	_, direct := run(t, context.Background(), bastion.Spec{Command: "env", Dir: dir, Env: env})
	_, shell := run(t, context.Background(), bastion.Spec{Command: "env; true", Dir: dir, Env: env})
	sorted := func(s string) []string {
		l := strings.Split(strings.TrimSpace(s), "\n")
		slices.Sort(l)
		// Each run has an id of its own.
		return slices.DeleteFunc(l, func(kv string) bool {
			return strings.HasPrefix(kv, "_=") || strings.HasPrefix(kv, "SHLVL=") || strings.HasPrefix(kv, bastion.RunEnv+"=")
		})
	}
	if d, s := sorted(direct), sorted(shell); !slices.Equal(d, s) {
		t.Errorf("environment started directly:\n%q\nthrough sh:\n%q", d, s)
	}
	if !slices.Contains(sorted(direct), "PWD="+dir) {
		t.Errorf("no PWD=%s in %q", dir, direct)
	}
	// The program's argv[0] is the word as typed, as sh passes it.
	if o, log := run(t, context.Background(), bastion.Spec{Command: "cat /proc/self/cmdline", Env: env}); o.ExitCode != 0 || log != "cat\x00/proc/self/cmdline\x00" {
		t.Errorf("cat /proc/self/cmdline: %+v %q, want cat's own argv", o, log)
	}
	o, log := run(t, context.Background(), bastion.Spec{Command: "pwd", Dir: dir, Env: env})
	if o.ExitCode != 0 || strings.TrimSpace(log) != dir {
		t.Errorf("pwd: %+v %q, want %s", o, log, dir)
	}
	if o, _ := run(t, context.Background(), bastion.Spec{Command: "false", Env: env}); o.ExitCode != 1 {
		t.Errorf("false: %+v", o)
	}
	o, log = run(t, context.Background(), bastion.Spec{Command: "no-such-program-sortie-x arg", Env: env})
	if o.ExitCode != 127 || !strings.Contains(log, "not found") {
		t.Errorf("missing program: %+v %q, want 127 and sh's message", o, log)
	}

	// An absolute path is exec'd without a look first; what cannot be
	// exec'd is the shell's, as it was.
	o, log = run(t, context.Background(), bastion.Spec{Command: dir + "/missing arg", Env: env})
	if o.ExitCode != 127 || !strings.Contains(log, "not found") {
		t.Errorf("missing absolute path: %+v %q, want 127 and sh's message", o, log)
	}
	for name, c := range map[string]struct {
		content string
		mode    os.FileMode
		code    int
		log     string
	}{
		"not-executable": {"#!/bin/sh\necho ran\n", 0o644, 126, "ermission denied"},
		"no-shebang":     {"echo ran without a shebang\n", 0o755, 0, "ran without a shebang"},
		"shebang":        {"#!/bin/sh\necho ran with $0\n", 0o755, 0, "ran with " + filepath.Join(dir, "shebang")},
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(c.content), c.mode); err != nil {
			t.Fatal(err)
		}
		o, log := run(t, context.Background(), bastion.Spec{Command: path, Env: env})
		if o.ExitCode != c.code || !strings.Contains(log, c.log) {
			t.Errorf("%s: %+v %q, want exit %d and %q", name, o, log, c.code, c.log)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "a-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if o, log := run(t, context.Background(), bastion.Spec{Command: filepath.Join(dir, "a-dir"), Env: env}); o.ExitCode != 126 {
		t.Errorf("a directory: %+v %q, want 126", o, log)
	}
}

// TestRunFindsWhatAJobInstalled: a program a job installs in a directory
// of PATH before the one where it was found is what the next job runs,
// as with sh (the bootstrap job's tools): nothing may remember the
// first look.
func TestRunFindsWhatAJobInstalled(t *testing.T) {
	t.Parallel()
	early := t.TempDir()
	env := pathEnv()
	env["PATH"] = early + ":" + env["PATH"]
	o, log := run(t, context.Background(), bastion.Spec{Command: "hostname", Env: env})
	if o.ExitCode != 0 || strings.Contains(log, "installed") {
		t.Fatalf("hostname before: %+v %q", o, log)
	}
	install := "printf '#!/bin/sh\\necho installed hostname\\n' >" + early + "/hostname.tmp && chmod +x " + early + "/hostname.tmp && mv " + early + "/hostname.tmp " + early + "/hostname"
	if o, log := run(t, context.Background(), bastion.Spec{Command: install, Env: env}); o.ExitCode != 0 {
		t.Fatalf("install: %+v %q", o, log)
	}
	o, log = run(t, context.Background(), bastion.Spec{Command: "hostname", Env: env})
	if o.ExitCode != 0 || strings.TrimSpace(log) != "installed hostname" {
		t.Errorf("hostname after the install: %+v %q, want the installed one", o, log)
	}
}
