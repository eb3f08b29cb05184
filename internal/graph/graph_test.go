package graph_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
)

// generated builds a config of n jobs with random dependencies on earlier
// jobs, file matchers, soft edges and duration hints, and a list of changed
// files; the same seed gives the same config.
func generated(n, files int, seed uint64) ([]byte, []string) {
	r := rand.New(rand.NewPCG(seed, 1))
	var b strings.Builder
	b.WriteString("semaphores: {playbook: 4}\njobs:\n  boot: {bootstrap: true, install: [\"true\"]}\n")
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("job-%05d", i)
		fmt.Fprintf(&b, "  %s:\n    run: \"true\"\n", names[i])
		fmt.Fprintf(&b, "    files: ['^playbooks/service-%d\\.yaml$', '^inventory/group_vars/g%d/']\n", i, i%97)
		if i%5 == 0 {
			b.WriteString("    irrelevant_files: [^docs/]\n")
		}
		fmt.Fprintf(&b, "    duration_hint: %ds\n", 1+r.IntN(300))
		if deps := r.IntN(4); i > 0 && deps > 0 {
			b.WriteString("    dependencies:\n")
			for range deps {
				dep := names[r.IntN(i)]
				if r.IntN(4) == 0 {
					fmt.Fprintf(&b, "      - {name: %s, soft: true}\n", dep)
				} else {
					fmt.Fprintf(&b, "      - %s\n", dep)
				}
			}
		}
	}
	b.WriteString("pipelines:\n  deploy:\n    jobs:\n")
	for _, name := range names {
		fmt.Fprintf(&b, "      - %s\n", name)
	}
	changed := make([]string, files)
	for i := range changed {
		switch r.IntN(3) {
		case 0:
			changed[i] = fmt.Sprintf("playbooks/service-%d.yaml", r.IntN(n*20))
		case 1:
			changed[i] = fmt.Sprintf("inventory/group_vars/g%d/x.yaml", r.IntN(97*20))
		default:
			changed[i] = fmt.Sprintf("docs/page-%d.rst", i)
		}
	}
	return []byte(b.String()), changed
}

// TestSelectInvariants checks on random graphs what must hold of any plan:
// a topological order, waves one above the deepest dependency, every hard
// dependency of a selected job selected, soft edges kept only when selected,
// the critical path a real dependency chain.
func TestSelectInvariants(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		data, files := generated(300, 40, seed)
		cfg, err := config.Parse("gen.yaml", data)
		if err != nil {
			t.Fatal(err)
		}
		p, err := graph.Select(cfg, "deploy", files)
		if err != nil {
			t.Fatal(err)
		}
		pos := map[string]int{}
		for i, j := range p.Jobs {
			pos[j.Name] = i
		}
		for _, j := range p.Jobs {
			wave := 0
			for _, d := range j.Dependencies {
				dp, ok := pos[d]
				if !ok || dp >= pos[j.Name] {
					t.Fatalf("seed %d: %s depends on %s, which is not before it", seed, j.Name, d)
				}
				wave = max(wave, p.Jobs[dp].Wave+1)
			}
			if j.Wave != wave {
				t.Fatalf("seed %d: %s wave %d, want %d", seed, j.Name, j.Wave, wave)
			}
			if j.Name != p.Bootstrap && !slices.Contains(j.Dependencies, p.Bootstrap) {
				t.Fatalf("seed %d: %s does not depend on the bootstrap job", seed, j.Name)
			}
			for _, d := range cfg.Jobs[j.Name].Dependencies {
				_, sel := pos[d.Name]
				if !d.Soft && !sel {
					t.Fatalf("seed %d: %s selected without its hard dependency %s", seed, j.Name, d.Name)
				}
				if d.Soft && sel != slices.Contains(j.Dependencies, d.Name) {
					t.Fatalf("seed %d: soft dependency %s of %s mishandled", seed, d.Name, j.Name)
				}
			}
		}
		// Selection agrees with a brute-force match of every file against
		// every matcher (the planner only looks at prefix ranges).
		brute := func(ms []config.Matcher, all bool) bool {
			for _, f := range files {
				hit := slices.ContainsFunc(ms, func(m config.Matcher) bool { return m.Match(f) })
				if hit && !all {
					return true
				}
				if !hit && all {
					return false
				}
			}
			return all
		}
		for _, ns := range p.NotSelected {
			j := cfg.Jobs[ns.Name]
			if ns.Reason == graph.NotFiles && brute(j.Files, false) {
				t.Fatalf("seed %d: %s not selected for files, but a file matches", seed, ns.Name)
			}
			if ns.Reason == graph.NotIrrelevantFiles && !brute(j.IrrelevantFiles, true) {
				t.Fatalf("seed %d: %s not selected as irrelevant, but a file is relevant", seed, ns.Name)
			}
		}
		for _, sj := range p.Jobs {
			j := cfg.Jobs[sj.Name]
			if sj.Why == graph.WhyFiles && (!brute(j.Files, false) && len(j.Files) > 0 || len(j.IrrelevantFiles) > 0 && brute(j.IrrelevantFiles, true)) {
				t.Fatalf("seed %d: %s selected for files, but brute force disagrees", seed, sj.Name)
			}
		}
		if len(p.Jobs)+len(p.NotSelected) != len(cfg.Jobs) {
			t.Fatalf("seed %d: %d selected + %d not selected != %d jobs", seed, len(p.Jobs), len(p.NotSelected), len(cfg.Jobs))
		}
		for i := 1; i < len(p.CriticalPath); i++ {
			if !slices.Contains(p.Job(p.CriticalPath[i]).Dependencies, p.CriticalPath[i-1]) {
				t.Fatalf("seed %d: critical path step %s -> %s is not an edge", seed, p.CriticalPath[i-1], p.CriticalPath[i])
			}
		}
		rem := p.Remaining(graph.HintWeights(cfg, p))
		if p.Estimate != 0 && rem[p.CriticalPath[0]] != p.Estimate {
			t.Fatalf("seed %d: estimate %v, remaining from path start %v", seed, p.Estimate, rem[p.CriticalPath[0]])
		}
		for name, r := range rem {
			if r > rem[p.CriticalPath[0]] {
				t.Fatalf("seed %d: %s has %v remaining, more than the critical path %v", seed, name, r, p.Estimate)
			}
		}
	}
}

// BenchmarkLoadAndPlan10k loads a generated config of 10,000 jobs with
// random dependencies and matchers, and plans it against 1,000 changed files
// (the figure recorded in docs/benchmarks.md).
func BenchmarkLoadAndPlan10k(b *testing.B) {
	data, files := generated(10_000, 1_000, 42)
	b.SetBytes(int64(len(data)))
	var selected int
	for b.Loop() {
		cfg, err := config.Parse("gen.yaml", data)
		if err != nil {
			b.Fatal(err)
		}
		p, err := graph.Select(cfg, "deploy", files)
		if err != nil {
			b.Fatal(err)
		}
		selected = len(p.Jobs)
	}
	b.ReportMetric(float64(selected), "selected-jobs")
}

// BenchmarkPlan10k measures planning alone, the config already loaded.
func BenchmarkPlan10k(b *testing.B) {
	data, files := generated(10_000, 1_000, 42)
	cfg, err := config.Parse("gen.yaml", data)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := graph.Select(cfg, "deploy", files); err != nil {
			b.Fatal(err)
		}
	}
}
