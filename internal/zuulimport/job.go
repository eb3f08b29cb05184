package zuulimport

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// matcher is one item of files or irrelevant-files.
type matcher struct {
	regex  string
	negate bool
	pos    Pos
}

// dep is one item of dependencies.
type dep struct {
	name string
	soft bool
	pos  Pos
}

// ref is a name with where it is written.
type ref struct {
	name string
	pos  Pos
}

// variable is one job variable: its text when it is a scalar, and
// whether it holds Jinja (then it is not imported).
type variable struct {
	value  string
	scalar bool
	jinja  bool
	pos    Pos
}

// attrs are the attributes of a job definition, or of a variant of one in
// a project stanza, that Sortie imports. A nil pointer or slice is an
// attribute the definition does not set.
type attrs struct {
	files, irrelevant *[]matcher
	deps              *[]dep
	// sems are added to those of the parent, as Zuul does: it has no
	// "not set".
	sems     []ref
	timeout  *int
	attempts *int
	vars     map[string]variable
}

// merge applies a (a child, or a later variant) over x: what a sets
// replaces, semaphores add up, variables merge.
func (x attrs) merge(a attrs) attrs {
	out := x
	if a.files != nil {
		out.files = a.files
	}
	if a.irrelevant != nil {
		out.irrelevant = a.irrelevant
	}
	if a.deps != nil {
		out.deps = a.deps
	}
	if a.timeout != nil {
		out.timeout = a.timeout
	}
	if a.attempts != nil {
		out.attempts = a.attempts
	}
	out.sems = slices.Clone(x.sems)
	for _, s := range a.sems {
		if !slices.ContainsFunc(out.sems, func(r ref) bool { return r.name == s.name }) {
			out.sems = append(out.sems, s)
		}
	}
	if len(a.vars) > 0 {
		out.vars = map[string]variable{}
		for k, v := range x.vars {
			out.vars[k] = v
		}
		for k, v := range a.vars {
			out.vars[k] = v
		}
	}
	return out
}

// job is a Zuul job: its first definition, with the later ones (variants
// by branch, which Sortie does not tell apart) applied in order.
type job struct {
	name      string
	pos       Pos
	parent    ref // name "" for none (the tenant's base job)
	abstract  bool
	own       attrs
	drops     []Warning // keys of its definitions that are not imported
	variants  int       // definitions after the first
	hasRun    bool
	hasParent bool
}

// dropped says why each job key Sortie has no equivalent for is not
// imported. Keys not listed here and not imported are dropped silently
// when they only shape how Zuul reports or checks its config, and with a
// generic warning otherwise (see quietKeys).
var dropped = map[string]string{
	"nodeset":           "Sortie runs every job on its bastion",
	"required-projects": "a buildset checks out one repository, the deployed one",
	"pre-run":           "Sortie runs one command per job: fold it into the playbook",
	"post-run":          "Sortie runs one command per job: fold it into the playbook",
	"cleanup-run":       "Sortie runs one command per job: fold it into the playbook",
	"run":               "Sortie runs the job's playbook on its bastion itself (from the playbook variable), not Zuul's run playbook",
	"secrets":           "give secrets to jobs with secret_env, from Sortie's own environment",
	"roles":             "roles come from the deployed repository's checkout",
	"branches":          "a Sortie pipeline deploys one branch: every variant is applied",
	"voting":            "every job's result counts in Sortie",
	"host-vars":         "Sortie passes no Ansible variables: keep them in the inventory",
	"group-vars":        "Sortie passes no Ansible variables: keep them in the inventory",
	"extra-vars":        "Sortie passes no Ansible variables: keep them in the inventory",
	"include-vars":      "Sortie passes no Ansible variables: keep them in the inventory",
	"provides":          "Sortie has no artifacts between changes",
	"requires":          "Sortie has no artifacts between changes",
	"pre-timeout":       "Sortie has one timeout per job",
	"post-timeout":      "Sortie has one timeout per job",
	"override-checkout": "a buildset deploys the commit it was made for",
	"failure-output":    "Sortie judges a job by its exit status",
}

// quietKeys shape how Zuul documents, reports on or guards its config, and
// change nothing of what runs: they are dropped without a word.
var quietKeys = map[string]bool{
	"name": true, "description": true, "final": true, "protected": true, "intermediate": true,
	"success-message": true, "failure-message": true, "success-url": true, "failure-url": true,
	"tags": true, "hold-following-changes": true, "post-review": true, "allowed-projects": true,
	"match-on-config-updates": true, "workspace-scheme": true, "workspace-checkout": true,
	"ansible-version": true, "ansible-split-streams": true, "deduplicate": true,
	"attribute-control": true, "image-build-name": true,
}

