package graph

import (
	"slices"
	"time"
)

// Rerun returns the plan of a buildset that runs again the jobs of again
// (the ones that did not succeed) and every job below them; the bootstrap
// job is kept too (it makes the new buildset's checkout). Dependencies on
// jobs left out (they succeeded) are dropped, waves and the critical path
// (equal weights) are computed again, and each job left out is listed in
// NotSelected with reason "succeeded". The order stays topological.
func (p *Plan) Rerun(again map[string]bool) *Plan {
	keep := map[string]bool{}
	if len(p.Jobs) > 0 {
		keep[p.Jobs[0].Name] = true // the bootstrap job comes first
	}
	// Plan order is topological: a job is kept when it runs again or
	// depends on a kept job other than the bootstrap.
	for i, j := range p.Jobs {
		if again[j.Name] {
			keep[j.Name] = true
			continue
		}
		for _, d := range j.Dependencies {
			if keep[d] && (i == 0 || d != p.Jobs[0].Name) {
				keep[j.Name] = true
				break
			}
		}
	}
	out := &Plan{Pipeline: p.Pipeline, Bootstrap: p.Bootstrap, NotSelected: slices.Clone(p.NotSelected)}
	wave := map[string]int{}
	for _, j := range p.Jobs {
		if !keep[j.Name] {
			out.NotSelected = append(out.NotSelected, NotSelected{Name: j.Name, Reason: "succeeded"})
			continue
		}
		nj := Job{Name: j.Name, Dependencies: []string{}, Why: j.Why, Detail: j.Detail}
		for _, d := range j.Dependencies {
			if keep[d] {
				nj.Dependencies = append(nj.Dependencies, d)
				nj.Wave = max(nj.Wave, wave[d]+1)
			}
		}
		wave[j.Name] = nj.Wave
		out.Jobs = append(out.Jobs, nj)
	}
	slices.SortStableFunc(out.Jobs, func(a, b Job) int { return a.Wave - b.Wave })
	if out.NotSelected == nil {
		out.NotSelected = []NotSelected{}
	}
	out.CriticalPath, _ = out.critical(func(string) time.Duration { return time.Second })
	return out
}
