package zuulimport

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// entry is one job of a project stanza's pipeline: its name and, for a
// variant, its attributes.
type entry struct {
	name    string
	pos     Pos
	file    string
	variant *yaml.Node // nil for a bare name
}

// project is the merged project stanzas (and the templates they use) of
// the project imported.
type project struct {
	name          string
	pos           Pos
	defaultBranch string
	pipelines     map[string][]entry
	pipeOrder     []string
	pipePos       map[string]Pos
}

type semDef struct {
	max int
	pos Pos
}

// sortieJob is a job of the output: a Zuul job, or a variant of one for
// a pipeline.
type sortieJob struct {
	name    string
	zuul    *job
	extends string // the Sortie job it extends, "" for none
	// own are the attributes written on it: for a Zuul job its own, for a
	// variant the variant's.
	own      attrs
	pipeline string // for a variant
	vpos     Pos    // where the variant is written
	// drops are what its definition has that the output does not carry.
	drops []Warning
	// deps are the dependencies it writes (settleDeps); nil for none.
	deps *[]dep
	// notes are more comments for the output.
	notes []string
	// rewired: the variant exists (also) because its dependencies name
	// variants of its pipeline.
	rewired bool
}

type converter struct {
	opt       Options
	jobs      map[string]*job
	jobOrder  []string
	sems      map[string]semDef
	pipes     map[string]*pipeline
	warnings  []Warning
	eff       map[string]attrs
	bootstrap string
	// said keeps warnings about one place of the input from repeating.
	said map[string]bool
	// variantNames are the jobs made of variants.
	variantNames map[string]bool
	// names maps Zuul job and pipeline names to the Sortie names they get:
	// the same, unless Sortie does not allow it (names are used in paths
	// and URLs).
	names map[string]string
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// rename gives a name Sortie allows (letters, digits, '.', '_' and '-',
// starting with a letter or digit) to each name that has none, unique
// among taken; it warns of each renaming.
func (c *converter) rename(name string, at Pos, what string, taken map[string]bool) string {
	if n, ok := c.names[what+"\x00"+name]; ok {
		return n
	}
	n := strings.TrimLeft(unsafeChars.ReplaceAllString(name, "-"), "._-")
	if n == "" {
		n = what
	}
	if n != name {
		for base, i := n, 2; taken[n]; i++ {
			n = fmt.Sprintf("%s-%d", base, i)
		}
		c.warn(at, "%s %q: named %s: Sortie's names may contain only letters, digits, '.', '_' and '-'", what, name, n)
	}
	taken[n] = true
	c.names[what+"\x00"+name] = n
	return n
}

// jobName is the Sortie name of a Zuul job, or of a job made of a
// variant (named so already).
func (c *converter) jobName(name string) string {
	if c.variantNames[name] {
		return name
	}
	if n, ok := c.names["job\x00"+name]; ok {
		return n
	}
	return name
}

func (c *converter) warn(p Pos, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	key := p.String() + msg
	if c.said[key] {
		return
	}
	c.said[key] = true
	c.warnings = append(c.warnings, Warning{Pos: p, Msg: msg})
}

func (in *input) convert(opt Options) (*Result, error) {
	c := &converter{opt: opt, jobs: map[string]*job{}, sems: map[string]semDef{}, pipes: map[string]*pipeline{},
		eff: map[string]attrs{}, said: map[string]bool{}, variantNames: map[string]bool{}, names: map[string]string{}}
	var projects, templates []stanza
	for _, s := range in.stanzas {
		switch s.kind {
		case "job":
			j, warns, ok := parseJob(s, opt.playbookVar())
			if !ok {
				c.warnings = append(c.warnings, warns...)
				continue
			}
			if first, ok := c.jobs[j.name]; ok {
				first.addVariant(j)
				c.warn(j.pos, "job %s: defined again (first at %s): Zuul picks its variants by branch; Sortie deploys one branch and applies them all, in order", j.name, first.pos)
				continue
			}
			c.jobs[j.name] = j
			c.jobOrder = append(c.jobOrder, j.name)
		case "semaphore":
			name, ok := scalar(get(s.body, "name"))
			if !ok {
				c.warn(s.pos, "a semaphore without a name: not imported")
				continue
			}
			max := 1
			if m, ok := scalar(get(s.body, "max")); ok {
				if n, err := strconv.Atoi(m); err == nil && n >= 1 {
					max = n
				}
			}
			c.sems[name] = semDef{max: max, pos: s.pos}
		case "pipeline":
			if p, ok := parsePipeline(s); ok {
				c.pipes[p.name] = p
			} else {
				c.warn(s.pos, "a pipeline without a name: not imported")
			}
		case "project":
			projects = append(projects, s)
		case "project-template":
			templates = append(templates, s)
		case "nodeset":
			c.warn(s.pos, "nodeset stanza: not imported: Sortie runs every job on its bastion")
		case "secret":
			c.warn(s.pos, "secret stanza: not imported: give secrets to jobs with secret_env, from Sortie's own environment")
		case "pragma", "queue":
		default:
			c.warn(s.pos, "%s stanza: not imported: Sortie has no equivalent", s.kind)
		}
	}
	for _, j := range c.jobs {
		for _, w := range j.drops {
			c.warn(w.Pos, "%s", w.Msg)
		}
	}
	proj, err := c.project(projects, templates)
	if err != nil {
		return nil, err
	}
	return c.build(proj)
}

// project merges the stanzas of the project imported, and of the
// templates they name (whose jobs come first, as Zuul lists them).
func (c *converter) project(projects, templates []stanza) (*project, error) {
	names := map[string]bool{}
	for _, s := range projects {
		n, _ := scalar(get(s.body, "name"))
		names[n] = true
	}
	want := c.opt.Project
	var mine []stanza
	for _, s := range projects {
		n, _ := scalar(get(s.body, "name"))
		if n == "" || want != "" && sameProject(n, want) || want == "" && len(names) == 1 {
			mine = append(mine, s)
		}
	}
	switch {
	case len(projects) == 0:
		return nil, &Error{Msg: "no project stanza in the input", Hint: "a project stanza says which jobs each pipeline runs; pass the files that hold it"}
	case want == "" && len(names) > 1 && !(len(names) == 2 && names[""]):
		return nil, &Error{Msg: "several projects in the input: " + strings.Join(slices.Sorted(maps.Keys(names)), ", "), Hint: "name the one to import with --project"}
	case len(mine) == 0:
		return nil, &Error{Msg: fmt.Sprintf("no project stanza for %s in the input", want), Hint: "projects are: " + strings.Join(slices.Sorted(maps.Keys(names)), ", ")}
	}
	tmpl := map[string]stanza{}
	for _, s := range templates {
		if n, ok := scalar(get(s.body, "name")); ok {
			tmpl[n] = s
		}
	}
	p := &project{pos: mine[0].pos, pipelines: map[string][]entry{}, pipePos: map[string]Pos{}}
	p.name, _ = scalar(get(mine[0].body, "name"))
	add := func(s stanza) {
		for _, kv := range pairs(s.body) {
			key := kv[0].Value
			switch key {
			case "name", "description", "merge-mode", "queue", "templates", "default-branch":
				continue
			case "vars":
				c.warn(pos(s.file, kv[0]), "project vars: not imported: Sortie passes no Ansible variables")
				continue
			}
			if kv[1].Kind != yaml.MappingNode {
				c.warn(pos(s.file, kv[0]), "project %s: not imported: Sortie has no equivalent", key)
				continue
			}
			if _, ok := p.pipePos[key]; !ok {
				p.pipePos[key] = pos(s.file, kv[0])
				p.pipeOrder = append(p.pipeOrder, key)
			}
			for _, pk := range pairs(kv[1]) {
				switch pk[0].Value {
				case "jobs":
					for _, it := range items(pk[1]) {
						if n, ok := scalar(it); ok {
							p.pipelines[key] = append(p.pipelines[key], entry{name: n, pos: pos(s.file, it), file: s.file})
						} else if kvs := pairs(it); len(kvs) == 1 {
							p.pipelines[key] = append(p.pipelines[key], entry{name: kvs[0][0].Value, pos: pos(s.file, kvs[0][0]), file: s.file, variant: kvs[0][1]})
						} else {
							c.warn(pos(s.file, it), "project pipeline %s: a job entry that is neither a name nor one name with its variant: not imported", key)
						}
					}
				case "queue", "debug", "fail-fast":
				default:
					c.warn(pos(s.file, pk[0]), "project pipeline %s: %s: not imported: Sortie has no equivalent", key, pk[0].Value)
				}
			}
		}
	}
	for _, s := range mine {
		if b, ok := scalar(get(s.body, "default-branch")); ok {
			p.defaultBranch = b
		}
		for _, t := range items(get(s.body, "templates")) {
			n, _ := scalar(t)
			ts, ok := tmpl[n]
			if !ok {
				c.warn(pos(s.file, t), "project template %s: not in the input: its jobs are not imported", n)
				continue
			}
			add(ts)
		}
		add(s)
	}
	return p, nil
}

// sameProject reports whether a project stanza's name names the project
// asked for: the same, or one the canonical form of the other
// ("opendev.org/opendev/system-config" and "opendev/system-config").
func sameProject(stanza, want string) bool {
	return stanza == want || strings.HasSuffix(stanza, "/"+want) || strings.HasSuffix(want, "/"+stanza)
}

// effective is a Zuul job as it runs, after inheritance: the parent's
// attributes with the job's own over them.
func (c *converter) effective(name string) attrs {
	if a, ok := c.eff[name]; ok {
		return a
	}
	var chain []*job
	seen := map[string]bool{}
	for j := c.jobs[name]; j != nil && !seen[j.name]; j = c.jobs[j.parent.name] {
		seen[j.name] = true
		chain = append(chain, j)
	}
	var a attrs
	for i := len(chain) - 1; i >= 0; i-- {
		a = a.merge(chain[i].own)
	}
	c.eff[name] = a
	return a
}

// parentOf is the Zuul parent of j that the output can extend: one the
// input defines, without a cycle through j.
func (c *converter) parentOf(j *job) string {
	p := j.parent.name
	if p == "" {
		return ""
	}
	if _, ok := c.jobs[p]; !ok {
		c.warn(j.parent.pos, "job %s: parent %s is not in the input: the job keeps its own attributes only", j.name, p)
		return ""
	}
	for q := p; q != ""; q = c.jobs[q].parent.name {
		if q == j.name {
			c.warn(j.parent.pos, "job %s: parent %s: a cycle of parents: not imported", j.name, p)
			return ""
		}
		if c.jobs[q] == nil {
			break
		}
	}
	return p
}

// usableDeps are the dependencies the output can keep: on jobs the input
// defines and that are not abstract.
func (c *converter) usableDeps(ds []dep, what string) []dep {
	out := []dep{}
	for _, d := range ds {
		j, ok := c.jobs[d.name]
		switch {
		case c.variantNames[d.name]:
			// A variant of this pipeline, named by a variant's
			// dependencies: made here, so known.
			out = append(out, d)
		case !ok:
			c.warn(d.pos, "%s: dependency on %s: not imported: the input does not define it", what, d.name)
		case j.abstract:
			c.warn(d.pos, "%s: dependency on %s: not imported: it is abstract and never runs", what, d.name)
		default:
			out = append(out, d)
		}
	}
	return out
}

func (c *converter) build(proj *project) (*Result, error) {
	// The pipelines the project uses and the input defines, with their
	// jobs: each Zuul job once, its variants merged in order.
	type planned struct {
		p        *pipeline
		names    []string              // Zuul jobs, in order
		variants map[string]*attrs     // their variants, merged
		vpos     map[string]Pos        // where each variant is
		vwarns   map[string][]Warning  // what each variant drops
		sortie   map[string]*sortieJob // variant jobs by Zuul name
		listed   map[string]bool
	}
	var plans []*planned
	candidates := []string{}
	for _, pname := range proj.pipeOrder {
		p, ok := c.pipes[pname]
		if !ok {
			c.warn(proj.pipePos[pname], "project pipeline %s: not imported: the input does not define pipeline %s", pname, pname)
			continue
		}
		for _, w := range p.warnings {
			c.warn(w.Pos, "%s", w.Msg)
		}
		pl := &planned{p: p, variants: map[string]*attrs{}, vpos: map[string]Pos{}, vwarns: map[string][]Warning{}, sortie: map[string]*sortieJob{}, listed: map[string]bool{}}
		for _, e := range proj.pipelines[pname] {
			j, ok := c.jobs[e.name]
			switch {
			case !ok:
				c.warn(e.pos, "pipeline %s: job %s: not imported: the input does not define it", pname, e.name)
				continue
			case j.abstract:
				c.warn(e.pos, "pipeline %s: job %s: not imported: it is abstract and never runs", pname, e.name)
				continue
			}
			if !pl.listed[e.name] {
				pl.listed[e.name] = true
				pl.names = append(pl.names, e.name)
				if !slices.Contains(candidates, e.name) {
					candidates = append(candidates, e.name)
				}
			}
			if e.variant == nil || isNull(e.variant) {
				continue
			}
			a, warns := parseAttrs(e.file, e.variant, "pipeline "+pname+": job "+e.name, c.opt.playbookVar(), nil)
			for _, w := range warns {
				c.warn(w.Pos, "%s", w.Msg)
			}
			pl.vwarns[e.name] = append(pl.vwarns[e.name], warns...)
			if prev := pl.variants[e.name]; prev != nil {
				a = prev.merge(a)
			} else {
				pl.vpos[e.name] = e.pos
			}
			pl.variants[e.name] = &a
		}
		if len(pl.names) == 0 {
			c.warn(proj.pipePos[pname], "project pipeline %s: not imported: none of its jobs is in the input", pname)
			continue
		}
		plans = append(plans, pl)
	}
	if len(plans) == 0 {
		return nil, &Error{Pos: proj.pos, Msg: "no pipeline to import: the project's pipelines are not defined in the input, or their jobs are not", Hint: "pass the files that define the pipelines (zuul.d/ of the config project) and the jobs"}
	}
	if err := c.chooseBootstrap(candidates); err != nil {
		return nil, err
	}

	out := &Result{Variants: map[string]Variant{}}
	used := map[string]bool{}
	for _, name := range c.jobOrder {
		c.rename(name, c.jobs[name].pos, "job", used)
	}
	pipeNames := map[string]bool{}
	for _, pl := range plans {
		c.rename(pl.p.name, pl.p.pos, "pipeline", pipeNames)
	}
	variantName := func(job, pipe string) string {
		n := c.jobName(job) + "-" + c.names["pipeline\x00"+pipe]
		for i := 2; used[n]; i++ {
			n = fmt.Sprintf("%s-%s-%d", job, pipe, i)
		}
		used[n] = true
		c.variantNames[n] = true
		return n
	}
	for _, pl := range plans {
		pname := pl.p.name
		for _, name := range pl.names {
			a := pl.variants[name]
			if a == nil || !a.meaningful(c.opt.playbookVar()) {
				continue
			}
			if name == c.bootstrap {
				c.warn(pl.vpos[name], "pipeline %s: the variant of the bootstrap job %s: not imported: Sortie's bootstrap job is one job, the same in every pipeline", pname, name)
				continue
			}
			sj := &sortieJob{name: variantName(name, pname), zuul: c.jobs[name], extends: name, own: *a, pipeline: pname, vpos: pl.vpos[name], drops: pl.vwarns[name]}
			pl.sortie[name] = sj
		}
		// A job whose dependencies name a job that has a variant here must
		// name the variant: it gets a variant of its own, and so on.
		for changed := true; changed; {
			changed = false
			for _, name := range pl.names {
				if name == c.bootstrap {
					continue
				}
				sj := pl.sortie[name]
				deps := c.effective(name).deps
				if sj != nil && sj.own.deps != nil {
					deps = sj.own.deps
				}
				if deps == nil {
					continue
				}
				needs := false
				for _, d := range *deps {
					if v := pl.sortie[d.name]; v != nil && d.name != name {
						needs = true
					}
				}
				if !needs {
					continue
				}
				rewired := make([]dep, 0, len(*deps))
				for _, d := range c.usableDeps(*deps, "job "+name) {
					if v := pl.sortie[d.name]; v != nil && d.name != name {
						d.name = v.name
					}
					rewired = append(rewired, d)
				}
				if sj == nil {
					sj = &sortieJob{name: variantName(name, pname), zuul: c.jobs[name], extends: name, pipeline: pname, vpos: pl.p.pos}
					pl.sortie[name] = sj
					changed = true
				}
				if sj.own.deps == nil || !sameDeps(*sj.own.deps, rewired) {
					sj.own.deps = &rewired
					sj.rewired = true
					changed = true
				}
			}
		}
		if !pl.listed[c.bootstrap] {
			c.warn(pl.p.pos, "pipeline %s: Zuul does not run the bootstrap job %s in it; Sortie's bootstrap job is part of every pipeline: a change that matches only its files runs it alone there", pname, c.bootstrap)
		}
	}

	// The Zuul jobs written: those the pipelines run, what they extend and
	// depend on, transitively, and the bootstrap job.
	keep := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		if keep[name] || c.jobs[name] == nil {
			return
		}
		keep[name] = true
		if p := c.parentOf(c.jobs[name]); p != "" {
			visit(p)
		}
		if ds := c.jobs[name].own.deps; ds != nil {
			for _, d := range c.usableDeps(*ds, "job "+name) {
				visit(d.name)
			}
		}
	}
	visit(c.bootstrap)
	for _, pl := range plans {
		for _, name := range pl.names {
			visit(name)
			if sj := pl.sortie[name]; sj != nil && sj.own.deps != nil {
				for _, d := range *sj.own.deps {
					visit(d.name)
				}
			}
		}
	}
	skipped := 0
	for name := range c.jobs {
		if !keep[name] {
			skipped++
		}
	}
	w := &writer{c: c, proj: proj, skipped: skipped}
	for _, name := range c.jobOrder {
		if !keep[name] {
			continue
		}
		j := c.jobs[name]
		w.jobs = append(w.jobs, &sortieJob{name: name, zuul: j, extends: c.parentOf(j), own: j.own, drops: j.drops})
		for _, pl := range plans {
			if sj := pl.sortie[name]; sj != nil {
				w.jobs = append(w.jobs, sj)
				out.Variants[sj.name] = Variant{Job: c.jobName(name), Pipeline: c.names["pipeline\x00"+pl.p.name]}
			}
		}
	}
	for _, pl := range plans {
		var names []string
		for _, name := range pl.names {
			if sj := pl.sortie[name]; sj != nil {
				names = append(names, sj.name)
			} else {
				names = append(names, c.jobName(name))
			}
		}
		w.pipes = append(w.pipes, writtenPipeline{p: pl.p, jobs: names})
	}
	cfg, err := w.write()
	if err != nil {
		return nil, err
	}
	out.Config = cfg
	out.Warnings = c.sortedWarnings()
	return out, nil
}

