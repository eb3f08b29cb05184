package config_test

import (
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
)

func TestZZExamples(t *testing.T) {
	for _, dir := range []string{"../../examples/quickstart", "../../examples/infra"} {
		cfg, err := config.Load(dir)
		if err != nil {
			t.Fatalf("%s:\n%v", dir, err)
		}
		t.Logf("%s: %d jobs, %d pipelines, bootstrap %s, source %q branch %q, files %v", dir, len(cfg.Jobs), len(cfg.Pipelines), cfg.Bootstrap, cfg.Source.URL, cfg.Source.Branch, cfg.Files)
		for _, name := range cfg.PipelineOrder {
			p, err := graph.Select(cfg, name, nil)
			if err != nil {
				t.Errorf("%s %s: %v", dir, name, err)
				continue
			}
			t.Logf("  %s: %d selected, critical %v est %v", name, len(p.Jobs), p.CriticalPath, p.Estimate)
		}
	}
	cfg, _ := config.Load("../../examples/infra")
	for _, files := range [][]string{{"playbooks/service-zuul.yaml"}, {"inventory/base/hosts.yaml"}, {"doc/source/zuul.rst"}, {"playbooks/roles/base/README.rst"}, {"playbooks/roles/letsencrypt-request-certs/tasks/main.yaml"}, {"inventory/service/group_vars/zuul-lb.yaml"}} {
		p, err := graph.Select(cfg, "deploy", files)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, j := range p.Jobs {
			s = append(s, j.Name+"("+j.Why+",w"+string(rune('0'+j.Wave))+")")
		}
		t.Logf("deploy %v: %d selected: %s\n   critical %v est %v", files, len(p.Jobs), strings.Join(s, " "), p.CriticalPath, p.Estimate)
	}
	q, _ := config.Load("../../examples/quickstart")
	for _, files := range [][]string{{"docs/config.md"}, {"internal/graph/graph.go"}} {
		p, _ := graph.Select(q, "deploy", files)
		var s []string
		for _, j := range p.Jobs {
			s = append(s, j.Name+"("+j.Why+")"+strings.Join(j.Dependencies, ","))
		}
		t.Logf("quickstart deploy %v: %s; not %v", files, strings.Join(s, " "), p.NotSelected)
	}
}
