package graph_test

import (
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
)

// TestWhyDetail: a selected job's detail names what selected it: the file
// and the pattern, the file that is not irrelevant, the absence of a file
// list or of matchers, the job that needs it.
func TestWhyDetail(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("why.yaml", []byte(`
jobs:
  boot: {bootstrap: true, install: ["true"]}
  any: {run: "true"}
  zuul: {run: "true", files: ['^inventory/zuul', ^playbooks/]}
  notdocs: {run: "true", irrelevant_files: [^docs/]}
  both: {run: "true", files: [^playbooks/], irrelevant_files: ['.*\.md$']}
  neg: {run: "true", files: [{regex: ^docs/, negate: true}]}
  letsencrypt: {run: "true", files: [^nothing/]}
  web: {run: "true", files: [^playbooks/web], dependencies: [letsencrypt]}
pipelines:
  deploy: {jobs: [any, zuul, notdocs, both, neg, letsencrypt, web]}
`))
	if err != nil {
		t.Fatal(err)
	}
	details := func(files []string) map[string]string {
		t.Helper()
		p, err := graph.Select(cfg, "deploy", files)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, j := range p.Jobs {
			out[j.Name] = j.Why + " | " + j.Detail
		}
		return out
	}
	check := func(files []string, want map[string]string) {
		t.Helper()
		got := details(files)
		for job, w := range want {
			if got[job] != w {
				t.Errorf("files %q: %s:\n got %q\nwant %q", files, job, got[job], w)
			}
		}
	}
	check([]string{"playbooks/web.yaml", "docs/README.md", "playbooks/a.md"}, map[string]string{
		"boot":        "bootstrap | the bootstrap job: it makes the buildset's checkout, and every other job runs after it",
		"any":         "all | it has no files or irrelevant_files: it runs for every change",
		"zuul":        "files | matched playbooks/a.md by ^playbooks/",
		"notdocs":     "files | playbooks/a.md matches none of its irrelevant_files",
		"both":        "files | matched playbooks/a.md by ^playbooks/, and playbooks/web.yaml matches none of its irrelevant_files",
		"neg":         "files | matched playbooks/a.md by {regex: ^docs/, negate: true}",
		"web":         "files | matched playbooks/web.yaml by ^playbooks/web",
		"letsencrypt": "needed by web | web needs it (a hard dependency); on its own it would not run: no changed file matches its files",
	})
	check(nil, map[string]string{
		"zuul": "all | no file list (the event had none, as a cron or manual start): every job runs",
	})
	check([]string{}, map[string]string{
		"zuul": "all | an empty file list (an empty commit): every job runs",
	})
}