// parseAttrs reads the attributes of a job definition or variant. what
// names it in warnings ("job infra-prod-base").
func parseAttrs(file string, n *yaml.Node, what, playbookVar string, extra map[string]bool) (attrs, []Warning) {
	var a attrs
	var warns []Warning
	warn := func(at *yaml.Node, format string, args ...any) {
		warns = append(warns, Warning{Pos: pos(file, at), Msg: what + ": " + fmt.Sprintf(format, args...)})
	}
	for _, kv := range pairs(n) {
		k, v := kv[0], kv[1]
		switch key := k.Value; key {
		case "files", "irrelevant-files":
			ms := []matcher{}
			for _, it := range items(v) {
				m := matcher{pos: pos(file, it)}
				if s, ok := scalar(it); ok {
					m.regex = s
				} else if it.Kind == yaml.MappingNode {
					r, ok := scalar(get(it, "regex"))
					if !ok {
						warn(it, "%s: an item without a regex: not imported", key)
						continue
					}
					m.regex = r
					if neg, ok := scalar(get(it, "negate")); ok && neg == "true" {
						m.negate = true
					}
				} else {
					warn(it, "%s: an item that is not a regex: not imported", key)
					continue
				}
				ms = append(ms, m)
			}
			if key == "files" {
				a.files = &ms
			} else {
				a.irrelevant = &ms
			}
		case "dependencies":
			ds := []dep{}
			for _, it := range items(v) {
				d := dep{pos: pos(file, it)}
				if s, ok := scalar(it); ok {
					d.name = s
				} else if name, ok := scalar(get(it, "name")); ok {
					d.name = name
					if soft, ok := scalar(get(it, "soft")); ok && soft == "true" {
						d.soft = true
					}
				} else {
					warn(it, "dependencies: an item without a job name: not imported")
					continue
				}
				ds = append(ds, d)
			}
			a.deps = &ds
		case "semaphore", "semaphores":
			for _, it := range items(v) {
				name, ok := scalar(it)
				if !ok {
					name, ok = scalar(get(it, "name"))
				}
				if !ok {
					warn(it, "%s: an item without a semaphore name: not imported", key)
					continue
				}
				if get(it, "resources-first") != nil {
					warn(it, "%s: resources-first: not imported: Sortie has no resources to request", key)
				}
				a.sems = append(a.sems, ref{name: name, pos: pos(file, it)})
			}
		case "timeout", "attempts":
			s, _ := scalar(v)
			i, err := strconv.Atoi(s)
			if err != nil || i < 1 {
				warn(v, "%s: not a positive whole number: not imported", key)
				continue
			}
			if key == "timeout" {
				a.timeout = &i
			} else {
				a.attempts = &i
			}
		case "vars":
			if v.Kind != yaml.MappingNode {
				if !isNull(v) {
					warn(v, "vars: not a mapping: not imported")
				}
				continue
			}
			a.vars = map[string]variable{}
			var jinja, others []string
			for _, vkv := range pairs(v) {
				val := variable{pos: pos(file, vkv[0])}
				val.value, val.scalar = scalar(vkv[1])
				val.jinja = hasJinja(vkv[1])
				a.vars[vkv[0].Value] = val
				switch {
				case vkv[0].Value == playbookVar && val.jinja:
					warn(vkv[0], "vars.%s: Jinja (%s): not imported: Sortie cannot know the playbook it names", playbookVar, clip(val.value))
				case vkv[0].Value == playbookVar && !val.scalar:
					warn(vkv[0], "vars.%s: not a string: not imported", playbookVar)
				case vkv[0].Value == playbookVar:
				case val.jinja:
					jinja = append(jinja, vkv[0].Value)
				default:
					others = append(others, vkv[0].Value)
				}
			}
			if len(jinja) > 0 {
				warn(v, "vars: Jinja in %s: not imported: Sortie passes no Ansible variables, and nothing renders Jinja", strings.Join(jinja, ", "))
			}
			if len(others) > 0 {
				warn(v, "vars: %s: not imported: Sortie passes no Ansible variables (keep them in the inventory, or give the job env)", strings.Join(others, ", "))
			}
		default:
			switch why, ok := dropped[key]; {
			case extra[key]:
			case quietKeys[key]:
			case key == "voting" && scalarIs(v, "true"):
			case ok:
				warn(k, "%s: not imported: %s", key, why)
			default:
				warn(k, "%s: not imported: Sortie has no equivalent", key)
			}
		}
	}
	return a, warns
}

func scalarIs(n *yaml.Node, want string) bool {
	s, ok := scalar(n)
	return ok && s == want
}

// hasJinja reports whether a value holds a Jinja expression or statement
// anywhere.
func hasJinja(n *yaml.Node) bool {
	n = resolve(n)
	if n == nil {
		return false
	}
	if n.Kind == yaml.ScalarNode {
		return strings.Contains(n.Value, "{{") || strings.Contains(n.Value, "{%")
	}
	for _, c := range n.Content {
		if hasJinja(c) {
			return true
		}
	}
	return false
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return strconv.Quote(s)
}

// parseJob reads a job stanza; it returns false for one without a name.
func parseJob(s stanza, playbookVar string) (*job, []Warning, bool) {
	name, ok := scalar(get(s.body, "name"))
	if !ok {
		return nil, []Warning{{Pos: s.pos, Msg: "a job without a name: not imported"}}, false
	}
	j := &job{name: name, pos: s.pos}
	for _, kv := range pairs(s.body) {
		switch kv[0].Value {
		case "parent":
			j.hasParent = true
			if p, ok := scalar(kv[1]); ok {
				j.parent = ref{name: p, pos: pos(s.file, kv[1])}
			}
		case "abstract":
			j.abstract = scalarIs(kv[1], "true")
		case "run":
			j.hasRun = true
		}
	}
	a, warns := parseAttrs(s.file, s.body, "job "+name, playbookVar, map[string]bool{"parent": true, "abstract": true})
	j.own = a
	j.drops = warns
	return j, warns, true
}

// addVariant applies a later definition of the same job over it: Zuul
// applies every variant whose branches match, in order; Sortie deploys
// one branch, and applies them all. The first definition's parent holds.
func (j *job) addVariant(v *job) {
	j.variants++
	j.own = j.own.merge(v.own)
	j.abstract = j.abstract || v.abstract
	j.drops = append(j.drops, v.drops...)
}
