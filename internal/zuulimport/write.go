package zuulimport

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sortie-ci/sortie/internal/config"
)

type writtenPipeline struct {
	p    *pipeline
	jobs []string
}

// writer renders the output config.
type writer struct {
	c       *converter
	proj    *project
	jobs    []*sortieJob
	pipes   []writtenPipeline
	skipped int
	// semaphores the jobs name, in order of first use.
	semOrder []string
}

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func integer(i int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(i)}
}

func mapping(style yaml.Style) *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode, Style: style} }

func set(m *yaml.Node, key string, v *yaml.Node) *yaml.Node {
	k := str(key)
	m.Content = append(m.Content, k, v)
	return k
}

// note turns a warning into a comment line of the output: where in the
// input, and what, without the name of the job or pipeline the comment
// stands above.
func note(w Warning, prefix string) string {
	return w.Pos.short() + ": " + strings.TrimPrefix(w.Msg, prefix)
}

// settleDeps decides the dependencies each job writes: those of its
// definition that the output can keep, none for the bootstrap job; then
// breaks every cycle of dependencies (Zuul refuses one; Sortie's loader
// too), at the dependency that closes it.
func (w *writer) settleDeps() {
	c := w.c
	byName := map[string]*sortieJob{}
	for _, sj := range w.jobs {
		byName[sj.name] = sj
		boot := sj.pipeline == "" && sj.name == c.bootstrap
		switch {
		case boot && len(depsOf(c.effective(sj.name).deps)) > 0:
			first := (*c.effective(sj.name).deps)[0]
			c.warn(first.pos, "job %s: dependencies: not imported: the bootstrap job runs first in every buildset", sj.name)
			sj.deps = &[]dep{}
		case sj.own.deps != nil:
			what := "job " + sj.zuul.name
			if sj.pipeline != "" {
				what = "pipeline " + sj.pipeline + ": " + what
			}
			ds := c.usableDeps(*sj.own.deps, what)
			sj.deps = &ds
		}
	}
	// owner is the job whose list of dependencies name has: its own, or
	// the one it extends, nearest first.
	owner := func(sj *sortieJob) *sortieJob {
		for seen := map[string]bool{}; sj != nil && !seen[sj.name]; sj = byName[sj.extends] {
			seen[sj.name] = true
			if sj.deps != nil {
				return sj
			}
		}
		return nil
	}
	for {
		const (
			todo = iota
			busy
			done
		)
		state := map[string]int{}
		var stack []string
		var cut func(name string) bool
		cut = func(name string) bool {
			state[name] = busy
			stack = append(stack, name)
			if o := owner(byName[name]); o != nil {
				for i, d := range *o.deps {
					switch state[d.name] {
					case todo:
						if byName[d.name] != nil && cut(d.name) {
							return true
						}
					case busy:
						start := slices.Index(stack, d.name)
						cycle := strings.Join(append(slices.Clone(stack[start:]), d.name), " -> ")
						c.warn(d.pos, "job %s: dependency on %s: not imported: a cycle of dependencies (%s)", o.zuul.name, d.name, cycle)
						o.notes = append(o.notes, fmt.Sprintf("%s: dependency on %s: not imported: a cycle (%s)", d.pos.short(), d.name, cycle))
						*o.deps = slices.Delete(slices.Clone(*o.deps), i, i+1)
						return true
					}
				}
			}
			stack = stack[:len(stack)-1]
			state[name] = done
			return false
		}
		again := false
		for _, sj := range w.jobs {
			if state[sj.name] == todo && cut(sj.name) {
				again = true
				break
			}
		}
		if !again {
			return
		}
	}
}

