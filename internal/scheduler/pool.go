package scheduler

import "sync"

// Pool is an executor's build slots, shared by the loops of the buildsets
// it runs (Loop.Slots). It is safe for concurrent use.
type Pool struct {
	mu    sync.Mutex
	max   int
	used  int
	freed chan struct{} // closed at the next Give or SetMax, then replaced
}

// NewPool returns a pool of n slots (at least 1).
func NewPool(n int) *Pool { return &Pool{max: max(n, 1), freed: make(chan struct{})} }

// SetMax changes the number of slots (a config reload). Builds holding
// slots keep them; above the new max, no slot is taken until enough are
// given back.
func (p *Pool) SetMax(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.max = max(n, 1)
	p.wake()
}

// TryTake takes a slot if one is free.
func (p *Pool) TryTake() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.used >= p.max {
		return false
	}
	p.used++
	return true
}

// Give gives a slot back.
func (p *Pool) Give() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used--
	p.wake()
}

// Freed returns a channel closed at the next Give (or SetMax).
func (p *Pool) Freed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.freed
}

// InUse is the number of slots taken.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// Max is the number of slots.
func (p *Pool) Max() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.max
}

func (p *Pool) wake() {
	close(p.freed)
	p.freed = make(chan struct{})
}
