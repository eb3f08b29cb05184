// Package triggertest provides a fake trigger.Clock for the tests of the
// trigger packages and of their callers: time moves only when the test moves
// it, and the test can wait until the code under test is waiting on the clock.
package triggertest

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/trigger"
)

var _ trigger.Clock = (*Clock)(nil)

// waitTimeout bounds WaitForWaiters: long enough for a loaded CI machine,
// short enough that a broken test fails instead of hanging until go test's
// own timeout.
const waitTimeout = 30 * time.Second

// Clock is a fake trigger.Clock. Its time starts where NewClock sets it and
// changes only through Set and Advance. It is safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	// changed is closed, and replaced, whenever waiters changes.
	changed chan struct{}
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

// NewClock returns a fake clock showing now.
func NewClock(now time.Time) *Clock {
	return &Clock{now: now, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the clock's time once the clock has
// been moved at least d ahead of its time now; d <= 0 fires at once. The
// channel is buffered, so a waiter that gave up leaks nothing but a pending
// entry, which Waiters counts until its time comes.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	c.notifyLocked()
	return ch
}

// Advance moves the clock d ahead and fires the waiters that are due, in the
// order of their times.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(c.now.Add(d))
}

// Set moves the clock to t, forwards or backwards (a wall clock can jump),
// and fires the waiters that are due, in the order of their times.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(t)
}

func (c *Clock) setLocked(t time.Time) {
	c.now = t
	sort.SliceStable(c.waiters, func(i, j int) bool { return c.waiters[i].at.Before(c.waiters[j].at) })
	n := 0
	for _, w := range c.waiters {
		if w.at.After(t) {
			break
		}
		w.ch <- t
		n++
	}
	if n > 0 {
		c.waiters = append(c.waiters[:0:0], c.waiters[n:]...)
		c.notifyLocked()
	}
}

func (c *Clock) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Waiters returns how many After channels are pending.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// Next returns the time of the earliest pending waiter, and false when there
// is none.
func (c *Clock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.waiters) == 0 {
		return time.Time{}, false
	}
	next := c.waiters[0].at
	for _, w := range c.waiters[1:] {
		if w.at.Before(next) {
			next = w.at
		}
	}
	return next, true
}

// WaitForWaiters blocks until at least n After channels are pending: the
// code under test has reached its wait. It fails the test if that does not
// happen within a generous deadline.
func (c *Clock) WaitForWaiters(tb testing.TB, n int) {
	tb.Helper()
	c.waitFor(tb, func(ws []waiter) bool { return len(ws) >= n }, fmt.Sprintf("%d clock waiters", n))
}

// WaitForWaiterAt blocks until an After channel due at t is pending: the
// code under test waits for that time. Unlike WaitForWaiters, it is not
// misled by a channel a select gave up on, which stays pending until its
// time comes.
func (c *Clock) WaitForWaiterAt(tb testing.TB, t time.Time) {
	tb.Helper()
	c.waitFor(tb, func(ws []waiter) bool {
		for _, w := range ws {
			if w.at.Equal(t) {
				return true
			}
		}
		return false
	}, "a clock waiter due at "+t.String())
}

// waitFor blocks until ok holds of the pending waiters, or fails the test
// after waitTimeout.
func (c *Clock) waitFor(tb testing.TB, ok func([]waiter) bool, what string) {
	tb.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		done, got, changed := ok(c.waiters), len(c.waiters), c.changed
		c.mu.Unlock()
		if done {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("triggertest: %d clock waiters after %v; want %s", got, waitTimeout, what)
		}
	}
}