func sameDeps(a, b []dep) bool {
	return slices.EqualFunc(a, b, func(x, y dep) bool { return x.name == y.name && x.soft == y.soft })
}

// meaningful reports whether a variant changes something Sortie imports.
func (a attrs) meaningful(playbookVar string) bool {
	if a.files != nil || a.irrelevant != nil || a.deps != nil || len(a.sems) > 0 || a.timeout != nil || a.attempts != nil {
		return true
	}
	v, ok := a.vars[playbookVar]
	return ok && v.scalar && !v.jinja
}

// chooseBootstrap finds the job that becomes the bootstrap job: the one
// named, or the only job of the imported pipelines whose name says so.
func (c *converter) chooseBootstrap(candidates []string) error {
	if name := c.opt.Bootstrap; name != "" {
		j, ok := c.jobs[name]
		switch {
		case !ok:
			return &Error{Msg: fmt.Sprintf("--bootstrap %s: the input defines no such job", name), Hint: "name the job that prepares the bastion; jobs of the imported pipelines: " + strings.Join(candidates, ", ")}
		case j.abstract:
			return &Error{Pos: j.pos, Msg: fmt.Sprintf("--bootstrap %s: the job is abstract and never runs", name), Hint: "name a job that runs"}
		}
		c.bootstrap = name
		return nil
	}
	var found []string
	for _, n := range candidates {
		if strings.Contains(n, "bootstrap") {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return &Error{Msg: "which job is the bootstrap job? name it with --bootstrap JOB (the job that prepares the bastion, which every other job runs after)",
			Hint: "jobs of the imported pipelines: " + strings.Join(candidates, ", ")}
	}
	c.bootstrap = found[0]
	c.warn(c.jobs[found[0]].pos, "job %s: the bootstrap job (the only job of the pipelines named so); name another with --bootstrap", found[0])
	return nil
}

func (c *converter) sortedWarnings() []Warning {
	out := slices.Clone(c.warnings)
	slices.SortStableFunc(out, func(a, b Warning) int {
		if a.Pos.File != b.Pos.File {
			return strings.Compare(a.Pos.File, b.Pos.File)
		}
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line - b.Pos.Line
		}
		return a.Pos.Col - b.Pos.Col
	})
	return out
}

// playbook is the playbook a job's own variables name, "" for none.
func (c *converter) playbook(a attrs) string {
	v, ok := a.vars[c.opt.playbookVar()]
	if !ok || !v.scalar || v.jinja || v.value == "" {
		return ""
	}
	return path.Join(c.opt.playbookDir(), v.value)
}
