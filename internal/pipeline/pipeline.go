package pipeline

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
)

// ErrUnknownPipeline is returned by Enqueue for a pipeline the snapshot does
// not hold.
var ErrUnknownPipeline = errors.New("unknown pipeline")

// ErrDuplicate is returned by Enqueue and Snapshot.Validate when a buildset
// ID appears twice.
var ErrDuplicate = errors.New("duplicate buildset")

// NewBuildset is the value of Coalesce.Into: the merge is a buildset the
// caller creates, with an ID of its own.
const NewBuildset = "new"

// Snapshot is the state Decide reads: every pipeline with its queue, and the
// pause of all pipelines. Decide does not modify it.
type Snapshot struct {
	// PauseAll, when not nil, pauses every pipeline.
	PauseAll *Pause
	// Pipelines in any order; Decide sorts what it needs.
	Pipelines []Pipeline
}

// Pause says who paused and why, for the UI and for Wait reasons.
type Pause struct {
	By     string
	Reason string
	At     time.Time
}

// Pipeline is one pipeline's config and queue.
type Pipeline struct {
	Name       string
	Manager    config.Manager
	Precedence config.Precedence
	// Paused, when not nil, pauses this pipeline.
	Paused *Pause
	// Queued are the buildsets that wait for the manager, in any order.
	Queued []Buildset
	// Running are the buildsets the manager released (a Start or Coalesce
	// was applied) that have not finished, whether or not they hold the
	// pipeline semaphore yet. Only ID and Commit are read.
	Running []Buildset
}

// Buildset is what the managers need to know of one buildset.
type Buildset struct {
	ID     string
	Commit string
	// Files are the changed files; nil or empty means no file list (every
	// job of the pipeline matches, SPEC §2.2).
	Files     []string
	CreatedAt time.Time
	// Seq is the store's arrival sequence; it orders buildsets created at
	// the same instant.
	Seq int64
	// Pinned is a buildset that one process made to run itself (a `sortie
	// run`'s): it is never superseded nor merged, nor does it supersede
	// or join others; it is started in its turn, as arrival order and the
	// manager say, by that process alone.
	Pinned bool
}

// compareAge orders buildsets by arrival: created time, then sequence, then
// ID. It is negative when a arrived first.
func compareAge(a, b Buildset) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Seq, b.Seq); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// Plan is what Decide asks the caller to do, in order.
type Plan struct {
	// Actions: every Supersede, then the starts (Start and Coalesce), higher
	// precedence first, then oldest first.
	Actions []Action
	// Waiting lists every buildset the plan leaves queued, with why, by
	// pipeline name then arrival. It changes nothing; it is for status and
	// logs.
	Waiting []Wait
}

// Empty reports whether the plan has no action.
func (p Plan) Empty() bool { return len(p.Actions) == 0 }

