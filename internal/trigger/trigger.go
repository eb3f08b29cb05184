// Package trigger holds what Sortie's triggers share. The triggers
// themselves live in sub-packages, one per way a pipeline can be started:
// webhook (verified push webhooks from a forge), cron (timers) and poll
// (watching a branch of the source repository). None of them creates a
// buildset: each reports an event, and the server decides what to run.
package trigger

import "time"

// Clock is the time source of the timers and pollers, injected so that tests
// decide when time passes instead of sleeping.
//
// After must behave like time.After: the channel receives one value, the
// clock's time, once at least d has passed; d <= 0 fires at once. A channel
// nobody receives from must not leak a goroutine (time.After's does not
// since Go 1.23).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock returns the real clock: time.Now and time.After.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
