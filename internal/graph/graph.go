// Package graph turns a pipeline and a change into the frozen job graph of a
// buildset (SPEC §2.2): which jobs are selected and why, their effective
// dependencies, a topological order, waves and the critical path. It is pure:
// values in, values out, no I/O.
package graph

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
)

// Why a job was selected.
const (
	WhyBootstrap = "bootstrap" // the bootstrap job, selected whenever another job is, or by its own matchers
	WhyFiles     = "files"     // its file matchers matched the change
	WhyAll       = "all"       // no file list, or the job has no matchers
	whyNeededBy  = "needed by "
)

// Why a job was not selected.
const (
	NotFiles           = "files"            // no changed file matched files
	NotIrrelevantFiles = "irrelevant_files" // every changed file was irrelevant
)

// Plan is the frozen job graph of one buildset.
type Plan struct {
	Pipeline string `json:"pipeline"`
	// Jobs are the selected jobs in topological order.
	Jobs        []Job         `json:"jobs"`
	NotSelected []NotSelected `json:"not_selected"`
	// CriticalPath is the heaviest dependency chain by Weight.
	CriticalPath []string `json:"critical_path"`
	// Bootstrap names the bootstrap job (Jobs[0]).
	Bootstrap string `json:"-"`
	// Estimate is the critical path's length from duration hints; zero when
	// no selected job has a hint.
	Estimate time.Duration `json:"-"`
}

// Job is a selected job.
type Job struct {
	Name string `json:"name"`
	// Dependencies are the effective ones: the bootstrap job, every hard
	// dependency, and the soft ones that are selected.
	Dependencies []string `json:"dependencies"`
	// Wave is the length of the longest dependency chain above the job.
	Wave int `json:"wave"`
	// Why is WhyBootstrap, WhyFiles, WhyAll or "needed by <job>".
	Why string `json:"why"`
	// Detail says the same in words, naming what decided it: the file and
	// the pattern that matched ("matched playbooks/x.yaml by ^playbooks/"),
	// whether there was no file list or the job has no matchers, or what
	// the job needing it is. Plans frozen before it existed have none.
	Detail string `json:"detail"`
}

// NotSelected is a job of the pipeline that the change does not run.
type NotSelected struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// MissingDependencyError is a buildset error: a selected job has a hard
// dependency on a job that the pipeline does not run.
type MissingDependencyError struct {
	Job, Dependency, Pipeline string
}

func (e *MissingDependencyError) Error() string {
	return fmt.Sprintf("%s needs %s, which pipeline %s does not run", e.Job, e.Dependency, e.Pipeline)
}

// UnknownPipelineError is returned for a pipeline the config does not define.
type UnknownPipelineError struct{ Pipeline string }

func (e *UnknownPipelineError) Error() string {
	return fmt.Sprintf("unknown pipeline %q", e.Pipeline)
}

