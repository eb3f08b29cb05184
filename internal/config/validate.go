package config

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// finish checks the references between sections once every file is read.
func (l *loader) finish() (*Config, error) {
	c := l.cfg
	e := &l.errs
	// A file that could not be read or parsed leaves holes (its jobs, its
	// pipelines) that are no mistakes of their own: the checks across
	// sections and files wait until it parses.
	if l.unread {
		return nil, e.list.sorted()
	}
	// Values that had an error are guesses (a bootstrap: ture is false):
	// checks that read them stay silent, so that the first error is the
	// one reported, not what only follows from it.
	bad := maps.Clone(e.bad)
	jobNames := slices.Sorted(maps.Keys(c.Jobs))
	semNames := slices.Sorted(maps.Keys(c.Semaphores))

	// What each job writes itself is checked before inheritance, once, at
	// the place it is written: a template's mistake is not repeated for
	// every job that extends it.
	for _, name := range c.JobOrder {
		j := c.Jobs[name]
		for name := range j.Env {
			if reservedEnv(name) {
				e.add(j.Pos, "jobs."+j.Name+".env."+name, "Sortie sets this variable itself", "", "rename it; SORTIE_* variables describe the build")
			}
		}
		for _, name := range j.SecretEnv {
			if reservedEnv(name) {
				e.add(j.Pos, "jobs."+j.Name+".secret_env", "Sortie sets this variable itself", strconv.Quote(name), "rename it; SORTIE_* variables describe the build")
			}
		}
		for i, dep := range j.Dependencies {
			p := fmt.Sprintf("jobs.%s.dependencies[%d]", name, i)
			switch target, ok := c.Jobs[dep.Name]; {
			case !ok && !bad["jobs"]:
				e.add(dep.Pos, p, "unknown job", strconv.Quote(dep.Name), suggest(dep.Name, jobNames, "jobs"))
			case ok && target.Abstract:
				e.add(dep.Pos, p, fmt.Sprintf("job %s is abstract: a template never runs, so no job can depend on it", dep.Name), "",
					"depend on a job that extends it")
			}
		}
		for i, s := range j.Semaphores {
			if _, ok := c.Semaphores[s.Name]; !ok && !bad.under("semaphores."+s.Name) {
				e.add(s.Pos, fmt.Sprintf("jobs.%s.semaphores[%d]", name, i), "unknown semaphore", strconv.Quote(s.Name), semHint(s.Name, semNames))
			}
		}
	}
	incomplete := l.inherit(jobNames)

	var boots []*Job
	// unsureBoot: some job's bootstrap key had an error, so whether there
	// is a bootstrap job is not known.
	unsureBoot := bad.under("jobs")
	for _, name := range c.JobOrder {
		j := c.Jobs[name]
		p := "jobs." + name
		if j.Bootstrap {
			boots = append(boots, j)
		}
		badBoot := bad.under(p + ".bootstrap")
		unsureBoot = unsureBoot || badBoot
		if j.Bootstrap && j.Abstract {
			e.add(j.Pos, p+".abstract", "the bootstrap job cannot be abstract", "", "it runs in every buildset; remove abstract: true, or bootstrap: true")
		}
		switch {
		case j.Run != "" && j.Playbook != "":
			e.add(j.Pos, "jobs."+name, "job sets both run and playbook", "", "keep one: playbook runs ansible-playbook, run any shell command")
		case j.Abstract || incomplete[name]:
			// A template need not do anything yet; what a job whose
			// extends failed does is not known.
		case badBoot || bad.under(p+".run") || bad.under(p+".playbook") || bad.under(p+".install"):
			// What it does is not known yet.
		case j.Run == "" && j.Playbook == "" && !(j.Bootstrap && len(j.Install) > 0):
			hint := "add run: <command> or playbook: <path>"
			if j.Bootstrap {
				hint = "add install: [commands], run: <command> or playbook: <path>"
			}
			if chain := c.Chain(j); len(chain) > 0 {
				hint += " (it extends " + strings.Join(chain, ", which extends ") + ", which set neither)"
			}
			e.add(j.Pos, "jobs."+name, "job has nothing to do", "", hint)
		}
		if len(j.Install) > 0 && !j.Bootstrap && !badBoot && !j.Abstract {
			hint := "move the commands to the bootstrap job, or use run"
			if from := j.Inherited("install"); from != "" {
				hint = "it takes them from " + from + "; set install: [] on it, or move them to the bootstrap job"
			}
			e.add(j.Pos, "jobs."+name+".install", "only the bootstrap job may have install", "", hint)
		}
		if j.Bootstrap && len(j.Dependencies) > 0 {
			hint := "it runs first in every buildset; remove its dependencies"
			if from := j.Inherited("dependencies"); from != "" {
				hint = "it runs first in every buildset; it takes them from " + from + ": set dependencies: [] on it"
			}
			e.add(j.Dependencies[0].Pos, "jobs."+name+".dependencies", "the bootstrap job cannot have dependencies", "", hint)
		}
	}
	// Where to say that something is missing: at the section when there is
	// one, else at the top of the (first) file.
	top := Pos{File: c.Files[0], Line: 1, Col: 1}
	switch {
	case len(boots) == 0 && unsureBoot:
		// The error in a bootstrap key, or in jobs, says it all.
	case len(boots) == 0 && len(c.Jobs) > 0:
		first := c.Jobs[c.JobOrder[0]]
		e.add(first.Pos, "jobs", "no bootstrap job", "", "mark exactly one job with bootstrap: true; it prepares the bastion for every buildset")
	case len(boots) == 0:
		e.add(cmpOr(l.jobsKey, top), "jobs", "no bootstrap job", "", "define a bootstrap job (bootstrap: true) under jobs:, which prepares the bastion for every buildset")
	case len(boots) > 1:
		for _, j := range boots[1:] {
			e.add(j.Pos, "jobs."+j.Name+".bootstrap", fmt.Sprintf("several bootstrap jobs: %s is one too (%s)", boots[0].Name, boots[0].Pos), "", "keep bootstrap: true on exactly one job")
		}
	}
	if len(c.Pipelines) == 0 && !bad.under("pipelines") {
		e.add(cmpOr(l.pipesKey, top), "pipelines", "no pipeline", "", "define at least one pipeline under pipelines:, naming the jobs it runs")
	}
	if len(boots) > 0 {
		c.Bootstrap = boots[0].Name
	}
	l.cycles()
	l.checkReports()

	for _, name := range c.PipelineOrder {
		pl := c.Pipelines[name]
		seen := make(map[string]Pos, len(pl.Jobs))
		for i, r := range pl.Jobs {
			// Made only for an error: 10,000 of them were a twentieth
			// of loading as many jobs.
			p := func() string { return fmt.Sprintf("pipelines.%s.jobs[%d]", name, i) }
			j, ok := c.Jobs[r.Name]
			if !ok {
				if bad["jobs"] {
					continue
				}
				e.add(r.Pos, p(), "unknown job", strconv.Quote(r.Name), suggest(r.Name, jobNames, "jobs"))
				continue
			}
			if j.Abstract {
				e.add(r.Pos, p(), fmt.Sprintf("job %s is abstract: a template never runs, so no pipeline can list it", r.Name), "",
					"list the jobs that extend it")
			}
			if first, ok := seen[r.Name]; ok {
				e.add(r.Pos, p(), fmt.Sprintf("job %q is listed twice, first at %s", r.Name, first), "", "list it once")
			}
			seen[r.Name] = r.Pos
		}
		if s := pl.Semaphore; s.Name != "" {
			sem, ok := c.Semaphores[s.Name]
			if !ok && !bad.under("semaphores."+s.Name) {
				e.add(s.Pos, "pipelines."+name+".semaphore", "unknown semaphore", strconv.Quote(s.Name), semHint(s.Name, semNames))
			}
			// The buildset holds its pipeline's semaphore from its first job
			// to its last: a job that also asks for it, with no second slot,
			// could never start.
			if ok && sem.Max == 1 {
				// A template's semaphores are reported once, where they
				// are written, however many of its jobs the pipeline runs.
				said := map[Pos]bool{}
				for _, r := range append([]Ref{{Name: c.Bootstrap}}, pl.Jobs...) {
					j := c.Jobs[r.Name]
					if j == nil {
						continue
					}
					for i, js := range j.Semaphores {
						if js.Name == s.Name && !said[js.Pos] {
							said[js.Pos] = true
							owner := j.Name
							if from := j.Inherited("semaphores"); from != "" {
								owner = from
							}
							e.add(js.Pos, fmt.Sprintf("jobs.%s.semaphores[%d]", owner, i),
								fmt.Sprintf("pipeline %s holds semaphore %s (max 1) for its whole buildset, so this job could never get it", name, s.Name),
								"", "remove it from the job: the pipeline's hold already covers the job")
						}
					}
				}
			}
		}
	}
	if len(e.list) > 0 {
		return nil, e.list.sorted()
	}
	return c, nil
}

