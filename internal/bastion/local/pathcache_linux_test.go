package local

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// TestPathCacheSeesChanges: the cache answers as a search would after
// every kind of change to a directory of PATH, and only searches again
// after one.
func TestPathCacheSeesChanges(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	early, missing, late := filepath.Join(tmp, "early"), filepath.Join(tmp, "miss", "ing"), filepath.Join(tmp, "late")
	for _, d := range []string{early, late} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	do := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(late, "prog"), 0o755)
	pathVar := early + ":" + missing + ":" + late
	c := newPathCache()
	t.Cleanup(c.reset)
	searches := 0
	// want looks twice: the first must search (searched) or not, the
	// second must not.
	want := func(step, dir string, searched bool) {
		t.Helper()
		if searched {
			searches++
		}
		for i := range 2 {
			p, ok := c.look("prog", pathVar)
			if !ok || p != filepath.Join(dir, "prog") {
				t.Fatalf("%s: look %d = %q, %v; want it in %s", step, i, p, ok, dir)
			}
			if c.searches != searches {
				t.Fatalf("%s: look %d: %d searches, want %d", step, i, c.searches, searches)
			}
		}
	}
	want("first", late, true)
	write(filepath.Join(late, "prog"), 0o755) // its content only
	want("content changed", late, false)
	write(filepath.Join(early, "prog"), 0o644)
	want("created, not executable", late, true)
	do(os.Chmod(filepath.Join(early, "prog"), 0o755))
	want("made executable", early, true)
	do(os.Rename(filepath.Join(early, "prog"), filepath.Join(early, "prog.old")))
	want("renamed away", late, true)
	do(os.Mkdir(filepath.Dir(missing), 0o755))
	want("parent of a missing directory made", late, true)
	do(os.Mkdir(missing, 0o755))
	write(filepath.Join(missing, "prog"), 0o755)
	want("missing directory made", missing, true)
	write(filepath.Join(tmp, "staged"), 0o755)
	do(os.Rename(filepath.Join(tmp, "staged"), filepath.Join(early, "prog")))
	want("renamed in", early, true)
	do(os.Remove(filepath.Join(early, "prog")))
	want("removed", missing, true)
	do(os.Rename(early, early+".gone"))
	do(os.Mkdir(early, 0o755))
	write(filepath.Join(early, "prog"), 0o755)
	want("directory replaced", early, true)

	// A relative directory is the shell's: nothing found before it, and
	// nothing found after it is remembered.
	if p, ok := c.look("prog", "rel:"+late); ok {
		t.Errorf("relative directory first: found %q, want the shell's", p)
	}
	before := c.searches
	for range 2 {
		if p, ok := c.look("prog", late+"::rel"); !ok || p != filepath.Join(late, "prog") {
			t.Errorf("relative directory last: %q, %v", p, ok)
		}
	}
	if c.searches != before+2 {
		t.Errorf("a PATH with a relative directory was searched %d times in 2 looks", c.searches-before)
	}
}

// TestRunFindsWhatAJobInstalled: a program a job installs in a directory
// of PATH before the one where it was found is what the next job runs,
// as with sh.
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
