package config

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// inherited are the keys a job takes from the job it extends when it does
// not write them itself. bootstrap and abstract are not among them: a
// template is not a template's child, and there is one bootstrap job.
// run and playbook are one choice, "what the job does": a job that writes
// either takes neither from its parent.
var inherited = []string{
	"install", "playbook", "run", "dependencies", "files", "irrelevant_files",
	"semaphores", "timeout", "attempts", "env", "secret_env", "duration_hint",
}

// inherit fills in, for every job that extends another, the keys it does
// not write, from the job it extends (itself complete first). An unknown
// parent or a cycle of extends is an error at the extends that names it;
// the jobs it leaves incomplete are returned, so that the checks of what a
// job does stay silent about them.
func (l *loader) inherit(jobNames []string) (incomplete map[string]bool) {
	c := l.cfg
	const (
		todo = iota
		busy
		done
	)
	state := make(map[string]int, len(c.Jobs))
	incomplete = map[string]bool{}
	reported := map[string]bool{}
	var stack []string
	var visit func(name string)
	visit = func(name string) {
		state[name] = busy
		stack = append(stack, name)
		defer func() {
			stack = stack[:len(stack)-1]
			state[name] = done
		}()
		j := c.Jobs[name]
		ref := j.Extends
		if ref.Name == "" {
			return
		}
		parent, ok := c.Jobs[ref.Name]
		if !ok {
			incomplete[name] = true
			if !l.errs.bad["jobs"] {
				l.errs.add(ref.Pos, "jobs."+name+".extends", "unknown job", strconv.Quote(ref.Name), suggest(ref.Name, jobNames, "jobs"))
			}
			return
		}
		switch state[ref.Name] {
		case todo:
			visit(ref.Name)
		case busy:
			start := slices.Index(stack, ref.Name)
			cycle := append(slices.Clone(stack[start:]), ref.Name)
			for _, n := range cycle {
				incomplete[n] = true
			}
			if key := canonical(cycle[:len(cycle)-1]); !reported[key] {
				reported[key] = true
				l.errs.add(ref.Pos, "jobs."+name+".extends", "extends cycle: "+strings.Join(cycle, " -> "), "",
					"a job cannot extend itself, even through other jobs; remove one of these extends")
			}
			return
		}
		if incomplete[ref.Name] {
			incomplete[name] = true
		}
		j.takeFrom(parent)
	}
	for _, name := range c.JobOrder {
		if state[name] == todo {
			visit(name)
		}
	}
	return incomplete
}

// takeFrom fills in the keys j does not write from parent, which is
// complete. Lists are copied: no two jobs share a backing array.
func (j *Job) takeFrom(p *Job) {
	if j.from == nil {
		j.from = map[string]string{}
	}
	// The job that set what p has: p itself when it wrote the key (for
	// env, even when it merged it with its own parent's).
	origin := func(key string) string {
		if p.set[key] {
			return p.Name
		}
		return p.from[key]
	}
	takes := func(key string) bool {
		if j.set[key] || !(p.set[key] || p.from[key] != "") {
			return false
		}
		j.from[key] = origin(key)
		return true
	}
	doesSomething := j.set["run"] || j.set["playbook"]
	for _, key := range inherited {
		if (key == "run" || key == "playbook") && doesSomething {
			continue
		}
		if key == "env" && j.set["env"] && (p.set["env"] || p.from["env"] != "") {
			// Maps merge, the job's own variables winning.
			env := maps.Clone(p.Env)
			maps.Copy(env, j.Env)
			j.Env = env
			j.from["env"] = origin("env")
			continue
		}
		if !takes(key) {
			continue
		}
		switch key {
		case "install":
			j.Install = slices.Clone(p.Install)
		case "playbook":
			j.Playbook = p.Playbook
		case "run":
			j.Run = p.Run
		case "dependencies":
			j.Dependencies = slices.Clone(p.Dependencies)
		case "files":
			j.Files = slices.Clone(p.Files)
		case "irrelevant_files":
			j.IrrelevantFiles = slices.Clone(p.IrrelevantFiles)
		case "semaphores":
			j.Semaphores = slices.Clone(p.Semaphores)
		case "timeout":
			j.Timeout = p.Timeout
		case "attempts":
			j.Attempts = p.Attempts
		case "env":
			j.Env = maps.Clone(p.Env)
		case "secret_env":
			j.SecretEnv = slices.Clone(p.SecretEnv)
		case "duration_hint":
			j.DurationHint = p.DurationHint
		}
	}
}

// Chain returns the jobs j extends, nearest first.
func (c *Config) Chain(j *Job) []string {
	var out []string
	seen := map[string]bool{j.Name: true}
	for p := j.Extends.Name; p != "" && !seen[p]; {
		out = append(out, p)
		seen[p] = true
		pj := c.Jobs[p]
		if pj == nil {
			break
		}
		p = pj.Extends.Name
	}
	return out
}
