package bastion_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// TestPollStopWaits: Poll calls its function at every tick, and Stop
// returns only once the call in progress has returned. A nil Poller stops
// at once.
func TestPollStopWaits(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var finished atomic.Bool
	var calls atomic.Int64
	p := bastion.Poll(time.Millisecond, func() {
		if calls.Add(1) == 2 {
			entered <- struct{}{}
			<-release
			finished.Store(true)
		}
	})
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no second call within 10 s")
	}
	stopped := make(chan bool)
	go func() {
		p.Stop()
		stopped <- finished.Load()
	}()
	close(release)
	if !<-stopped {
		t.Error("Stop returned before the call in progress had returned")
	}
	var never *bastion.Poller
	never.Stop()
}
