package config_test

import (
	"fmt"
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
)

const boot = "jobs:\n  boot: {bootstrap: true, install: [\"true\"]}\n"

func TestZZProbe(t *testing.T) {
	cases := map[string]string{
		"merge":        boot + "  a: &d {run: x, timeout: 5m}\n  b:\n    <<: *d\n    attempts: 2\n",
		"cron":         boot + "pipelines:\n  a: {trigger: {cron: 'CRON_TZ=UTC 0 2 * * *'}}\n  b: {trigger: {cron: '@every 30m'}}\n  c: {trigger: {cron: '0 9 * * MON-FRI'}}\n  d: {trigger: {cron: '@daily'}}\n  e: {trigger: {cron: 'TZ=Europe/Paris 0 9 * * 1'}}\n  f: {trigger: {cron: '@reboot'}}\n  g: {trigger: {cron: '0 0 1 JAN *'}}\n  h: {trigger: {cron: '*/15 * * * ?'}}\n  i: {trigger: {cron: 'CRON_TZ=Nowhere/X 0 * * * *'}}\n",
		"pushnull":     boot + "pipelines:\n  a: {trigger: {push: }}\n  b: {trigger: {push: {}}}\n  c: {trigger: }\n  d:\n",
		"durations":    boot + "  a: {run: x, timeout: 0, duration_hint: 0s}\n  b: {run: x, timeout: 90}\n  c: {run: x, timeout: 1d}\n  d: {run: x, timeout: 1.5h}\n",
		"envint":       boot + "  a: {run: x, env: {ANSIBLE_FORKS: 20, B: true, C: }}\n",
		"portstr":      "bastion: {port: \"22\"}\n" + boot,
		"nojobs":       "pipelines:\n  deploy: {}\n",
		"empty":        "",
		"onlycomment":  "# nothing\n",
		"filesempty":   boot + "  a: {run: x, files: []}\n",
		"depnoname":    boot + "  a: {run: x, dependencies: [{soft: true}]}\n",
		"negnoregex":   boot + "  a: {run: x, files: [{negate: true}]}\n",
		"jobsnull":     "jobs:\n",
		"twodocs":      boot + "---\nfoo: 1\n",
		"semzero":      "semaphores: {s: 0}\n" + boot + "  a: {run: x, semaphores: [s]}\n",
		"yamlline":     boot + "  a: {run: x}\n bad: [\n",
		"yamlindent":   boot + "  a:\n    run: x\n   timeout: 5m\n",
		"yamltab":      boot + "  a:\n\trun: x\n",
		"boolstr":      "jobs:\n  boot: {bootstrap: yes, install: [\"true\"]}\n",
		"boolTrue":     "jobs:\n  boot: {bootstrap: True, install: [\"true\"]}\n",
		"jobname":      boot + "  'a b/c': {run: x}\n",
		"dupdep":       boot + "  a: {run: x}\n  b: {run: x, dependencies: [a, a, boot]}\n",
		"pipeboot":     boot + "pipelines:\n  p: {jobs: [boot]}\n",
		"limitsnull":   "limits:\n" + boot,
		"runlist":      boot + "  a: {run: [a, b]}\n",
		"installnoboot": boot + "  a: {install: [x]}\n",
		"bootrun":      "jobs:\n  boot: {bootstrap: true, run: x}\n",
		"bootfiles":    "jobs:\n  boot: {bootstrap: true, run: x, files: [a], semaphores: []}\n",
		"bootfalse":    boot + "  a: {bootstrap: false, run: x}\n",
		"topunknown":   "job:\n  a: 1\n",
		"toplist":      "- a\n",
		"url1":         "source: {url: ../..}\n",
		"url2":         "source: {url: git@github.com:x/y.git}\n",
		"url3":         "source: {url: '~/src/y'}\n",
		"url4":         "source: {url: file:///srv/git/y}\n",
		"url5":         "source: {url: ./sub:dir}\n",
		"semnull":      "semaphores:\n  a:\n",
		"semstr":       "semaphores:\n  a: '4'\n",
		"webhooks":     "webhooks: {github: {secret_env: A}, gitea: {secret_env: B}, gitlab: {token_env: C}, bitbucket: {}}\n",
		"webhooknull":  "webhooks: {github: }\n",
		"server":       "server: {listen: ':8080', public_read: false, tokens: x}\n",
		"depsnotlist":  boot + "  a: {run: x, dependencies: boot}\n",
		"filesnotlist": boot + "  a: {run: x, files: ^docs/}\n",
		"jitternocron": boot + "pipelines:\n  p: {trigger: {jitter: 5m, push: {branch: main, poll: 30s}}}\n",
		"bothtrig":     boot + "pipelines:\n  p: {trigger: {cron: '@hourly', push: {branch: main}}}\n",
		"secretenvdup": boot + "  a: {run: x, env: {SORTIE_JOB: x, PATH: /x}, secret_env: [SORTIE_SRC]}\n",
		"tagstr":       boot + "  a: {run: !!str 12, attempts: !!int '3'}\n",
		"anchoronly":   boot + "  a: {run: x, files: &f [^a/]}\n  b: {run: x, files: *f}\n",
		"emptyregex":   boot + "  a: {run: x, files: ['']}\n",
		"dupkeyjobs":   boot + "jobs:\n  c: {run: x}\n",
	}
	for _, name := range []string{"merge", "cron", "pushnull", "durations", "envint", "portstr", "nojobs", "empty", "onlycomment", "filesempty", "depnoname", "negnoregex", "jobsnull", "twodocs", "semzero", "yamlline", "yamlindent", "yamltab", "boolstr", "boolTrue", "jobname", "dupdep", "pipeboot", "limitsnull", "runlist", "installnoboot", "bootrun", "bootfiles", "bootfalse", "topunknown", "toplist", "url1", "url2", "url3", "url4", "url5", "semnull", "semstr", "webhooks", "webhooknull", "server", "depsnotlist", "filesnotlist", "jitternocron", "bothtrig", "secretenvdup", "tagstr", "anchoronly", "emptyregex", "dupkeyjobs"} {
		cfg, err := config.Parse("sub/x.yaml", []byte(cases[name]))
		if err != nil {
			t.Logf("== %s: ERR\n%v", name, err)
			continue
		}
		s := fmt.Sprintf("jobs=%d boot=%q src=%q bastion=%+v limits=%+v server=%+v wh=%+v", len(cfg.Jobs), cfg.Bootstrap, cfg.Source.URL, cfg.Bastion, cfg.Limits, cfg.Server, cfg.Webhook)
		for _, n := range cfg.JobOrder {
			j := cfg.Jobs[n]
			s += fmt.Sprintf("\n   job %q run=%q timeout=%v hint=%v attempts=%d env=%v files=%d deps=%v", n, j.Run, j.Timeout, j.DurationHint, j.Attempts, j.Env, len(j.Files), j.Dependencies)
		}
		for _, n := range cfg.PipelineOrder {
			p := cfg.Pipelines[n]
			s += fmt.Sprintf("\n   pipe %s trig=%+v push=%+v mgr=%s prec=%s jobs=%v", n, p.Trigger, p.Trigger.Push, p.Manager, p.Precedence, p.Jobs)
			func() {
				defer func() {
					if r := recover(); r != nil {
						s += fmt.Sprintf(" SELECT PANIC: %v", r)
					}
				}()
				pl, err := graph.Select(cfg, n, nil)
				if err != nil {
					s += " select err " + err.Error()
				} else {
					s += fmt.Sprintf(" selected=%d", len(pl.Jobs))
				}
			}()
		}
		t.Logf("== %s: OK %s", name, s)
	}
	// matcher semantics
	for _, c := range []struct {
		re  string
		neg bool
		p   []string
	}{
		{`nodepool/.*`, false, []string{"nodepool/x", "playbooks/nodepool/x"}},
		{`^docs/`, false, []string{"docs/a.md", "docs", "x/docs/a"}},
		{`playbooks/service-zuul\.yaml`, false, []string{"playbooks/service-zuul.yaml", "playbooks/service-zuul.yaml.orig"}},
		{`playbooks/service-zuul\.yaml$`, false, []string{"playbooks/service-zuul.yaml", "playbooks/service-zuul.yaml.orig"}},
		{`.*\.md$`, false, []string{"README.md", "docs/x.md", "x.mdx"}},
		{`\.md$`, false, []string{"README.md"}},
		{`a|b`, false, []string{"a", "xb", "b"}},
		{`^docs/`, true, []string{"docs/a", "src/a"}},
		{`(?i)readme`, false, []string{"README.md"}},
		{``, false, []string{"x"}},
	} {
		m, err := config.NewMatcher(c.re, c.neg)
		if err != nil {
			t.Logf("%q err %v", c.re, err)
			continue
		}
		for _, p := range c.p {
			t.Logf("match %q neg=%v %q => %v", c.re, c.neg, p, m.Match(p))
		}
	}
}
