package zuulimport_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/zuulimport"
)

var update = flag.Bool("update", false, "rewrite the expected outputs under testdata")

// opendev are the options the OpenDev-shaped fixture is imported with.
var opendev = zuulimport.Options{Bootstrap: "infra-prod-bootstrap-bridge"}

func warningsText(ws []zuulimport.Warning) string {
	var b strings.Builder
	for _, w := range ws {
		b.WriteString(w.String() + "\n")
	}
	return b.String()
}

// golden compares got with the file want, or rewrites it with -update.
func golden(t *testing.T, want string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(want, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	data, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != string(got) {
		t.Errorf("%s differs (run with -update and review the diff):\n--- got\n%s", want, got)
	}
}

// TestOpenDev imports the OpenDev-shaped fixture: its config and warnings
// are golden, and the config loads.
func TestOpenDev(t *testing.T) {
	t.Chdir("testdata/opendev")
	res, err := zuulimport.Import([]string{"zuul.d"}, opendev)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "want.yaml", res.Config)
	golden(t, "want.warnings", []byte(warningsText(res.Warnings)))
	if _, err := config.Parse("want.yaml", res.Config); err != nil {
		t.Errorf("the config does not load:\n%v", err)
	}
}

// TestCases runs testdata/*.txtar: Zuul files in, and the options of the
// import in "options" (paths: ..., project: ..., bootstrap: ...,
// playbook-var: ..., playbook-dir: ...); out, "want.yaml" and
// "want.warnings", or "want.error" for an input that cannot be imported.
// With -update the expected outputs are rewritten.
func TestCases(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txtar")
	if len(files) == 0 {
		t.Fatal("no testdata/*.txtar")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			abs, err := filepath.Abs(file)
			if err != nil {
				t.Fatal(err)
			}
			ar, err := txtar.ParseFile(abs)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			var paths []string
			var opt zuulimport.Options
			for _, f := range ar.Files {
				if f.Name == "options" {
					for _, line := range strings.Split(strings.TrimSpace(string(f.Data)), "\n") {
						k, v, _ := strings.Cut(line, ":")
						v = strings.TrimSpace(v)
						switch strings.TrimSpace(k) {
						case "paths":
							paths = strings.Fields(v)
						case "project":
							opt.Project = v
						case "bootstrap":
							opt.Bootstrap = v
						case "playbook-var":
							opt.PlaybookVar = v
						case "playbook-dir":
							opt.PlaybookDir = v
						default:
							t.Fatalf("options: unknown %q", k)
						}
					}
					continue
				}
				if strings.HasPrefix(f.Name, "want.") {
					continue
				}
				p := filepath.Join(dir, f.Name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, f.Data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			t.Chdir(dir)
			res, err := zuulimport.Import(paths, opt)
			got := map[string]string{}
			var ie *zuulimport.Error
			switch {
			case errors.As(err, &ie):
				got["want.error"] = ie.Error() + "\n"
			case err != nil:
				t.Fatal(err)
			default:
				got["want.yaml"] = string(res.Config)
				got["want.warnings"] = warningsText(res.Warnings)
				if _, err := config.Parse("want.yaml", res.Config); err != nil {
					t.Errorf("the config does not load:\n%v", err)
				}
			}
			if *update {
				var kept []txtar.File
				for _, f := range ar.Files {
					if !strings.HasPrefix(f.Name, "want.") {
						kept = append(kept, f)
					}
				}
				for _, name := range []string{"want.yaml", "want.warnings", "want.error"} {
					if s, ok := got[name]; ok {
						kept = append(kept, txtar.File{Name: name, Data: []byte(s)})
					}
				}
				ar.Files = kept
				if err := os.WriteFile(abs, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := map[string]string{}
			for _, f := range ar.Files {
				if strings.HasPrefix(f.Name, "want.") {
					want[f.Name] = string(f.Data)
				}
			}
			for name, g := range got {
				if w, ok := want[name]; !ok {
					t.Errorf("%s: not expected, got:\n%s", name, g)
				} else if w != g {
					t.Errorf("%s differs (run with -update and review the diff):\n--- got\n%s--- want\n%s", name, g, w)
				}
			}
			for name := range want {
				if _, ok := got[name]; !ok {
					t.Errorf("%s expected, not made", name)
				}
			}
		})
	}
}
