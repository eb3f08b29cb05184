package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/pipeline"
)

// TestSignal is a channel a component signals "I did X" on, for a test to
// wait for X instead of sleeping (river's testsignal). It is inert, and
// costs a nil check, until Init: production code signals into nothing.
// Signals are queued without bound and without blocking the signaller,
// so a test may wait for them in any order and at any time.
type TestSignal[T any] struct {
	mu     sync.Mutex
	on     bool
	queue  []T
	notify chan struct{} // has a value while the queue is not empty
}

// Init turns the signal on; call it before the component can signal.
func (s *TestSignal[T]) Init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on = true
	if s.notify == nil {
		s.notify = make(chan struct{}, 1)
	}
}

// Signal records v for a waiter, if the signal is on; it never blocks.
func (s *TestSignal[T]) Signal(v T) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on {
		return
	}
	s.queue = append(s.queue, v)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Wait returns the oldest value signalled and not yet waited for,
// waiting for one until ctx is done; then it returns ctx's cause. Wait on
// a signal never Init'ed waits for ctx.
func (s *TestSignal[T]) Wait(ctx context.Context) (T, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			v := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			return v, nil
		}
		notify := s.notify
		s.mu.Unlock()
		select {
		case <-notify: // nil before Init: blocks
		case <-ctx.Done():
			var zero T
			return zero, context.Cause(ctx)
		}
	}
}

// Pending returns the values signalled and not waited for, and forgets
// them: what a test checks did not happen.
func (s *TestSignal[T]) Pending() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.queue
	s.queue = nil
	return out
}

// TestSignals are what a Coordinator did, for tests to wait on. Each is
// off until a test calls its Init (or TestSignals.Init, all of them).
type TestSignals struct {
	// Admitted: a buildset's id, once its manager let it go (ADMITTED).
	Admitted TestSignal[string]
	// Launched: a buildset's id, once a run of it started in this process.
	Launched TestSignal[string]
	// Ended: each Ended event, once published.
	Ended TestSignal[Ended]
	// Reaped: a buildset's id, once ended because its `sortie run` died.
	Reaped TestSignal[string]
	// Registered: an owner id, once this process registered as it (at
	// Start, and again after its lease was lost).
	Registered TestSignal[string]
	// Passed: the plan of each pass of the managers, once applied.
	Passed TestSignal[pipeline.Plan]
	// Elected: a term's number, once this process leads for it and the
	// leader's work has started.
	Elected TestSignal[int64]
	// Lost: a term's number, once this process no longer leads for it
	// (stepped down, taken, or resigned at Stop) and the leader's work
	// has stopped.
	Lost TestSignal[int64]
	// Renewed: a term's number, at each renewal of it.
	Renewed TestSignal[int64]
	// Fired: each cron tick this process fired, made or not.
	Fired TestSignal[Fired]
	// Draining: the owner id, once Stop has told the running buildsets to
	// start nothing more (their running builds may still finish).
	Draining TestSignal[string]
}

// Fired is a cron tick this process fired, and what came of it.
type Fired struct {
	Pipeline string
	Tick     time.Time
	// Buildset is the buildset made, "" when none was.
	Buildset string
	// Err is why none was: store.ErrTickTaken (fired already),
	// store.ErrNotLeader (the term was over), or another error.
	Err error
}

// Init turns every signal on.
func (ts *TestSignals) Init() {
	ts.Admitted.Init()
	ts.Launched.Init()
	ts.Ended.Init()
	ts.Reaped.Init()
	ts.Registered.Init()
	ts.Passed.Init()
	ts.Elected.Init()
	ts.Lost.Init()
	ts.Renewed.Init()
	ts.Fired.Init()
	ts.Draining.Init()
}
