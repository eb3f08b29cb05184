package zuulimport_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/zuulimport"
)

// FuzzImport feeds arbitrary Zuul files to the importer: it must never
// panic, fail only with an *Error, and what it writes must load.
func FuzzImport(f *testing.F) {
	for _, name := range []string{"infra-prod.yaml", "pipelines.yaml", "project.yaml"} {
		data, err := os.ReadFile(filepath.Join("testdata/opendev/zuul.d", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("- pipeline: {name: p, trigger: {timer: [{time: '1 2 3 4 5-6/2 7 8'}]}}\n- job: {name: boot, parent: boot, dependencies: [boot], files: ['(']}\n- project: {p: {jobs: [boot, {boot: {dependencies: [x]}}]}}\n"))
	f.Add([]byte("- job: {name: a-p, vars: {playbook_name: '{{ x }}'}}\n- job: {name: a, parent: a-p}\n- job: {name: boot}\n- pipeline: {name: p}\n- project: {p: {jobs: [boot, {a: {files: x}}, {a: {semaphores: [{name: s}]}}]}}\n"))
	f.Add([]byte("- job: {name: boot}\n- job: {name: 'a b', timeout: 0, attempts: x}\n- pipeline: {name: 'p/q', manager: weird, precedence: top}\n- project: {'p/q': {jobs: [boot, 'a b']}}\n"))
	f.Add([]byte("- job: {name: boot}\n- job: {name: a, dependencies: [b]}\n- job: {name: b, dependencies: [a, b]}\n- job: {name: t, abstract: true, dependencies: [c]}\n- job: {name: c, parent: t}\n- pipeline: {name: p}\n- project: {p: {jobs: [boot, a, b, c, {c: {dependencies: [a]}}]}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "zuul.yaml")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := zuulimport.Import([]string{p}, zuulimport.Options{Bootstrap: "boot"})
		if err != nil {
			var ie *zuulimport.Error
			if !errors.As(err, &ie) {
				t.Fatalf("an error that is not an *Error: %T %v", err, err)
			}
			return
		}
		if _, err := config.Parse("imported.yaml", res.Config); err != nil {
			t.Fatalf("the config written does not load:\n%v\n%s", err, res.Config)
		}
	})
}
