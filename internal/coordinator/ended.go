package coordinator

import (
	"context"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// Ended is the event of a buildset's end, published once per buildset by
// the process that ended it, after the store holds the end.
type Ended struct {
	Buildset string
	Pipeline string
	Result   store.Result
	// At is when it ended, as the store has it.
	At time.Time
}

// ending is one way a buildset ends, for Coordinator.end.
type ending struct {
	// Pipeline is the buildset's, for the event.
	Pipeline string
	// Params are what the store's EndBuildset gets.
	Params store.EndBuildsetParams
	// GiveUp ends the wait for a store that cannot be written for now
	// (buildset.Runner.End); nil tries once.
	GiveUp <-chan struct{}
	// Made is set for a buildset made DONE when it was created (its graph
	// could not be made: CONFIG_ERROR): the store holds its end already,
	// and only the event is left to publish.
	Made bool
}

// end is the one way the coordinator ends a buildset, whatever ends it: a
// run's end, a queued buildset superseded, coalesced, cancelled or whose
// pipeline is gone, a buildset made with a config error, a dead `sortie
// run`'s buildset reaped. It ends it in the store through
// buildset.Runner.End (one transaction: what was left unfinished, the
// buildset, its semaphores), then, if this call ended it, publishes one
// Ended event. ended is false, and nothing is published, when the
// buildset had ended already (another ender won).
func (c *Coordinator) end(ctx context.Context, e ending) (ended bool, err error) {
	p := e.Params
	if !e.Made {
		ended, err = c.opt.Runner.End(ctx, e.GiveUp, p)
		if err != nil || !ended {
			return ended, err
		}
	}
	at := p.At
	if at.IsZero() {
		at = time.Now().UTC()
	}
	c.ended.publish(Ended{Buildset: p.ID, Pipeline: e.Pipeline, Result: p.Result, At: at})
	return true, nil
}

// Ended subscribes to the Ended events published from now on. The caller
// closes the subscription when done with it.
func (c *Coordinator) Ended() *Subscription { return c.ended.subscribe() }

// broker fans Ended events out to subscribers in this process.
type broker struct {
	mu   sync.Mutex
	subs map[*Subscription]struct{}
	// signal hears of each event published (TestSignals.Ended).
	signal *TestSignal[Ended]
}

func (b *broker) subscribe() *Subscription {
	s := &Subscription{b: b, ready: make(chan struct{}, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = map[*Subscription]struct{}{}
	}
	b.subs[s] = struct{}{}
	return s
}

func (b *broker) publish(ev Ended) {
	b.mu.Lock()
	for s := range b.subs {
		s.put(ev)
	}
	b.mu.Unlock()
	if b.signal != nil {
		b.signal.Signal(ev)
	}
}

func (b *broker) unsubscribe(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, s)
}

// Subscription receives the Ended events published after it was made, in
// the order they were published, none dropped: events wait in it, without
// bound, until taken, and publishing never waits for a subscriber. It is
// safe for concurrent use.
type Subscription struct {
	b     *broker
	mu    sync.Mutex
	queue []Ended
	ready chan struct{} // has a value while events wait
}

func (s *Subscription) put(ev Ended) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, ev)
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// Ready returns a channel that receives a value when events are waiting;
// call Take after it, to select on events alongside other channels.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the events waiting, oldest first, and forgets them.
func (s *Subscription) Take() []Ended {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.queue
	s.queue = nil
	return out
}

// Next returns the oldest event waiting, waiting for one until ctx is
// done, when it returns ctx's cause.
func (s *Subscription) Next(ctx context.Context) (Ended, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue = s.queue[1:]
			if len(s.queue) > 0 {
				select {
				case s.ready <- struct{}{}:
				default:
				}
			}
			s.mu.Unlock()
			return ev, nil
		}
		s.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
			return Ended{}, context.Cause(ctx)
		}
	}
}

// Close ends the subscription: no event is added to it after Close
// returns. It is safe to call twice.
func (s *Subscription) Close() { s.b.unsubscribe(s) }
