package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite the expected outputs of testdata/script/*.txtar")

// TestMain runs the tests, checking that no goroutine outlives them (the
// commands run in-process start servers, runs and lease renewals), or, in
// the copy of the test binary that testscript names "sortie", the command.
func TestMain(m *testing.M) {
	testscript.Main(leakChecked{m}, map[string]func(){
		"sortie": func() {
			os.Exit(code(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
		},
	})
}

// leakChecked runs the tests, then fails a run that passed if goroutines
// are left (goleak.VerifyTestMain would exit before testscript cleans up).
type leakChecked struct{ m *testing.M }

func (l leakChecked) Run() int {
	code := l.m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left after the tests passed: %v\n", err)
			return 1
		}
	}
	return code
}

// TestScripts runs the golden command-line scripts: config in, plan or error
// out. Run with -update to rewrite their expected outputs after a change
// that is meant to alter them, and review the diff.
func TestScripts(t *testing.T) {
	t.Parallel()
	examples, err := filepath.Abs("../../examples")
	if err != nil {
		t.Fatal(err)
	}
	zuul, err := filepath.Abs("../../internal/zuulimport/testdata")
	if err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		UpdateScripts:       *update,
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("EXAMPLES", examples) // the repository's own examples/
			env.Setenv("ZUUL", zuul)         // the importer's Zuul fixtures
			return nil
		},
	})
}
