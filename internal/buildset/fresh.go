package buildset

import (
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/graph"
)

// Fresh holds the plan and spec of the last buildset a Runner made
// (Runner.Fresh), as they were before being encoded for the store, for
// the Runner's RunWith of that buildset to take instead of decoding
// them again: on a 10,000-job buildset that decoding cost some 24 ms
// before the first job, in a process that had just encoded them. It also
// holds the jobs' priorities, read while the buildset was inserted rather
// than when its run starts (some 10 ms on 10,000 jobs). What it
// hands over is what decoding would give (TestFreshIsDecoded), and only
// once. The spec shares what Freeze shares with the config (a job's env
// and install lists), so a Runner with a Fresh must not see its config
// change while it runs; `sortie run`'s never does.
// The zero Fresh is empty; a nil *Fresh keeps nothing.
type Fresh struct {
	mu   sync.Mutex
	id   string
	plan *graph.Plan
	spec *Spec
	prio *priorities
}

// priorities are the remaining critical path of each job of a plan
// (Runner.remaining), and whether each job had history.
type priorities struct {
	remaining   map[string]time.Duration
	fromHistory bool
}

// put keeps plan, spec and prio (nil if they could not be read) as the
// buildset id's, in place of any other. The caller hands them over:
// nothing else may use them afterwards.
func (f *Fresh) put(id string, plan *graph.Plan, spec *Spec, prio *priorities) {
	if f == nil {
		return
	}
	// As Plan decodes it: the estimate is not kept in the store.
	p := *plan
	p.Estimate = 0
	f.mu.Lock()
	defer f.mu.Unlock()
	f.id, f.plan, f.spec, f.prio = id, &p, spec, prio
}

// take returns the plan, spec and priorities kept for the buildset id
// and forgets them, or nils when it keeps none for id.
func (f *Fresh) take(id string) (*graph.Plan, *Spec, *priorities) {
	if f == nil {
		return nil, nil, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.id != id || f.plan == nil {
		return nil, nil, nil
	}
	plan, spec, prio := f.plan, f.spec, f.prio
	f.id, f.plan, f.spec, f.prio = "", nil, nil, nil
	return plan, spec, prio
}
