// Package poll watches a branch of the source repository for setups without
// webhooks (SPEC §1, trigger: {push: {branch: main, poll: 1m}}): every
// interval it updates its mirror and resolves the branch, and reports when
// the branch's head moved. It creates no buildset; the server does, for the
// head reported.
package poll

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/trigger"
)

// Resolver is what a Poller needs of a repository; *source.Mirror has it.
type Resolver interface {
	// Update fetches the repository's branches.
	Update(ctx context.Context) error
	// Resolve returns the full hash of the commit rev names.
	Resolve(ctx context.Context, rev string) (string, error)
}

// Poller polls one revision, usually a branch. Set its fields, then call
// Run; the fields must not change while Run runs.
type Poller struct {
	// Resolver is the repository. Required.
	Resolver Resolver
	// Rev is passed to Resolve as is: use "refs/heads/<branch>", which no
	// tag of the same name can shadow ("" is the repository's HEAD for a
	// *source.Mirror).
	Rev string
	// Interval is the time from the end of one poll to the start of the
	// next. Required, > 0.
	Interval time.Duration
	// Clock is the time source; nil means trigger.SystemClock().
	Clock trigger.Clock
	// Last is the head known before Run starts (the last one seen or
	// deployed, from the store); "" means none, and the first poll then
	// records the head without reporting it.
	Last string
	// OnError, when set, is told of each failed poll (a fetch that failed,
	// a branch that is gone); Run keeps polling and compares the next head
	// it resolves with the last one it did.
	OnError func(error)
}

// Run polls at once, then every Interval, until ctx is done, and returns
// context.Cause(ctx); it returns an error at once for a Poller without a
// Resolver or a positive Interval. It runs in the caller's goroutine and
// starts none, so the caller owns its lifetime: cancel ctx and wait for
// Run to return.
//
// onChange is called in Run's goroutine, with the last head and the new
// one, whenever a poll resolves a head different from the last; polling
// waits while it runs. A branch that moves several times between two polls
// is reported once, for the newest head. A poll canceled by ctx is not an
// error and reports nothing.
func (p *Poller) Run(ctx context.Context, onChange func(old, new string)) error {
	if p.Resolver == nil {
		return errors.New("poll: run: nil resolver")
	}
	if p.Interval <= 0 {
		return fmt.Errorf("poll: run: interval %v is not positive", p.Interval)
	}
	clock := p.Clock
	if clock == nil {
		clock = trigger.SystemClock()
	}
	last := p.Last
	for {
		head, err := p.poll(ctx)
		switch {
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case err != nil:
			if p.OnError != nil {
				p.OnError(err)
			}
		case last == "":
			last = head
		case head != last:
			old := last
			last = head
			onChange(old, head)
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-clock.After(p.Interval):
		}
	}
}

func (p *Poller) poll(ctx context.Context) (string, error) {
	if err := p.Resolver.Update(ctx); err != nil {
		return "", fmt.Errorf("poll: update: %w", err)
	}
	head, err := p.Resolver.Resolve(ctx, p.Rev)
	if err != nil {
		return "", fmt.Errorf("poll: resolve %q: %w", p.Rev, err)
	}
	if head == "" {
		return "", fmt.Errorf("poll: resolve %q: no commit", p.Rev)
	}
	return head, nil
}
