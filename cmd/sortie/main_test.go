package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
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

// leakChecked runs the tests, stops the PostgreSQL cluster pgtest may have
// started for them, then fails a run that passed if goroutines are left
// (goleak.VerifyTestMain would exit before testscript cleans up).
type leakChecked struct{ m *testing.M }

func (l leakChecked) Run() int { return pgtest.Main(l.m) }

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
