package coordinator

import (
	"context"
	"errors"
	"sync"
)

// Service is a long-lived part of the coordinator (after river's
// startstop), and the Coordinator itself. Start starts it and returns
// once it runs (an error: it does not, and nothing of it is left); Stop
// stops it and waits until it has; Stop is safe to call twice,
// concurrently, and before Start. Whether a stopped Service may start
// again is its own to say: the triggers do (a reload restarts them), the
// Coordinator does not.
type Service interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context)
}

// errStarted is Start on a service that runs already.
var errStarted = errors.New("started already")

// loop is the lifecycle of a service that is one goroutine: Start runs
// run in a goroutine until Stop cancels its context, and Stop waits for
// it to return. A loop stopped may be started again.
type loop struct {
	name string
	run  func(ctx context.Context)

	mu      sync.Mutex
	cancel  context.CancelFunc // nil while not running
	stopped chan struct{}      // closed once run has returned
}

// Start runs the loop in a goroutine of its own, under a context that
// keeps ctx's values but not its cancellation: only Stop ends it.
func (l *loop) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cancel != nil {
		return errors.New(l.name + ": " + errStarted.Error())
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	l.cancel, l.stopped = cancel, stopped
	go func() {
		defer close(stopped)
		l.run(ctx)
	}()
	return nil
}

// Stop cancels the loop and waits for it to return. ctx is not used: a
// loop returns promptly once cancelled, and a caller must be able to rely
// on it having returned.
func (l *loop) Stop(context.Context) {
	l.mu.Lock()
	if l.cancel != nil {
		l.cancel()
		l.cancel = nil
	}
	stopped := l.stopped
	l.mu.Unlock()
	if stopped != nil {
		<-stopped
	}
}

// running reports whether the loop runs (started, not stopped).
func (l *loop) running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cancel != nil
}

var (
	_ Service = (*loop)(nil)
	_ Service = (*runs)(nil)
	_ Service = (*Coordinator)(nil)
)
