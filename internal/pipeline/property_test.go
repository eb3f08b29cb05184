package pipeline

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
)

// TestRandomEventsKeepInvariants drives the harness with random event
// sequences (arrivals one at a time and in batches, finishes, pauses and
// resumes of one pipeline and of all, instants shared by several arrivals)
// and checks every plan and every state against the managers' rules, then
// resumes everything, lets all run to the end, and checks that no queued
// buildset was lost.
func TestRandomEventsKeepInvariants(t *testing.T) {
	t.Parallel()
	seeds, steps := 150, 250
	if testing.Short() {
		seeds = 20
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			randomRun(t, uint64(seed), steps)
		})
	}
}

func randomRun(t *testing.T, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, 0x5071e))
	pipes := []Pipeline{
		pipe("serial", serial).with(config.PrecedenceHigh),
		pipe("super", supercedent),
		pipe("indep", independent).with(config.PrecedenceLow),
		pipe("merge", coalesceM),
		pipe("merge-high", coalesceM).with(config.PrecedenceHigh),
	}
	w := newWorld(t, pipes...)
	inv := &invariants{t: t, w: w, rng: rng, last: map[string]Buildset{}}
	w.check = inv.plan

	n := 0
	newID := func() string { n++; return fmt.Sprintf("b%d", n) }
	files := func() []string {
		switch x := rng.IntN(20); {
		case x < 3:
			return nil
		case x == 3:
			return []string{}
		default:
			all := []string{"a", "b", "c", "d", "docs/x", "playbooks/y"}
			k := 1 + rng.IntN(3)
			var f []string
			for range k {
				f = append(f, all[rng.IntN(len(all))])
			}
			return f
		}
	}
	randomPipe := func() string { return pipes[rng.IntN(len(pipes))].Name }

	for range steps {
		if rng.IntN(10) == 0 {
			w.tick = 0
		} else {
			w.tick = 1e9
		}
		// One in five is a `sortie run`'s, pinned to it.
		pinned := func() bool { return rng.IntN(5) == 0 }
		switch x := rng.IntN(100); {
		case x < 45:
			id := newID()
			w.arrivePinned(randomPipe(), id, "c-"+id, files(), pinned())
		case x < 55: // several arrive before anyone decides
			for range 2 + rng.IntN(3) {
				id := newID()
				w.queuePinned(randomPipe(), id, "c-"+id, files(), pinned())
			}
			w.decide()
		case x < 85:
			if ids := inv.allRunning(); len(ids) > 0 {
				w.finish(ids[rng.IntN(len(ids))])
			}
		case x < 91:
			p := randomPipe()
			if w.pipes[p].Paused == nil {
				w.pause(p, "op", "random")
			} else {
				w.resume(p)
			}
		case x < 94:
			if w.pauseAll == nil {
				w.pauseEverything("op", "random")
			} else {
				w.resumeEverything()
			}
		default:
			w.decide()
		}
		inv.state()
	}

	// Resume everything and run to the end.
	w.pauseAll = nil
	for _, p := range w.pipes {
		p.Paused = nil
	}
	w.decide()
	inv.state()
	for i := 0; ; i++ {
		ids := inv.allRunning()
		if len(ids) == 0 {
			break
		}
		if i > 10*n+100 {
			t.Fatalf("not finished after %d finishes", i)
		}
		w.finish(ids[rng.IntN(len(ids))])
		inv.state()
	}
	for name, p := range w.pipes {
		if len(p.Queued) > 0 {
			t.Fatalf("%s: %v still queued with nothing running and nothing paused", name, w.queued(name))
		}
	}
	for id := range w.made {
		fate := w.fate[id]
		switch {
		case fate == "finished":
		case strings.HasPrefix(fate, "superseded by "), strings.HasPrefix(fate, "merged into "):
			by := fate[strings.LastIndex(fate, " ")+1:]
			if _, ok := w.made[by]; !ok {
				t.Fatalf("%s %s, which does not exist", id, fate)
			}
		default:
			t.Fatalf("%s lost: fate %q", id, fate)
		}
	}
}

type invariants struct {
	t    *testing.T
	w    *world
	rng  *rand.Rand
	last map[string]Buildset // per pipeline, the newest buildset started
}

func (inv *invariants) allRunning() []string {
	var ids []string
	for _, n := range inv.w.order {
		ids = append(ids, inv.w.running(n)...)
	}
	return ids
}

