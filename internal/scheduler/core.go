// Package scheduler runs one buildset's job graph: a job starts as soon as
// its dependencies succeeded, within the parallelism limit and while holding
// its semaphores, the longest remaining critical path first.
//
// Core is the pure part: it takes events (a build started, a build ended)
// and answers what may run next and what must be skipped, with no I/O. Loop
// owns a Core in one goroutine and applies its answers through the small
// interfaces this package defines (Runner, Semaphores, Recorder), so tests
// drive it with recording fakes and production with the store and a bastion.
//
// A Loop can also resume a buildset that an earlier process started and
// that was interrupted by its crash (Loop.Resume): recorded results are
// restored in the Core (Core.Restore), builds that were running are LOST
// and retried while attempts remain, and no finished build runs again.
package scheduler

import (
	"cmp"
	"container/heap"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

// JobState is where a job is within one run of the scheduler.
type JobState int

const (
	// Pending: some dependency has not finished.
	Pending JobState = iota
	// Ready: every dependency succeeded; waiting for a slot or semaphores.
	Ready
	// Running: an attempt is running.
	Running
	// Finished: the job has its final result.
	Finished
)

type jobState struct {
	name      string
	index     int           // plan order, the tie-break
	remaining time.Duration // its longest remaining critical path
	deps      []string
	waitingOn int // dependencies not yet succeeded
	state     JobState
	result    store.Result
	reason    string
	queued    int // index in the ready queue; -1 when not on it
}

// Skip is a job that will never run, with why.
type Skip struct {
	Job    string
	Result store.Result // Skipped or Canceled
	Reason string
}

// Core is the pure scheduling state of one buildset. It is not safe for
// concurrent use: one goroutine owns it.
type Core struct {
	jobs       map[string]*jobState
	order      []*jobState
	dependents map[string][]string
	ready      readyHeap // jobs in state Ready, best on top
	running    int
	finished   int
}

// NewCore makes the state for a plan. remaining gives each job's longest
// remaining critical path (graph.Plan.Remaining); ready jobs with more go
// first.
func NewCore(p *graph.Plan, remaining map[string]time.Duration) *Core {
	c := &Core{jobs: map[string]*jobState{}, dependents: p.Dependents()}
	c.ready.less = better
	for i, j := range p.Jobs {
		js := &jobState{name: j.Name, index: i, remaining: remaining[j.Name], deps: j.Dependencies, waitingOn: len(j.Dependencies), queued: -1}
		c.jobs[j.Name] = js
		c.order = append(c.order, js)
	}
	// A dependency outside the plan never finishes: the job stays pending,
	// and Deadlocked reports it rather than the loop hanging.
	for _, js := range c.order {
		if js.waitingOn == 0 {
			js.state = Ready
			heap.Push(&c.ready, js)
		}
	}
	return c
}

// better orders ready jobs: the longest remaining critical path first,
// then plan order. It reads no map: the ready queue of a wide graph
// compares some 13 pairs a pop.
func better(a, b *jobState) bool {
	return cmp.Or(cmp.Compare(b.remaining, a.remaining), cmp.Compare(a.index, b.index)) < 0
}

// PopReady takes the best ready job off the ready queue. The caller either
// Starts it or, when it cannot start yet (its semaphores are taken), hands
// it back with Requeue.
func (c *Core) PopReady() (string, bool) {
	if c.ready.Len() == 0 {
		return "", false
	}
	return heap.Pop(&c.ready).(*jobState).name, true
}

// Requeue returns a popped job that could not start to the ready queue.
func (c *Core) Requeue(job string) {
	if js := c.jobs[job]; js != nil && js.state == Ready {
		heap.Push(&c.ready, js)
	}
}

// Start records that a ready job started.
func (c *Core) Start(job string) {
	js := c.jobs[job]
	if js == nil || js.state != Ready {
		panic(fmt.Sprintf("scheduler: start of %q in state %d", job, c.state(job)))
	}
	js.state = Running
	c.running++
}

// Finish records a job's final result and returns the jobs this makes ready
// and, when it did not succeed, the dependents skipped because of it
// (transitively, depth first).
func (c *Core) Finish(job string, result store.Result) (ready []string, skipped []Skip) {
	js := c.jobs[job]
	if js == nil || js.state == Finished {
		panic(fmt.Sprintf("scheduler: finish of %q twice", job))
	}
	if js.state == Running {
		c.running--
	}
	c.unqueue(js)
	js.state, js.result = Finished, result
	c.finished++
	if result == store.Success {
		for _, d := range c.dependents[job] {
			dj := c.jobs[d]
			dj.waitingOn--
			if dj.waitingOn == 0 && dj.state == Pending {
				dj.state = Ready
				heap.Push(&c.ready, dj)
				ready = append(ready, d)
			}
		}
		return ready, nil
	}
	return nil, c.skipDependents(job, fmt.Sprintf("dependency %s %s", job, verb(result)))
}

// Restore finishes a job that has not started in this Core (Pending or
// Ready) with the result an earlier, interrupted run recorded for it, when
// a buildset is resumed (Loop.Resume), and returns what Finish returns.
// Restoring in plan order (dependencies first) gives the state the earlier
// run had; a dependent skipped here may already have its own recorded
// result, and is then not restored again.
func (c *Core) Restore(job string, result store.Result) (ready []string, skipped []Skip) {
	if s := c.state(job); s != Pending && s != Ready {
		panic(fmt.Sprintf("scheduler: restore of %q in state %d", job, s))
	}
	return c.Finish(job, result)
}

// unqueue takes a job off the ready queue if it is on it.
func (c *Core) unqueue(js *jobState) {
	if js.queued >= 0 {
		heap.Remove(&c.ready, js.queued)
	}
}

func verb(r store.Result) string {
	switch r {
	case store.Failure:
		return "failed"
	case store.Skipped:
		return "was skipped"
	case store.TimedOut:
		return "timed out"
	case store.Canceled:
		return "was cancelled"
	case store.RetryLimit:
		return "hit its retry limit"
	}
	return "ended with " + string(r)
}

// skipDependents marks every not-yet-started job below job as SKIPPED.
// The reason names the nearest dependency that did not succeed.
func (c *Core) skipDependents(job, reason string) []Skip {
	var out []Skip
	for _, d := range c.dependents[job] {
		dj := c.jobs[d]
		if dj.state == Finished || dj.state == Running {
			continue
		}
		c.unqueue(dj)
		dj.state, dj.result, dj.reason = Finished, store.Skipped, reason
		c.finished++
		out = append(out, Skip{Job: d, Result: store.Skipped, Reason: reason})
		out = append(out, c.skipDependents(d, fmt.Sprintf("dependency %s was skipped", d))...)
	}
	return out
}

// CancelRest finishes every job that has not started as CANCELED and
// returns them; running jobs are left to finish (or be cancelled) by whoever
// runs them.
func (c *Core) CancelRest(reason string) []Skip {
	var out []Skip
	for _, js := range c.order {
		if js.state == Pending || js.state == Ready {
			js.state, js.result, js.reason = Finished, store.Canceled, reason
			c.finished++
			out = append(out, Skip{Job: js.name, Result: store.Canceled, Reason: reason})
		}
		js.queued = -1
	}
	c.ready.items = nil
	return out
}

// Running is the number of jobs started and not finished.
func (c *Core) Running() int { return c.running }

// Done reports whether every job has its final result.
func (c *Core) Done() bool { return c.finished == len(c.order) }

// Deadlocked reports work left that can never start: nothing ready,
// nothing running, yet jobs unfinished.
func (c *Core) Deadlocked() bool {
	return !c.Done() && c.running == 0 && c.ready.Len() == 0
}

// Stuck returns the unfinished jobs and what each waits on, for a deadlock
// report.
func (c *Core) Stuck() []string {
	var out []string
	for _, js := range c.order {
		if js.state == Pending {
			var missing []string
			for _, d := range js.deps {
				if dj := c.jobs[d]; dj == nil || dj.state != Finished {
					missing = append(missing, d)
				}
			}
			out = append(out, fmt.Sprintf("%s waits on %v", js.name, missing))
		}
	}
	return out
}

func (c *Core) state(job string) JobState {
	if js := c.jobs[job]; js != nil {
		return js.state
	}
	return -1
}

// Result is the buildset's result once Done: SUCCESS only if every job
// succeeded; CANCELED if any was cancelled; else FAILURE.
func (c *Core) Result() store.Result {
	res := store.Success
	for _, js := range c.order {
		switch js.result {
		case store.Success:
		case store.Canceled:
			return store.Canceled
		default:
			res = store.Failure
		}
	}
	return res
}

// readyHeap is a container/heap of ready jobs. Each job knows its index
// (jobState.queued), so one finished while queued is taken off at once.
type readyHeap struct {
	items []*jobState
	less  func(a, b *jobState) bool
}

func (h *readyHeap) Len() int           { return len(h.items) }
func (h *readyHeap) Less(i, j int) bool { return h.less(h.items[i], h.items[j]) }
func (h *readyHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].queued, h.items[j].queued = i, j
}
func (h *readyHeap) Push(x any) {
	js := x.(*jobState)
	js.queued = len(h.items)
	h.items = append(h.items, js)
}
func (h *readyHeap) Pop() any {
	n := len(h.items) - 1
	x := h.items[n]
	h.items = h.items[:n]
	x.queued = -1
	return x
}