// Select computes the plan of a buildset of pipeline for a change. A nil or
// empty files list (cron, manual, an empty commit) matches every job.
func Select(cfg *config.Config, pipeline string, files []string) (*Plan, error) {
	pl, ok := cfg.Pipelines[pipeline]
	if !ok {
		return nil, &UnknownPipelineError{Pipeline: pipeline}
	}
	if cfg.Jobs[cfg.Bootstrap] == nil {
		// config.Load refuses this; a hand-built Config might not.
		return nil, fmt.Errorf("config has no bootstrap job")
	}
	// The pipeline's jobs in listed order, the bootstrap job first.
	order := make([]string, 1, len(pl.Jobs)+1)
	order[0] = cfg.Bootstrap
	index := make(map[string]int, len(pl.Jobs)+1)
	index[cfg.Bootstrap] = 0
	for _, r := range pl.Jobs {
		if _, dup := index[r.Name]; !dup {
			index[r.Name] = len(order)
			order = append(order, r.Name)
		}
	}

	// Sized for every job, as most runs select them all.
	why := make(map[string]string, len(order))
	detail := make(map[string]string, len(order))
	notWhy := map[string]string{}
	changed := newFileSet(files)
	for _, name := range order {
		j := cfg.Jobs[name]
		switch {
		case j.Bootstrap && (len(files) == 0 || len(j.Files) == 0 && len(j.IrrelevantFiles) == 0):
			why[name] = WhyBootstrap
			detail[name] = bootstrapDetail
			continue
		case files == nil:
			why[name] = WhyAll
			detail[name] = "no file list (the event had none, as a cron or manual start): every job runs"
		case len(files) == 0:
			why[name] = WhyAll
			detail[name] = "an empty file list (an empty commit): every job runs"
		case len(j.Files) == 0 && len(j.IrrelevantFiles) == 0:
			why[name] = WhyAll
			detail[name] = "it has no files or irrelevant_files: it runs for every change"
		case len(j.Files) > 0 && !changed.anyMatch(j.Files):
			notWhy[name] = NotFiles
		case len(j.IrrelevantFiles) > 0 && changed.allMatch(j.IrrelevantFiles):
			notWhy[name] = NotIrrelevantFiles
		default:
			why[name] = WhyFiles
			detail[name] = changed.matchDetail(j)
		}
	}

	// Pull in hard dependencies transitively, in pipeline order so that
	// "needed by" names the first job that needed it.
	queue := slices.Clone(order)
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if _, sel := why[name]; !sel {
			continue
		}
		for _, dep := range cfg.Jobs[name].Dependencies {
			if dep.Soft {
				continue
			}
			if _, in := index[dep.Name]; !in {
				return nil, &MissingDependencyError{Job: name, Dependency: dep.Name, Pipeline: pipeline}
			}
			if _, sel := why[dep.Name]; !sel {
				why[dep.Name] = whyNeededBy + name
				detail[dep.Name] = fmt.Sprintf("%s needs it (a hard dependency)", name)
				if n := notWhy[dep.Name]; n != "" {
					detail[dep.Name] += "; on its own it would not run: " + notSelectedDetail(n)
				}
				delete(notWhy, dep.Name)
				queue = append(queue, dep.Name)
			}
		}
	}

	// The bootstrap job follows its own matchers, as any job does, but
	// every other job runs after it: it runs whenever another one does.
	boot := cfg.Bootstrap
	switch _, sel := why[boot]; {
	case sel && notWhy[boot] == "" && why[boot] != WhyBootstrap:
		// Its matchers matched (or a job needed it): say which file.
		detail[boot] = bootstrapDetail + "; " + ownDetail(why[boot], detail[boot])
		why[boot] = WhyBootstrap
	case !sel && len(why) > 0:
		why[boot] = WhyBootstrap
		detail[boot] = bootstrapDetail + "; on its own it would not run: " + notSelectedDetail(notWhy[boot])
		delete(notWhy, boot)
	}

	p := &Plan{Pipeline: pipeline, Bootstrap: cfg.Bootstrap, Jobs: []Job{}, NotSelected: []NotSelected{}}
	deps := make(map[string][]string, len(why))
	for _, name := range order {
		if _, sel := why[name]; !sel {
			p.NotSelected = append(p.NotSelected, NotSelected{Name: name, Reason: notWhy[name]})
			continue
		}
		var ds []string
		if name != cfg.Bootstrap {
			ds = append(ds, cfg.Bootstrap)
		}
		for _, dep := range cfg.Jobs[name].Dependencies {
			if _, sel := why[dep.Name]; sel && !slices.Contains(ds, dep.Name) {
				ds = append(ds, dep.Name)
			}
		}
		deps[name] = ds
	}

	// Waves: longest chain above each job. The config has no cycles, so a
	// memoised depth-first walk terminates.
	wave := make(map[string]int, len(why))
	var depth func(string) int
	depth = func(name string) int {
		if w, ok := wave[name]; ok {
			return w
		}
		w := 0
		for _, d := range deps[name] {
			w = max(w, depth(d)+1)
		}
		wave[name] = w
		return w
	}
	selected := make([]string, 0, len(why))
	for _, name := range order {
		if _, sel := why[name]; sel {
			depth(name)
			selected = append(selected, name)
		}
	}
	// Sorting by wave, then pipeline order, is a topological order: every
	// dependency has a smaller wave than its dependent.
	slices.SortStableFunc(selected, func(a, b string) int {
		if wave[a] != wave[b] {
			return wave[a] - wave[b]
		}
		return index[a] - index[b]
	})
	p.Jobs = make([]Job, 0, len(selected))
	for _, name := range selected {
		ds := deps[name]
		if ds == nil {
			ds = []string{}
		}
		p.Jobs = append(p.Jobs, Job{Name: name, Dependencies: ds, Wave: wave[name], Why: why[name], Detail: detail[name]})
	}
	p.CriticalPath, p.Estimate = p.critical(HintWeights(cfg, p))
	if !hasHints(cfg, p) {
		p.Estimate = 0
	}
	return p, nil
}