// cmpOr returns p, or def when p is no position.
func cmpOr(p, def Pos) Pos {
	if p.Line == 0 {
		return def
	}
	return p
}

func reservedEnv(name string) bool { return strings.HasPrefix(name, "SORTIE_") }

func semHint(name string, names []string) string {
	if len(names) == 0 {
		return "define it under semaphores: with its max"
	}
	return suggest(name, names, "semaphores") + " (or define it under semaphores:)"
}

// cycles reports each dependency cycle once, as a -> b -> c -> a, at the
// dependency that closes it.
func (l *loader) cycles() {
	c := l.cfg
	const (
		white = iota
		grey
		black
	)
	color := make(map[string]int, len(c.Jobs))
	var stack []string
	reported := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		color[name] = grey
		stack = append(stack, name)
		j := c.Jobs[name]
		for i, dep := range j.Dependencies {
			if _, ok := c.Jobs[dep.Name]; !ok {
				continue
			}
			switch color[dep.Name] {
			case white:
				visit(dep.Name)
			case grey:
				start := slices.Index(stack, dep.Name)
				cycle := append(slices.Clone(stack[start:]), dep.Name)
				key := canonical(cycle[:len(cycle)-1])
				if !reported[key] {
					reported[key] = true
					l.errs.add(dep.Pos, fmt.Sprintf("jobs.%s.dependencies[%d]", name, i),
						"dependency cycle: "+strings.Join(cycle, " -> "), "", "remove one of these dependencies")
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[name] = black
	}
	for _, name := range c.JobOrder {
		if color[name] == white {
			visit(name)
		}
	}
}

// canonical names a cycle independently of where it was entered.
func canonical(cycle []string) string {
	best := 0
	for i := range cycle {
		if cycle[i] < cycle[best] {
			best = i
		}
	}
	rot := append(slices.Clone(cycle[best:]), cycle[:best]...)
	return strings.Join(rot, "\x00")
}