// state checks the world between events.
func (inv *invariants) state() {
	t, w := inv.t, inv.w
	t.Helper()
	where := map[string]string{}
	for _, p := range w.pipes {
		switch p.Manager {
		case serial, supercedent, coalesceM:
			if len(p.Running) > 1 {
				t.Fatalf("%s (%s): %d running: %v", p.Name, p.Manager, len(p.Running), w.running(p.Name))
			}
		}
		if p.Manager == supercedent && len(unpinned(p.Queued)) > 1 {
			t.Fatalf("%s: %d waiting: %v", p.Name, len(p.Queued), w.queued(p.Name))
		}
		for _, b := range p.Queued {
			where[b.ID] = "queued"
		}
		for _, b := range p.Running {
			where[b.ID] = "running"
		}
	}
	// No buildset is lost: each one ever made is queued, running, or has
	// an end.
	for id := range w.made {
		if where[id] == "" && w.fate[id] != "finished" && !strings.Contains(w.fate[id], " ") {
			t.Fatalf("%s is neither queued, running, finished, superseded nor merged (fate %q)", id, w.fate[id])
		}
	}
}

// plan checks one plan against the snapshot it was made from.
func (inv *invariants) plan(before Snapshot, plan Plan) {
	t := inv.t
	t.Helper()

	// The same snapshot in any order gives the same plan.
	if got := Decide(shuffled(before, inv.rng)); !reflect.DeepEqual(got, plan) {
		t.Fatalf("plan depends on input order:\n%s---\n%s", plan, got)
	}
	// Each pipeline decided alone, merged in any order, gives it too.
	var ds []Decision
	for _, p := range shuffled(before, inv.rng).Pipelines {
		ds = append(ds, DecidePipeline(before.PauseAll, p))
	}
	if got := Merge(ds); !reflect.DeepEqual(got, plan) {
		t.Fatalf("the merge of each pipeline's decision differs from the plan:\n%s---\n%s", plan, got)
	}

	pipes := map[string]Pipeline{}
	for _, p := range before.Pipelines {
		p.Queued = slices.Clone(p.Queued)
		slices.SortFunc(p.Queued, compareAge)
		pipes[p.Name] = p
	}
	named := map[string]bool{}
	name := func(id string) {
		if named[id] {
			t.Fatalf("plan names %s twice:\n%s", id, plan)
		}
		named[id] = true
	}
	startsPer := map[string]int{}
	seenStart := false
	var prev *start
	for _, a := range plan.Actions {
		p := pipes[a.PipelineName()]
		paused := before.PauseAll != nil || p.Paused != nil
		var age Buildset
		switch a := a.(type) {
		case Supersede:
			if seenStart {
				t.Fatalf("supersede after a start:\n%s", plan)
			}
			if p.Manager != supercedent {
				t.Fatalf("supersede in %s pipeline %s", p.Manager, p.Name)
			}
			name(a.Buildset)
			u := unpinned(p.Queued)
			newest := u[len(u)-1]
			if a.By != newest.ID || a.Buildset == a.By {
				t.Fatalf("%s: superseded by %s, want the newest unpinned queued %s", a.Buildset, a.By, newest.ID)
			}
			if slices.ContainsFunc(p.Queued, func(b Buildset) bool { return b.ID == a.Buildset && b.Pinned }) {
				t.Fatalf("pinned %s superseded", a.Buildset)
			}
			continue
		case Start:
			name(a.Buildset)
			i := slices.IndexFunc(p.Queued, func(b Buildset) bool { return b.ID == a.Buildset })
			age = p.Queued[i]
			switch p.Manager {
			case serial:
				if i != 0 {
					t.Fatalf("serial %s started %s, not the oldest %s", p.Name, a.Buildset, p.Queued[0].ID)
				}
			case supercedent:
				// The oldest of the pinned and the newest unpinned.
				u := unpinned(p.Queued)
				left := slices.DeleteFunc(slices.Clone(p.Queued), func(b Buildset) bool { return !b.Pinned })
				if len(u) > 0 {
					left = append(left, u[len(u)-1])
				}
				slices.SortFunc(left, compareAge)
				if left[0].ID != a.Buildset {
					t.Fatalf("supercedent %s started %s, not %s, the oldest of the pinned and the newest", p.Name, a.Buildset, left[0].ID)
				}
			case coalesceM:
				if !age.Pinned && len(unpinned(p.Queued)) != 1 {
					t.Fatalf("coalesce %s started %s alone with %d unpinned queued", p.Name, a.Buildset, len(unpinned(p.Queued)))
				}
				if i != 0 {
					t.Fatalf("coalesce %s started %s out of its turn", p.Name, a.Buildset)
				}
			}
		case Coalesce:
			if p.Manager != coalesceM {
				t.Fatalf("coalesce in %s pipeline %s", p.Manager, p.Name)
			}
			var want []string
			for _, b := range unpinned(p.Queued) {
				want = append(want, b.ID)
			}
			if !slices.Equal(a.Merge, want) || len(want) < 2 {
				t.Fatalf("coalesce merges %v, want every unpinned queued, oldest first: %v", a.Merge, want)
			}
			if p.Queued[0].Pinned {
				t.Fatalf("coalesce %s merged before the older pinned %s", p.Name, p.Queued[0].ID)
			}
			for _, id := range a.Merge {
				name(id)
			}
			checkUnion(t, unpinned(p.Queued), a)
			age = p.Queued[0]
		}
		seenStart = true
		if paused {
			t.Fatalf("start in paused pipeline %s: %s", p.Name, a)
		}
		if len(p.Running) > 0 && p.Manager != independent {
			t.Fatalf("start in %s pipeline %s while %v runs", p.Manager, p.Name, p.Running)
		}
		startsPer[p.Name]++
		if startsPer[p.Name] > 1 && p.Manager != independent {
			t.Fatalf("%d starts in %s pipeline %s", startsPer[p.Name], p.Manager, p.Name)
		}
		// Starts come by precedence, then age.
		cur := &start{act: a, rank: p.Precedence.Rank(), age: age}
		if prev != nil && (prev.rank < cur.rank || prev.rank == cur.rank && compareAge(prev.age, cur.age) > 0) {
			t.Fatalf("starts out of order: %s before %s", prev.act, a)
		}
		prev = cur
		// Each pipeline starts its buildsets in arrival order over time.
		if last, ok := inv.last[p.Name]; ok && compareAge(last, age) >= 0 {
			t.Fatalf("%s started %s after the newer %s", p.Name, age.ID, last.ID)
		}
		inv.last[p.Name] = age
	}

	// Liveness: a pipeline that may start and has something queued starts.
	for _, p := range pipes {
		paused := before.PauseAll != nil || p.Paused != nil
		if paused || len(p.Queued) == 0 {
			continue
		}
		if p.Manager == independent && startsPer[p.Name] != len(p.Queued) {
			t.Fatalf("independent %s started %d of %d", p.Name, startsPer[p.Name], len(p.Queued))
		}
		if len(p.Running) == 0 && startsPer[p.Name] == 0 {
			t.Fatalf("%s: nothing runs, %d queued, nothing started", p.Name, len(p.Queued))
		}
	}

	// Waiting lists exactly what the plan leaves queued.
	var left, waits []string
	for _, p := range before.Pipelines {
		for _, b := range p.Queued {
			if !named[b.ID] {
				left = append(left, b.ID)
			}
		}
	}
	for _, wt := range plan.Waiting {
		waits = append(waits, wt.Buildset)
		if wt.Reason == "" {
			t.Fatalf("wait without a reason: %s", wt)
		}
	}
	slices.Sort(left)
	slices.Sort(waits)
	if !slices.Equal(left, waits) {
		t.Fatalf("left queued %v, but Waiting lists %v", left, waits)
	}
}

