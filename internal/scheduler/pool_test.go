package scheduler_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// busy is a Runner whose attempts take a moment, counting how many run at
// once across every loop that shares it.
type busy struct {
	running, peak atomic.Int32
}

func (b *busy) RunAttempt(ctx context.Context, _ string, _ int) scheduler.Outcome {
	n := b.running.Add(1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	b.running.Add(-1)
	return scheduler.Outcome{}
}

// TestSharedSlots: three buildsets' loops, each allowed 8 builds at once,
// share an executor of 2 slots: never more than 2 builds run at once in
// all, and every build still runs. Without the pool the peak is far
// above 2.
func TestSharedSlots(t *testing.T) {
	t.Parallel()
	for _, shared := range []bool{true, false} {
		pool := scheduler.NewPool(2)
		r := &busy{}
		var wg sync.WaitGroup
		results := make([]store.Result, 3)
		for i := range results {
			h := newHarness(t)
			l := &scheduler.Loop{Plan: plan(t, "a:\nb:\nc:\nd:\ne:\nf:", nil), MaxParallel: 8,
				Runner: r, Semaphores: h, Recorder: h, Buildset: "bs", Poll: time.Second, Remaining: map[string]time.Duration{}}
			if shared {
				l.Slots = pool
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := l.Run(context.Background())
				if err != nil {
					t.Errorf("loop %d: %v", i, err)
				}
				results[i] = res
			}()
		}
		wg.Wait()
		for i, res := range results {
			if res != store.Success {
				t.Errorf("shared=%v: loop %d: %s", shared, i, res)
			}
		}
		switch peak := r.peak.Load(); {
		case shared && peak != 2:
			t.Errorf("with a shared pool of 2, %d builds ran at once", peak)
		case !shared && peak <= 2:
			t.Errorf("without the pool, only %d builds ran at once: the test shows nothing", peak)
		}
		if shared && pool.InUse() != 0 {
			t.Errorf("%d slots still taken after every loop ended", pool.InUse())
		}
	}
}

// TestPoolSlotGivenBackOnCancel: a loop cancelled while its builds run
// gives their slots back.
func TestPoolSlotGivenBackOnCancel(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	pool := scheduler.NewPool(4)
	ctx, cancel := context.WithCancel(context.Background())
	done := h.start(ctx, &scheduler.Loop{Plan: plan(t, "a:\nb:", nil), MaxParallel: 8, Slots: pool})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "b#1")
	if n := pool.InUse(); n != 2 {
		t.Errorf("%d slots taken while a and b run, want 2", n)
	}
	cancel()
	if r := wait(t, done); r.result != store.Canceled {
		t.Errorf("result %s", r.result)
	}
	if n := pool.InUse(); n != 0 {
		t.Errorf("%d slots still taken after the cancel", n)
	}
}
