package pipeline

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
)

// world is the recording harness: a tiny in-memory dispatcher that holds
// the pipelines' queues, asks Decide after each event, checks the plan
// against the snapshot it was made from, applies it as `sortie serve` will,
// and records every action as a short line.
type world struct {
	t        testing.TB
	clock    time.Time
	seq      int64
	merged   int
	pauseAll *Pause
	pipes    map[string]*Pipeline
	order    []string

	// log records actions as "start deploy/b1", "supersede hourly/b1 by b2",
	// "coalesce deploy/b2+b3 -> m1 @c3 files=[a b]".
	log []string
	// plans are every plan Decide returned, in order.
	plans []Plan
	// fate of every buildset ever queued: "started", "superseded by X",
	// "merged into X"; "finished" once a started one ends.
	fate map[string]string
	// made are the buildsets as created (merges included), by ID.
	made map[string]Buildset
	// tick is how far the clock moves per queued buildset (1s; the
	// property test sets 0 at times, for buildsets created at one instant).
	tick time.Duration
	// check, when set, sees every plan with the snapshot it was made from.
	check func(before Snapshot, plan Plan)
}

func newWorld(t testing.TB, pipes ...Pipeline) *world {
	w := &world{
		t: t, clock: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		pipes: map[string]*Pipeline{}, fate: map[string]string{}, made: map[string]Buildset{},
		tick: time.Second,
	}
	for _, p := range pipes {
		p := p
		if p.Precedence == "" {
			p.Precedence = config.PrecedenceNormal
		}
		w.pipes[p.Name] = &p
		w.order = append(w.order, p.Name)
	}
	return w
}

func pipe(name string, m config.Manager) Pipeline {
	return Pipeline{Name: name, Manager: m, Precedence: config.PrecedenceNormal}
}

func (p Pipeline) with(pr config.Precedence) Pipeline { p.Precedence = pr; return p }

func (w *world) snapshot() Snapshot {
	s := Snapshot{PauseAll: w.pauseAll}
	for _, n := range w.order {
		p := *w.pipes[n]
		p.Queued = slices.Clone(p.Queued)
		p.Running = slices.Clone(p.Running)
		s.Pipelines = append(s.Pipelines, p)
	}
	return s
}

// queue adds a buildset without deciding; files nil means no file list.
func (w *world) queue(pipeline, id, commit string, files []string) Buildset {
	w.t.Helper()
	return w.queuePinned(pipeline, id, commit, files, false)
}

// queuePinned is queue, pinned or not (a `sortie run`'s).
func (w *world) queuePinned(pipeline, id, commit string, files []string, pinned bool) Buildset {
	w.t.Helper()
	w.clock = w.clock.Add(w.tick)
	w.seq++
	b := Buildset{ID: id, Commit: commit, Files: files, CreatedAt: w.clock, Seq: w.seq, Pinned: pinned}
	p, ok := w.pipes[pipeline]
	if !ok {
		w.t.Fatalf("queue %s: no pipeline %s", id, pipeline)
	}
	if _, dup := w.made[id]; dup {
		w.t.Fatalf("queue %s: id used twice", id)
	}
	p.Queued = append(p.Queued, b)
	w.made[id] = b
	return b
}

// arrive is an event: the buildset is queued, then Enqueue decides.
func (w *world) arrive(pipeline, id, commit string, files ...string) Plan {
	w.t.Helper()
	return w.arriveFiles(pipeline, id, commit, files)
}

// arriveAll is an event without a file list (cron, manual).
func (w *world) arriveAll(pipeline, id, commit string) Plan {
	w.t.Helper()
	return w.arriveFiles(pipeline, id, commit, nil)
}

func (w *world) arriveFiles(pipeline, id, commit string, files []string) Plan {
	w.t.Helper()
	return w.arrivePinned(pipeline, id, commit, files, false)
}

// arrivePinned is arriveFiles, pinned or not.
func (w *world) arrivePinned(pipeline, id, commit string, files []string, pinned bool) Plan {
	w.t.Helper()
	before := w.snapshot()
	b := w.queuePinned(pipeline, id, commit, files, pinned)
	plan, err := Enqueue(before, pipeline, b)
	if err != nil {
		w.t.Fatalf("enqueue: %v", err)
	}
	if got := Decide(w.snapshot()); !equalPlans(got, plan) {
		w.t.Fatalf("Enqueue and Decide disagree:\n%s---\n%s", plan, got)
	}
	w.apply(plan)
	return plan
}

// decide asks Decide and applies its plan.
func (w *world) decide() Plan {
	w.t.Helper()
	plan := Decide(w.snapshot())
	w.apply(plan)
	return plan
}