// String is one line per action, then one per wait.
func (p Plan) String() string {
	var b strings.Builder
	for _, a := range p.Actions {
		b.WriteString(a.String())
		b.WriteByte('\n')
	}
	for _, w := range p.Waiting {
		b.WriteString(w.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Action is one thing the caller does: a Start, a Supersede or a Coalesce.
type Action interface {
	// PipelineName is the pipeline the action belongs to.
	PipelineName() string
	// Why is the human reason for the action.
	Why() string
	// String is one line for logs: what, and why.
	String() string
	action()
}

// Start releases a queued buildset to run: the caller has it wait for its
// pipeline semaphore and run, and counts it as running from now on.
type Start struct {
	Pipeline string
	Buildset string
	Reason   string
}

// Supersede replaces a queued buildset by a newer one of its pipeline: the
// caller finishes Buildset CANCELED with Reason, which names By.
type Supersede struct {
	Pipeline string
	Buildset string
	By       string
	Reason   string
}

// Coalesce merges queued buildsets into one and starts it: the caller
// creates a new buildset of the pipeline for Commit and Files (created at
// Since), finishes each of Merge CANCELED with MemberReason(newID), and
// starts the new one as for a Start.
type Coalesce struct {
	Pipeline string
	// Merge are the members, oldest first.
	Merge []string
	// Commit is the newest member's.
	Commit string
	// Files is the sorted union of the members' files, or nil (every job)
	// when a member has no file list.
	Files []string
	// Into is NewBuildset.
	Into string
	// Since is the oldest member's CreatedAt.
	Since  time.Time
	Reason string
}

// MemberReason is the reason recorded on each member once the merged
// buildset exists as newID.
func (c Coalesce) MemberReason(newID string) string {
	return fmt.Sprintf("coalesced into %s with %s, for commit %s", newID, strings.Join(c.Merge, ", "), short(c.Commit))
}

// Wait is a buildset left queued, with why.
type Wait struct {
	Pipeline string
	Buildset string
	Reason   string
}

func (Start) action()     {}
func (Supersede) action() {}
func (Coalesce) action()  {}

// PipelineName implements Action.
func (a Start) PipelineName() string { return a.Pipeline }

// PipelineName implements Action.
func (a Supersede) PipelineName() string { return a.Pipeline }

// PipelineName implements Action.
func (a Coalesce) PipelineName() string { return a.Pipeline }

// Why implements Action.
func (a Start) Why() string { return a.Reason }

// Why implements Action.
func (a Supersede) Why() string { return a.Reason }

// Why implements Action.
func (a Coalesce) Why() string { return a.Reason }

func (a Start) String() string {
	return fmt.Sprintf("start %s/%s: %s", a.Pipeline, a.Buildset, a.Reason)
}

func (a Supersede) String() string {
	return fmt.Sprintf("supersede %s/%s by %s: %s", a.Pipeline, a.Buildset, a.By, a.Reason)
}

func (a Coalesce) String() string {
	return fmt.Sprintf("coalesce %s/%s into %s: %s", a.Pipeline, strings.Join(a.Merge, "+"), a.Into, a.Reason)
}

func (w Wait) String() string {
	return fmt.Sprintf("wait %s/%s: %s", w.Pipeline, w.Buildset, w.Reason)
}

// Validate reports what Decide cannot make sense of: a pipeline named
// twice, a buildset ID that appears twice, a manager or precedence the
// config language does not have. Decide never fails; on such a snapshot it
// still answers (an unknown manager acts as serial, an unknown precedence as
// normal), but the caller has a bug to fix.
func (s Snapshot) Validate() error {
	var errs []error
	pipes := map[string]bool{}
	ids := map[string]string{}
	for _, p := range s.Pipelines {
		if pipes[p.Name] {
			errs = append(errs, fmt.Errorf("pipeline %q: listed twice", p.Name))
		}
		pipes[p.Name] = true
		switch p.Manager {
		case config.ManagerSerial, config.ManagerSupercedent, config.ManagerIndependent, config.ManagerCoalesce:
		default:
			errs = append(errs, fmt.Errorf("pipeline %q: unknown manager %q", p.Name, p.Manager))
		}
		switch p.Precedence {
		case config.PrecedenceHigh, config.PrecedenceNormal, config.PrecedenceLow:
		default:
			errs = append(errs, fmt.Errorf("pipeline %q: unknown precedence %q", p.Name, p.Precedence))
		}
		for _, list := range [][]Buildset{p.Queued, p.Running} {
			for _, b := range list {
				if prev, ok := ids[b.ID]; ok {
					errs = append(errs, fmt.Errorf("pipeline %q: buildset %q (also in %q): %w", p.Name, b.ID, prev, ErrDuplicate))
				}
				ids[b.ID] = p.Name
			}
		}
	}
	return errors.Join(errs...)
}

// Enqueue is Decide for the snapshot with b added to the queue of the named
// pipeline: what to do now that b has arrived. It does not modify s. It
// fails when the pipeline is not in s or b's ID already is.
func Enqueue(s Snapshot, pipeline string, b Buildset) (Plan, error) {
	i := slices.IndexFunc(s.Pipelines, func(p Pipeline) bool { return p.Name == pipeline })
	if i < 0 {
		return Plan{}, fmt.Errorf("enqueue %s to %s: %w", b.ID, pipeline, ErrUnknownPipeline)
	}
	for _, p := range s.Pipelines {
		for _, list := range [][]Buildset{p.Queued, p.Running} {
			if slices.ContainsFunc(list, func(x Buildset) bool { return x.ID == b.ID }) {
				return Plan{}, fmt.Errorf("enqueue %s to %s: already in %s: %w", b.ID, pipeline, p.Name, ErrDuplicate)
			}
		}
	}
	pipes := slices.Clone(s.Pipelines)
	p := pipes[i]
	p.Queued = append(slices.Clip(p.Queued), b)
	pipes[i] = p
	s.Pipelines = pipes
	return Decide(s), nil
}

// Decide returns what the managers do with the snapshot. It is pure: the
// same snapshot, in whatever order its lists are, gives the same plan.
// Applying the plan and deciding again, with nothing new, gives an empty
// plan. It is Merge of the Decisions of its pipelines.
func Decide(s Snapshot) Plan {
	ds := make([]Decision, len(s.Pipelines))
	for i, p := range s.Pipelines {
		ds[i] = DecidePipeline(s.PauseAll, p)
	}
	return Merge(ds)
}

// Decision is what the managers decide for one pipeline: it depends on
// that pipeline (its config, pause and buildsets) and on the pause of all,
// and on nothing else. A caller that keeps the Decisions of its pipelines
// decides again only for those whose inputs changed, and Merges them into
// the Plan that Decide would give.
type Decision struct {
	pipeline    string
	bookkeeping []Action
	starts      []start
	waiting     []Wait
}

// DecidePipeline decides for pipeline p under all, the pause of all
// pipelines (nil for none).
func DecidePipeline(all *Pause, p Pipeline) Decision {
	d := &decider{}
	d.pipeline(all, p)
	return Decision{pipeline: p.Name, bookkeeping: d.bookkeeping, starts: d.starts, waiting: d.waiting}
}

// Merge makes the Plan of several pipelines' Decisions, given in any
// order: Decide's for the snapshot of those pipelines. It does not modify
// ds.
func Merge(ds []Decision) Plan {
	ds = slices.Clone(ds)
	slices.SortStableFunc(ds, func(a, b Decision) int { return strings.Compare(a.pipeline, b.pipeline) })
	var plan Plan
	var starts []start
	for _, d := range ds {
		plan.Actions = append(plan.Actions, d.bookkeeping...)
		plan.Waiting = append(plan.Waiting, d.waiting...)
		starts = append(starts, d.starts...)
	}
	slices.SortStableFunc(starts, func(a, b start) int {
		if c := cmp.Compare(b.rank, a.rank); c != 0 {
			return c
		}
		if c := compareAge(a.age, b.age); c != 0 {
			return c
		}
		return strings.Compare(a.act.PipelineName(), b.act.PipelineName())
	})
	for _, st := range starts {
		plan.Actions = append(plan.Actions, st.act)
	}
	return plan
}

// start is a Start or Coalesce with what orders it.
type start struct {
	act  Action
	rank int
	age  Buildset
}

type decider struct {
	bookkeeping []Action
	starts      []start
	waiting     []Wait
}

func (d *decider) pipeline(all *Pause, p Pipeline) {
	queued := slices.Clone(p.Queued)
	slices.SortFunc(queued, compareAge)
	running := slices.Clone(p.Running)
	slices.SortFunc(running, func(a, b Buildset) int { return strings.Compare(a.ID, b.ID) })
	held := pauseReason(all, p)
	rank := p.Precedence.Rank()
	manager := p.Manager
	switch manager {
	case config.ManagerSerial, config.ManagerSupercedent, config.ManagerIndependent, config.ManagerCoalesce:
	default:
		manager = config.ManagerSerial
	}

	wait := func(list []Buildset, reason string) {
		for _, b := range list {
			d.waiting = append(d.waiting, Wait{Pipeline: p.Name, Buildset: b.ID, Reason: reason})
		}
	}
	startOne := func(b Buildset, reason string) {
		d.starts = append(d.starts, start{act: Start{Pipeline: p.Name, Buildset: b.ID, Reason: reason}, rank: rank, age: b})
	}

	if len(queued) == 0 {
		return
	}
	switch manager {
	case config.ManagerIndependent:
		if held != "" {
			wait(queued, held)
			return
		}
		for _, b := range queued {
			startOne(b, "independent: every buildset starts at once")
		}

	case config.ManagerSupercedent:
		// The newest unpinned buildset supersedes the older unpinned
		// ones; what is left (it and the pinned) starts one at a time,
		// oldest first.
		var left, unpinned []Buildset
		for _, b := range queued {
			if b.Pinned {
				left = append(left, b)
			} else {
				unpinned = append(unpinned, b)
			}
		}
		if len(unpinned) > 0 {
			newest := unpinned[len(unpinned)-1]
			for _, b := range unpinned[:len(unpinned)-1] {
				d.bookkeeping = append(d.bookkeeping, Supersede{
					Pipeline: p.Name, Buildset: b.ID, By: newest.ID,
					Reason: fmt.Sprintf("superseded by %s (commit %s), a newer event of supercedent pipeline %s", newest.ID, short(newest.Commit), p.Name),
				})
			}
			left = append(left, newest)
			slices.SortFunc(left, compareAge)
		}
		switch {
		case held != "":
			wait(left, held)
		case len(running) > 0:
			wait(left, behind(running, "supercedent: one at a time; a newer event replaces this one"))
		default:
			why := "newest event and nothing running (supercedent)"
			if left[0].Pinned {
				why = "a sortie run's, the oldest waiting, and nothing running (supercedent)"
			}
			startOne(left[0], why)
			wait(left[1:], behind(left[:1], "supercedent: one at a time"))
		}

	case config.ManagerCoalesce:
		// The unpinned buildsets merge into one, which takes its turn as
		// its oldest member would; each pinned one takes its own.
		var unpinned []Buildset
		var turns [][]Buildset
		for _, b := range queued {
			if b.Pinned {
				turns = append(turns, []Buildset{b})
			} else {
				if unpinned == nil {
					turns = append(turns, nil) // the merge's turn, filled below
				}
				unpinned = append(unpinned, b)
			}
		}
		for i, t := range turns {
			if t == nil {
				turns[i] = unpinned
			}
		}
		switch {
		case held != "":
			wait(queued, held)
		case len(running) > 0:
			wait(queued, behind(running, "coalesce: the buildsets waiting merge into one when it finishes"))
		default:
			first := turns[0]
			switch {
			case len(first) == 1 && len(queued) == 1:
				startOne(first[0], "the only one waiting and nothing running (coalesce)")
			case len(first) == 1:
				startOne(first[0], "oldest waiting and nothing running (coalesce)")
			default:
				c := coalesce(p.Name, first)
				d.starts = append(d.starts, start{act: c, rank: rank, age: first[0]})
			}
			for _, t := range turns[1:] {
				wait(t, behind(turns[0][:1], "coalesce: one at a time; the buildsets waiting merge into one when it finishes"))
			}
		}

	default: // serial
		switch {
		case held != "":
			wait(queued, held)
		case len(running) > 0:
			wait(queued, behind(running, "serial: one at a time, in arrival order"))
		default:
			startOne(queued[0], "oldest waiting and nothing running (serial)")
			wait(queued[1:], behind(queued[:1], "serial: one at a time, in arrival order"))
		}
	}
}

func coalesce(pipeline string, queued []Buildset) Coalesce {
	newest := queued[len(queued)-1]
	c := Coalesce{Pipeline: pipeline, Commit: newest.Commit, Into: NewBuildset, Since: queued[0].CreatedAt}
	all := ""
	seen := map[string]bool{}
	for _, b := range queued {
		c.Merge = append(c.Merge, b.ID)
		if len(b.Files) == 0 && all == "" {
			all = b.ID
		}
		for _, f := range b.Files {
			if !seen[f] {
				seen[f] = true
				c.Files = append(c.Files, f)
			}
		}
	}
	files := ""
	if all != "" {
		c.Files = nil
		files = fmt.Sprintf("every job (%s has no file list)", all)
	} else {
		slices.Sort(c.Files)
		files = fmt.Sprintf("the union of their files (%d)", len(c.Files))
	}
	c.Reason = fmt.Sprintf("%d waiting and nothing running: one buildset for the newest commit %s (from %s) with %s (coalesce)",
		len(queued), short(newest.Commit), newest.ID, files)
	return c
}

// pauseReason is why nothing of p may start, or "".
func pauseReason(all *Pause, p Pipeline) string {
	switch {
	case all != nil:
		return "all pipelines paused" + byWhy(all)
	case p.Paused != nil:
		return "pipeline " + p.Name + " paused" + byWhy(p.Paused)
	}
	return ""
}

func byWhy(p *Pause) string {
	s := ""
	if p.By != "" {
		s += " by " + p.By
	}
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	return s
}

func behind(running []Buildset, rule string) string {
	ids := make([]string, len(running))
	for i, b := range running {
		ids[i] = b.ID
	}
	return fmt.Sprintf("waiting behind %s (%s)", strings.Join(ids, ", "), rule)
}

// short abbreviates a commit SHA as git does in logs.
func short(commit string) string {
	if len(commit) > 12 {
		return commit[:12]
	}
	if commit == "" {
		return "(none)"
	}
	return commit
}