// checkUnion checks a merge: the newest commit, and files that miss
// nothing any member would have run.
func checkUnion(t *testing.T, members []Buildset, c Coalesce) {
	t.Helper()
	newest := members[len(members)-1]
	if c.Commit != newest.Commit {
		t.Fatalf("merge commit %s, want the newest %s", c.Commit, newest.Commit)
	}
	if !c.Since.Equal(members[0].CreatedAt) || c.Into != NewBuildset {
		t.Fatalf("merge since %v into %q", c.Since, c.Into)
	}
	all := slices.ContainsFunc(members, func(b Buildset) bool { return len(b.Files) == 0 })
	if all {
		if c.Files != nil {
			t.Fatalf("a member runs every job, but the merge has files %v", c.Files)
		}
		return
	}
	var want []string
	for _, b := range members {
		want = append(want, b.Files...)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	if !slices.Equal(c.Files, want) {
		t.Fatalf("merge files %v, want the union %v", c.Files, want)
	}
}

// unpinned are the buildsets of bs that are not pinned.
func unpinned(bs []Buildset) []Buildset {
	return slices.DeleteFunc(slices.Clone(bs), func(b Buildset) bool { return b.Pinned })
}

func shuffled(s Snapshot, rng *rand.Rand) Snapshot {
	c := clone(s)
	rng.Shuffle(len(c.Pipelines), func(i, j int) { c.Pipelines[i], c.Pipelines[j] = c.Pipelines[j], c.Pipelines[i] })
	for _, p := range c.Pipelines {
		rng.Shuffle(len(p.Queued), func(i, j int) { p.Queued[i], p.Queued[j] = p.Queued[j], p.Queued[i] })
		rng.Shuffle(len(p.Running), func(i, j int) { p.Running[i], p.Running[j] = p.Running[j], p.Running[i] })
	}
	return c
}
