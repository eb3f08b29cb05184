package zuulimport_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/zuulimport"
)

// This file holds a small reference of Zuul's job selection, written from
// Zuul's documentation and independent of the importer: a job inherits
// every attribute it does not set from its parent (files, irrelevant-files
// and dependencies are replaced, not merged); a job's variant in a
// project pipeline applies over it; a job runs when, with a file list,
// some file matches one of its files (re.match: anchored at the start
// only) and not every file matches one of its irrelevant-files; every
// hard dependency of a job that runs runs too, whatever its matchers, and
// one the pipeline does not list is an error; soft dependencies pull
// nothing in.

type refMatcher struct {
	re     *regexp.Regexp
	negate bool
}

func (m refMatcher) match(path string) bool {
	loc := m.re.FindStringIndex(path)
	return (loc != nil && loc[0] == 0) != m.negate
}

type refDep struct {
	name string
	soft bool
}

// refAttrs are what a job definition or variant sets; nil is unset.
type refAttrs struct {
	files, irrelevant *[]refMatcher
	deps              *[]refDep
}

func (a refAttrs) over(b refAttrs) refAttrs {
	if b.files != nil {
		a.files = b.files
	}
	if b.irrelevant != nil {
		a.irrelevant = b.irrelevant
	}
	if b.deps != nil {
		a.deps = b.deps
	}
	return a
}

type refJob struct {
	parent   string
	abstract bool
	attrs    refAttrs
}

type refEntry struct {
	name    string
	variant refAttrs
}

type zuulRef struct {
	jobs      map[string]*refJob
	pipelines map[string]bool       // defined
	project   map[string][]refEntry // pipeline -> entries
	matchers  []string              // every regex seen, to make paths from
}

func loadRef(t *testing.T, dir string) *zuulRef {
	t.Helper()
	z := &zuulRef{jobs: map[string]*refJob{}, pipelines: map[string]bool{}, project: map[string][]refEntry{}}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var stanzas []map[string]map[string]any
		if err := yaml.Unmarshal(data, &stanzas); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, s := range stanzas {
			for kind, body := range s {
				switch kind {
				case "job":
					name := body["name"].(string)
					j := z.jobs[name]
					if j == nil {
						j = &refJob{}
						z.jobs[name] = j
						if p, ok := body["parent"].(string); ok {
							j.parent = p
						}
					}
					j.abstract = j.abstract || body["abstract"] == true
					j.attrs = j.attrs.over(z.attrs(t, body))
				case "pipeline":
					z.pipelines[body["name"].(string)] = true
				case "project":
					for key, v := range body {
						pm, ok := v.(map[string]any)
						if !ok {
							continue
						}
						for _, e := range pm["jobs"].([]any) {
							switch e := e.(type) {
							case string:
								z.project[key] = append(z.project[key], refEntry{name: e})
							case map[string]any:
								for name, attrs := range e {
									m, _ := attrs.(map[string]any)
									z.project[key] = append(z.project[key], refEntry{name: name, variant: z.attrs(t, m)})
								}
							}
						}
					}
				}
			}
		}
	}
	return z
}

func (z *zuulRef) attrs(t *testing.T, m map[string]any) refAttrs {
	var a refAttrs
	matchers := func(v any) *[]refMatcher {
		list, ok := v.([]any)
		if !ok {
			list = []any{v}
		}
		out := []refMatcher{}
		for _, it := range list {
			var rm refMatcher
			re := ""
			switch it := it.(type) {
			case string:
				re = it
			case map[string]any:
				re = it["regex"].(string)
				rm.negate = it["negate"] == true
			}
			z.matchers = append(z.matchers, re)
			rm.re = regexp.MustCompile(re)
			out = append(out, rm)
		}
		return &out
	}
	if v, ok := m["files"]; ok {
		a.files = matchers(v)
	}
	if v, ok := m["irrelevant-files"]; ok {
		a.irrelevant = matchers(v)
	}
	if v, ok := m["dependencies"]; ok {
		ds := []refDep{}
		for _, it := range v.([]any) {
			switch it := it.(type) {
			case string:
				ds = append(ds, refDep{name: it})
			case map[string]any:
				ds = append(ds, refDep{name: it["name"].(string), soft: it["soft"] == true})
			}
		}
		a.deps = &ds
	}
	return a
}