// finish ends a running buildset, then decides.
func (w *world) finish(id string) Plan {
	w.t.Helper()
	for _, p := range w.pipes {
		if i := slices.IndexFunc(p.Running, func(b Buildset) bool { return b.ID == id }); i >= 0 {
			p.Running = slices.Delete(p.Running, i, i+1)
			w.fate[id] = "finished"
			return w.decide()
		}
	}
	w.t.Fatalf("finish %s: not running", id)
	return Plan{}
}

func (w *world) pause(pipeline, by, why string) Plan {
	w.t.Helper()
	w.pipes[pipeline].Paused = &Pause{By: by, Reason: why, At: w.clock}
	return w.decide()
}

func (w *world) resume(pipeline string) Plan {
	w.t.Helper()
	w.pipes[pipeline].Paused = nil
	return w.decide()
}

func (w *world) pauseEverything(by, why string) Plan {
	w.t.Helper()
	w.pauseAll = &Pause{By: by, Reason: why, At: w.clock}
	return w.decide()
}

func (w *world) resumeEverything() Plan {
	w.t.Helper()
	w.pauseAll = nil
	return w.decide()
}

func (w *world) take(p *Pipeline, id string) Buildset {
	w.t.Helper()
	i := slices.IndexFunc(p.Queued, func(b Buildset) bool { return b.ID == id })
	if i < 0 {
		w.t.Fatalf("plan names %s/%s, which is not queued", p.Name, id)
	}
	b := p.Queued[i]
	p.Queued = slices.Delete(p.Queued, i, i+1)
	return b
}

// apply does what a dispatcher does with a plan, failing the test on an
// action that names something that is not queued.
func (w *world) apply(plan Plan) {
	w.t.Helper()
	w.plans = append(w.plans, plan)
	if w.check != nil {
		w.check(w.snapshot(), plan)
	}
	for _, a := range plan.Actions {
		p, ok := w.pipes[a.PipelineName()]
		if !ok {
			w.t.Fatalf("action for unknown pipeline: %s", a)
		}
		if a.Why() == "" {
			w.t.Errorf("action without a reason: %s", a)
		}
		switch a := a.(type) {
		case Start:
			b := w.take(p, a.Buildset)
			p.Running = append(p.Running, b)
			w.fate[b.ID] = "started"
			w.log = append(w.log, fmt.Sprintf("start %s/%s", a.Pipeline, a.Buildset))
		case Supersede:
			w.take(p, a.Buildset)
			w.fate[a.Buildset] = "superseded by " + a.By
			w.log = append(w.log, fmt.Sprintf("supersede %s/%s by %s", a.Pipeline, a.Buildset, a.By))
		case Coalesce:
			w.merged++
			id := fmt.Sprintf("m%d", w.merged)
			for _, m := range a.Merge {
				w.take(p, m)
				w.fate[m] = "merged into " + id
				if r := a.MemberReason(id); !strings.Contains(r, id) {
					w.t.Errorf("member reason %q does not name %s", r, id)
				}
			}
			w.seq++
			b := Buildset{ID: id, Commit: a.Commit, Files: a.Files, CreatedAt: a.Since, Seq: w.seq}
			w.made[id] = b
			p.Running = append(p.Running, b)
			w.fate[id] = "started"
			files := "all"
			if a.Files != nil {
				files = "[" + strings.Join(a.Files, " ") + "]"
			}
			w.log = append(w.log, fmt.Sprintf("coalesce %s/%s -> %s @%s files=%s", a.Pipeline, strings.Join(a.Merge, "+"), id, a.Commit, files))
		default:
			w.t.Fatalf("unknown action %T", a)
		}
	}
	// Deciding again with nothing new must change nothing.
	if again := Decide(w.snapshot()); !again.Empty() {
		w.t.Fatalf("plan is not a fixpoint; after applying\n%sDecide returned\n%s", plan, again)
	}
}

// drain returns the recorded lines and clears them.
func (w *world) drain() []string {
	l := w.log
	w.log = nil
	return l
}

func (w *world) expect(want ...string) {
	w.t.Helper()
	got := w.drain()
	if !slices.Equal(got, want) {
		w.t.Fatalf("actions:\n  got  %q\n  want %q", got, want)
	}
}

func (w *world) queued(pipeline string) []string {
	var ids []string
	for _, b := range w.pipes[pipeline].Queued {
		ids = append(ids, b.ID)
	}
	return ids
}

func (w *world) running(pipeline string) []string {
	var ids []string
	for _, b := range w.pipes[pipeline].Running {
		ids = append(ids, b.ID)
	}
	return ids
}

func equalPlans(a, b Plan) bool { return reflect.DeepEqual(a, b) }