const bootstrapDetail = "the bootstrap job: it makes the buildset's checkout, and every other job runs after it"

// notSelectedDetail says in words why a job's matchers do not select it.
func notSelectedDetail(reason string) string {
	switch reason {
	case NotFiles:
		return "no changed file matches its files"
	case NotIrrelevantFiles:
		return "every changed file matches its irrelevant_files"
	}
	return reason
}

// ownDetail says why the bootstrap job runs on its own account: its
// matchers matched, or a job names it as a hard dependency.
func ownDetail(why, detail string) string {
	if why == WhyFiles {
		return "its own matchers " + detail
	}
	return detail
}

// NothingSelected is the error of a buildset whose plan selects no job:
// it ends at once, SKIPPED, without touching the bastion.
const NothingSelected = "no job matched the changed files"

// Empty reports whether the plan selects no job at all (every job of the
// pipeline, the bootstrap job included, has matchers that the change does
// not match).
func (p *Plan) Empty() bool { return len(p.Jobs) == 0 }

// fileSet is the changed files, sorted, so that a matcher with a literal
// prefix looks only at the files in that prefix's range.
type fileSet []string

func newFileSet(files []string) fileSet {
	fs := slices.Clone(files)
	slices.Sort(fs)
	return fs
}

// anyMatch reports whether some file matches some matcher.
func (fs fileSet) anyMatch(ms []config.Matcher) bool {
	for _, m := range ms {
		p := m.Prefix()
		i, _ := slices.BinarySearch(fs, p)
		for ; i < len(fs) && strings.HasPrefix(fs[i], p); i++ {
			if m.Match(fs[i]) {
				return true
			}
		}
	}
	return false
}

// firstMatch returns the first matcher (in the job's order) that some file
// matches, and the first such file in path order.
func (fs fileSet) firstMatch(ms []config.Matcher) (file string, m config.Matcher, ok bool) {
	for _, m := range ms {
		p := m.Prefix()
		i, _ := slices.BinarySearch(fs, p)
		for ; i < len(fs) && strings.HasPrefix(fs[i], p); i++ {
			if m.Match(fs[i]) {
				return fs[i], m, true
			}
		}
	}
	return "", config.Matcher{}, false
}

// firstRelevant returns the first file, in path order, that matches none
// of the matchers.
func (fs fileSet) firstRelevant(ms []config.Matcher) (string, bool) {
	for _, f := range fs {
		if !slices.ContainsFunc(ms, func(m config.Matcher) bool { return m.Match(f) }) {
			return f, true
		}
	}
	return "", false
}

// matchDetail says which changed file selected a job whose matchers
// passed: the file its files matched and by which pattern, and the file
// that is not irrelevant.
func (fs fileSet) matchDetail(j *config.Job) string {
	var parts []string
	if f, m, ok := fs.firstMatch(j.Files); ok {
		parts = append(parts, fmt.Sprintf("matched %s by %s", f, matcherText(m)))
	}
	if len(j.IrrelevantFiles) > 0 {
		if f, ok := fs.firstRelevant(j.IrrelevantFiles); ok {
			parts = append(parts, fmt.Sprintf("%s matches none of its irrelevant_files", f))
		}
	}
	return strings.Join(parts, ", and ")
}

// matcherText is a matcher as the config writes it.
func matcherText(m config.Matcher) string {
	if m.Negate {
		return fmt.Sprintf("{regex: %s, negate: true}", m.Regex)
	}
	return m.Regex
}

// allMatch reports whether every file matches some matcher.
func (fs fileSet) allMatch(ms []config.Matcher) bool {
	for _, f := range fs {
		if !slices.ContainsFunc(ms, func(m config.Matcher) bool { return m.Match(f) }) {
			return false
		}
	}
	return true
}