// freeze is a job as a pipeline runs it: its parents', its own and its
// variants' attributes, in that order.
func (z *zuulRef) freeze(name string, variants []refAttrs) refAttrs {
	var chain []*refJob
	for j := z.jobs[name]; j != nil; j = z.jobs[j.parent] {
		chain = append(chain, j)
	}
	var a refAttrs
	for i := len(chain) - 1; i >= 0; i-- {
		a = a.over(chain[i].attrs)
	}
	for _, v := range variants {
		a = a.over(v)
	}
	return a
}

func (a refAttrs) matches(files []string) bool {
	if len(files) == 0 {
		return true
	}
	if a.files != nil && len(*a.files) > 0 {
		hit := false
		for _, f := range files {
			for _, m := range *a.files {
				hit = hit || m.match(f)
			}
		}
		if !hit {
			return false
		}
	}
	if a.irrelevant != nil && len(*a.irrelevant) > 0 {
		for _, f := range files {
			if !slices.ContainsFunc(*a.irrelevant, func(m refMatcher) bool { return m.match(f) }) {
				return true
			}
		}
		return false
	}
	return true
}

// selectJobs is what Zuul runs in a pipeline for a change.
func (z *zuulRef) selectJobs(pipeline string, files []string) ([]string, error) {
	variants := map[string][]refAttrs{}
	var names []string
	for _, e := range z.project[pipeline] {
		j := z.jobs[e.name]
		if j == nil || j.abstract {
			continue // defined elsewhere
		}
		if _, ok := variants[e.name]; !ok {
			names = append(names, e.name)
		}
		variants[e.name] = append(variants[e.name], e.variant)
	}
	frozen := map[string]refAttrs{}
	for _, n := range names {
		frozen[n] = z.freeze(n, variants[n])
	}
	sel := map[string]bool{}
	var queue []string
	for _, n := range names {
		if frozen[n].matches(files) {
			sel[n] = true
			queue = append(queue, n)
		}
	}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if frozen[n].deps == nil {
			continue
		}
		for _, d := range *frozen[n].deps {
			if d.soft || z.jobs[d.name] == nil {
				continue
			}
			if _, listed := frozen[d.name]; !listed {
				return nil, fmt.Errorf("%s needs %s, which %s does not run", n, d.name, pipeline)
			}
			if !sel[d.name] {
				sel[d.name] = true
				queue = append(queue, d.name)
			}
		}
	}
	var out []string
	for n := range sel {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// sample makes a path the regex matches from its start.
func sample(r *rand.Rand, re *syntax.Regexp) string {
	switch re.Op {
	case syntax.OpLiteral:
		return string(re.Rune)
	case syntax.OpCharClass:
		if len(re.Rune) == 0 {
			return ""
		}
		return string(re.Rune[0])
	case syntax.OpAnyCharNotNL, syntax.OpAnyChar:
		return string(rune('a' + r.IntN(26)))
	case syntax.OpStar, syntax.OpQuest:
		if r.IntN(2) == 0 {
			return ""
		}
		return sample(r, re.Sub[0])
	case syntax.OpPlus:
		return sample(r, re.Sub[0])
	case syntax.OpRepeat:
		var b strings.Builder
		for range re.Min {
			b.WriteString(sample(r, re.Sub[0]))
		}
		return b.String()
	case syntax.OpConcat:
		var b strings.Builder
		for _, s := range re.Sub {
			b.WriteString(sample(r, s))
		}
		return b.String()
	case syntax.OpAlternate:
		return sample(r, re.Sub[r.IntN(len(re.Sub))])
	case syntax.OpCapture:
		return sample(r, re.Sub[0])
	}
	return ""
}

// pathPool is paths that match the fixture's matchers, paths just beside
// them (a prefix, a suffix, under another directory: re.match is anchored
// at the start only), and paths no job cares about (docs).
func pathPool(r *rand.Rand, z *zuulRef) []string {
	pool := []string{"doc/source/index.rst", "releasenotes/notes/x-1234.yaml", "README.rst", "playbooks/roles/static/README.md", "misc/notes.txt", "tools/check.sh"}
	for _, re := range z.matchers {
		tree, err := syntax.Parse(re, syntax.Perl)
		if err != nil {
			continue
		}
		for range 3 {
			p := sample(r, tree.Simplify())
			if strings.HasSuffix(p, "/") || p == "" {
				p += "x.yaml"
			}
			pool = append(pool, p, "x/"+p, p+".orig")
			if i := strings.LastIndexByte(p, '/'); i > 0 {
				pool = append(pool, p[:i])
			}
		}
	}
	slices.Sort(pool)
	return slices.Compact(pool)
}

// TestSelectsWhatZuulSelects imports the OpenDev-shaped fixture and checks,
// for random lists of changed files, that every pipeline's plan selects
// exactly the jobs the reference selects, plus the bootstrap job when any
// job is selected; and a bootstrap-only plan where Zuul does not list the
// bootstrap job in the pipeline, as the importer warns.
func TestSelectsWhatZuulSelects(t *testing.T) {
	t.Parallel()
	dir := "testdata/opendev/zuul.d"
	res, err := zuulimport.Import([]string{dir}, opendev)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("imported.yaml", res.Config)
	if err != nil {
		t.Fatal(err)
	}
	z := loadRef(t, dir)
	boot := opendev.Bootstrap
	r := rand.New(rand.NewPCG(15, 2))
	pool := pathPool(r, z)
	zuulName := func(n string) string {
		if v, ok := res.Variants[n]; ok {
			return v.Job
		}
		return n
	}
	checked, nothing := 0, 0
	for _, pipe := range cfg.PipelineOrder {
		listsBoot := slices.ContainsFunc(z.project[pipe], func(e refEntry) bool { return e.name == boot })
		for i := range 3000 {
			var files []string
			switch {
			case i == 0:
				files = nil // cron, manual: every job
			default:
				for range r.IntN(5) + 1 {
					files = append(files, pool[r.IntN(len(pool))])
				}
			}
			want, zerr := z.selectJobs(pipe, files)
			plan, serr := graph.Select(cfg, pipe, files)
			if (zerr != nil) != (serr != nil) {
				t.Fatalf("%s %q: Zuul: %v; Sortie: %v", pipe, files, zerr, serr)
			}
			if zerr != nil {
				continue
			}
			switch {
			case len(want) > 0 && !slices.Contains(want, boot):
				want = append(want, boot)
			case len(want) == 0 && !listsBoot && z.freeze(boot, nil).matches(files):
				want = []string{boot}
			}
			sort.Strings(want)
			var got []string
			for _, j := range plan.Jobs {
				got = append(got, zuulName(j.Name))
			}
			sort.Strings(got)
			if !slices.Equal(got, want) {
				t.Fatalf("pipeline %s, files %q:\nSortie selects %v\nZuul selects   %v", pipe, files, got, want)
			}
			checked++
			if len(got) == 0 {
				nothing++
			}
		}
	}
	// The random lists must exercise both outcomes, or the test says
	// little.
	if nothing == 0 || nothing == checked {
		t.Fatalf("%d of %d plans selected nothing: the paths do not exercise selection", nothing, checked)
	}
	t.Logf("%d plans checked over %d paths, %d selecting nothing", checked, len(pool), nothing)
}