func (w *writer) write() ([]byte, error) {
	c := w.c
	w.settleDeps()
	doc := mapping(0)
	var head []string
	head = append(head, "A Sortie config imported from Zuul by sortie import zuul.")
	if w.proj.name != "" {
		head = append(head, "Project "+w.proj.name+"; bootstrap job "+c.jobName(c.bootstrap)+".")
	} else {
		head = append(head, "Bootstrap job "+c.jobName(c.bootstrap)+".")
	}
	head = append(head,
		"Before use, add source: (the repository deployed) and bastion: (where jobs run),",
		"and compare the jobs it selects with Zuul's: sortie plan --files F on the same changes.",
		"Comments name, with its Zuul file:line, what was not imported or was changed.")
	if w.skipped > 0 {
		head = append(head, fmt.Sprintf("%d Zuul %s that no imported pipeline runs, extends or depends on %s left out.", w.skipped, plural(w.skipped, "job", "jobs"), plural(w.skipped, "is", "are")))
	}
	doc.HeadComment = strings.Join(head, "\n")

	jobs := mapping(0)
	for _, sj := range w.jobs {
		k, v := w.job(sj)
		jobs.Content = append(jobs.Content, k, v)
	}
	if len(w.semOrder) > 0 {
		sems := mapping(0)
		for _, name := range w.semOrder {
			d, ok := c.sems[name]
			k := set(sems, name, integer(max(d.max, 1)))
			if !ok {
				k.LineComment = "not defined in the input: Zuul makes it with max 1"
			}
		}
		set(doc, "semaphores", sems)
	}
	set(doc, "jobs", jobs)
	pipes := mapping(0)
	for _, wp := range w.pipes {
		k, v := w.pipeline(wp)
		pipes.Content = append(pipes.Content, k, v)
	}
	set(doc, "pipelines", pipes)

	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("write the config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("write the config: %w", err)
	}
	return b.Bytes(), nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// job renders one job of the output, with comments above it that say
// where it comes from when it is a variant, and what was not imported.
func (w *writer) job(sj *sortieJob) (*yaml.Node, *yaml.Node) {
	c := w.c
	j := sj.zuul
	variant := sj.pipeline != ""
	m := mapping(0)
	var comments []string
	prefix := "job " + j.name + ": "
	if variant {
		prefix = "pipeline " + sj.pipeline + ": job " + j.name + ": "
		why := fmt.Sprintf("%s as pipeline %s runs it: its variant in the project stanza (%s)", j.name, sj.pipeline, sj.vpos.short())
		if sj.rewired && len(sj.drops) == 0 && sj.own.files == nil && sj.own.irrelevant == nil && sj.own.timeout == nil && sj.own.attempts == nil && len(sj.own.sems) == 0 && c.playbook(sj.own) == "" {
			why = fmt.Sprintf("%s as pipeline %s runs it: its dependencies name the jobs of that pipeline's variants", j.name, sj.pipeline)
		} else if sj.rewired {
			why += "; its dependencies name the jobs of that pipeline's variants"
		}
		comments = append(comments, why)
	}
	for _, d := range sj.drops {
		comments = append(comments, note(d, prefix))
	}
	if !variant && j.parent.name != "" && sj.extends == "" {
		comments = append(comments, fmt.Sprintf("%s: parent %s is not in the input: only the job's own attributes are imported", j.parent.pos.short(), j.parent.name))
	}

	if !variant && j.abstract {
		set(m, "abstract", boolean(true))
	}
	if sj.extends != "" {
		set(m, "extends", str(c.jobName(sj.extends)))
	}
	boot := !variant && j.name == c.bootstrap
	if boot {
		set(m, "bootstrap", boolean(true))
	}
	if pb := c.playbook(sj.own); pb != "" {
		set(m, "playbook", str(pb))
	} else if !variant && !j.abstract && c.playbook(c.effective(j.name)) == "" {
		set(m, "run", str(fmt.Sprintf("echo 'imported from Zuul without a playbook: set playbook or run for %s' >&2; exit 1", j.name)))
		comments = append(comments, fmt.Sprintf("%s: no vars.%s: the job fails until it is given a playbook or run", j.pos.short(), c.opt.playbookVar()))
		c.warn(j.pos, "job %s: no vars.%s in it or its parents: given a run that fails, until it is given a playbook or run", j.name, c.opt.playbookVar())
	}
	if boot && len(depsOf(c.effective(j.name).deps)) > 0 {
		first := (*c.effective(j.name).deps)[0]
		comments = append(comments, first.pos.short()+": dependencies: not imported: the bootstrap job runs first in every buildset")
	}
	comments = append(comments, sj.notes...)
	if sj.deps != nil {
		l := &yaml.Node{Kind: yaml.SequenceNode}
		for _, d := range *sj.deps {
			if d.soft {
				dm := mapping(yaml.FlowStyle)
				set(dm, "name", str(c.jobName(d.name)))
				set(dm, "soft", boolean(true))
				l.Content = append(l.Content, dm)
			} else {
				l.Content = append(l.Content, str(c.jobName(d.name)))
			}
		}
		if len(l.Content) == 0 {
			l.Style = yaml.FlowStyle
		}
		set(m, "dependencies", l)
	}
	for _, key := range []string{"files", "irrelevant_files"} {
		ms := sj.own.files
		if key == "irrelevant_files" {
			ms = sj.own.irrelevant
		}
		if ms == nil {
			continue
		}
		l := &yaml.Node{Kind: yaml.SequenceNode}
		for _, mt := range *ms {
			if _, err := config.NewMatcher(mt.regex, mt.negate); err != nil {
				c.warn(mt.pos, "%s%s: regex %q: not imported: %v (Sortie uses RE2: no lookahead or backreference; {regex: ..., negate: true} excludes paths)",
					prefix, strings.ReplaceAll(key, "_", "-"), mt.regex, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
				comments = append(comments, fmt.Sprintf("%s: %s: regex %q: not imported: not RE2", mt.pos.short(), strings.ReplaceAll(key, "_", "-"), mt.regex))
				continue
			}
			if mt.negate {
				nm := mapping(yaml.FlowStyle)
				set(nm, "regex", str(mt.regex))
				set(nm, "negate", boolean(true))
				l.Content = append(l.Content, nm)
			} else {
				l.Content = append(l.Content, str(mt.regex))
			}
		}
		if len(l.Content) == 0 {
			l.Style = yaml.FlowStyle
		}
		set(m, key, l)
	}
	if len(sj.own.sems) > 0 {
		// Zuul adds a job's semaphores to its parent's; Sortie's extends
		// replaces the list: it is written whole.
		base := attrs{}
		switch {
		case variant:
			base = c.effective(j.name)
		case sj.extends != "":
			base = c.effective(sj.extends)
		}
		all := base.merge(attrs{sems: sj.own.sems}).sems
		l := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, s := range all {
			l.Content = append(l.Content, str(s.name))
			if !slices.Contains(w.semOrder, s.name) {
				w.semOrder = append(w.semOrder, s.name)
				if _, ok := c.sems[s.name]; !ok {
					c.warn(s.pos, "semaphore %s: not defined in the input: defined with max 1, as Zuul does", s.name)
				}
			}
		}
		set(m, "semaphores", l)
	}
	if t := sj.own.timeout; t != nil {
		set(m, "timeout", str(config.FormatDuration(time.Duration(*t)*time.Second)))
	}
	if a := sj.own.attempts; a != nil {
		set(m, "attempts", integer(*a))
	}
	k := str(c.jobName(sj.name))
	k.HeadComment = strings.Join(comments, "\n")
	if len(m.Content) == 0 {
		m.Style = yaml.FlowStyle
	}
	return k, m
}

func depsOf(ds *[]dep) []dep {
	if ds == nil {
		return nil
	}
	return *ds
}

func (w *writer) pipeline(wp writtenPipeline) (*yaml.Node, *yaml.Node) {
	p := wp.p
	m := mapping(0)
	comments := []string{fmt.Sprintf("Zuul pipeline %s (%s), manager %s", p.name, p.pos.short(), orDefault(p.zuulMgr, "unset"))}
	comments = append(comments, p.notes...)
	for _, wn := range p.warnings {
		comments = append(comments, note(wn, "pipeline "+p.name+": "))
	}
	trig := mapping(0)
	if p.push {
		branch := w.proj.defaultBranch
		src := "the project's default-branch"
		if branch == "" {
			branch, src = "master", "Zuul's default branch, the project setting none"
		}
		comments = append(comments, fmt.Sprintf("push to %s (%s): Zuul's %s", branch, src, p.pushWhat))
		push := mapping(yaml.FlowStyle)
		set(push, "branch", str(branch))
		set(trig, "push", push)
	}
	if p.cron != "" {
		set(trig, "cron", str(p.cron))
		if p.jitter > 0 {
			set(trig, "jitter", str(config.FormatDuration(p.jitter)))
		}
	}
	if len(trig.Content) > 0 {
		set(m, "trigger", trig)
	} else {
		comments = append(comments, "no trigger Sortie has: it runs when triggered by hand (sortie trigger, the API)")
	}
	set(m, "manager", str(p.manager))
	if p.precedence != "" {
		set(m, "precedence", str(p.precedence))
	}
	l := &yaml.Node{Kind: yaml.SequenceNode}
	for _, j := range wp.jobs {
		l.Content = append(l.Content, str(j))
	}
	set(m, "jobs", l)
	k := str(w.c.names["pipeline\x00"+p.name])
	k.HeadComment = strings.Join(comments, "\n")
	return k, m
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