func hasHints(cfg *config.Config, p *Plan) bool {
	for _, j := range p.Jobs {
		if cfg.Jobs[j.Name].DurationHint > 0 {
			return true
		}
	}
	return false
}

// Weight gives a job's expected duration.
type Weight func(job string) time.Duration

// HintWeights weighs each selected job by its duration_hint. A job without a
// hint weighs the mean of the hints given, or 1s when there are none (equal
// weights), so that the critical path stays meaningful with partial hints.
func HintWeights(cfg *config.Config, p *Plan) Weight {
	var sum time.Duration
	n := 0
	for _, j := range p.Jobs {
		if h := cfg.Jobs[j.Name].DurationHint; h > 0 {
			sum += h
			n++
		}
	}
	def := time.Second
	if n > 0 {
		def = sum / time.Duration(n)
	}
	return func(job string) time.Duration {
		if j := cfg.Jobs[job]; j != nil && j.DurationHint > 0 {
			return j.DurationHint
		}
		return def
	}
}

// Remaining returns, for every selected job, the weight of the heaviest
// chain that starts at it and runs down through its dependents, itself
// included. The scheduler starts the ready job with the largest first.
func (p *Plan) Remaining(w Weight) map[string]time.Duration {
	rem := make(map[string]time.Duration, len(p.Jobs))
	dependents := p.Dependents()
	for i := len(p.Jobs) - 1; i >= 0; i-- {
		name := p.Jobs[i].Name
		var best time.Duration
		for _, d := range dependents[name] {
			best = max(best, rem[d])
		}
		rem[name] = w(name) + best
	}
	return rem
}

// Dependents maps each selected job to the selected jobs that depend on it,
// in plan order.
func (p *Plan) Dependents() map[string][]string {
	out := map[string][]string{}
	for _, j := range p.Jobs {
		for _, d := range j.Dependencies {
			out[d] = append(out[d], j.Name)
		}
	}
	return out
}

// critical returns the heaviest chain from a root to a leaf, and its weight.
func (p *Plan) critical(w Weight) ([]string, time.Duration) {
	if len(p.Jobs) == 0 {
		return []string{}, 0
	}
	rem := p.Remaining(w)
	dependents := p.Dependents()
	start := p.Jobs[0].Name
	for _, j := range p.Jobs {
		if len(j.Dependencies) == 0 && rem[j.Name] > rem[start] {
			start = j.Name
		}
	}
	path := []string{start}
	for cur := start; ; {
		next, best := "", time.Duration(-1)
		for _, d := range dependents[cur] {
			if rem[d] > best {
				next, best = d, rem[d]
			}
		}
		if next == "" {
			break
		}
		path = append(path, next)
		cur = next
	}
	return path, rem[start]
}

// Job returns the selected job of that name, or nil.
func (p *Plan) Job(name string) *Job {
	for i := range p.Jobs {
		if p.Jobs[i].Name == name {
			return &p.Jobs[i]
		}
	}
	return nil
}

// Span is when a build ran: from its first attempt's start to its end.
type Span struct{ Start, End time.Time }

// RunPath is the critical path as run, from the first job to the last:
// it ends at the job that ended last and goes back, each time, to the
// dependency of the current job that ended last (the one its start waited
// for), until a job none of whose dependencies ran. Making a job off this
// path faster would not have ended the buildset sooner. Jobs without a
// span (never ran) are not on it; it is empty when no job ran. Ties go to
// the job later in plan order.
func (p *Plan) RunPath(spans map[string]Span) []string {
	last := ""
	for _, j := range p.Jobs {
		if s, ok := spans[j.Name]; ok && (last == "" || !s.End.Before(spans[last].End)) {
			last = j.Name
		}
	}
	if last == "" {
		return []string{}
	}
	order := make(map[string]int, len(p.Jobs))
	for i, j := range p.Jobs {
		order[j.Name] = i
	}
	path := []string{last}
	for cur := last; ; {
		next := ""
		for _, d := range p.Jobs[order[cur]].Dependencies {
			s, ok := spans[d]
			if !ok {
				continue
			}
			if next == "" || s.End.After(spans[next].End) || (s.End.Equal(spans[next].End) && order[d] > order[next]) {
				next = d
			}
		}
		if next == "" {
			break
		}
		path = append(path, next)
		cur = next
	}
	slices.Reverse(path)
	return path
}
