package scheduler_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// busy is a Runner counting how many attempts run at once across every
// loop that shares it. Until that count has once reached target, an
// attempt waits for it, as work long enough to overlap would; from then
// on attempts end at once. So the peak reaches target whatever the
// machine's load, and goes above it only if the loops let it.
type busy struct {
	target        int32
	running, peak atomic.Int32
	once          sync.Once
	reached       chan struct{}
}

func newBusy(target int32) *busy { return &busy{target: target, reached: make(chan struct{})} }

func (b *busy) RunAttempt(ctx context.Context, _ string, _ int) scheduler.Outcome {
	n := b.running.Add(1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	if n >= b.target {
		b.once.Do(func() { close(b.reached) })
	}
	select {
	case <-b.reached:
	case <-ctx.Done():
	case <-time.After(10 * time.Second): // never reached: the peak says so
	}
	b.running.Add(-1)
	return scheduler.Outcome{}
}

// TestSharedSlots: three buildsets' loops, each allowed 8 builds at once,
// share an executor of 2 slots: never more than 2 builds run at once in
// all, and every build still runs. Without the pool 3 run at once (the
// boots of the three loops).
func TestSharedSlots(t *testing.T) {
	t.Parallel()
	for _, shared := range []bool{true, false} {
		pool := scheduler.NewPool(2)
		r := newBusy(2)
		if !shared {
			r = newBusy(3)
		}
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
		case !shared && peak < 3:
			t.Errorf("without the pool, only %d builds ran at once: the test shows nothing", peak)
		}
		if shared && pool.InUse() != 0 {
			t.Errorf("%d slots still taken after every loop ended", pool.InUse())
		}
	}
}

// TestPoolHoldsBackAThird: a loop whose three ready jobs find two slots
// free starts two and holds the third back until one of them ends: its
// start comes after that end, not in the turn that started the two.
func TestPoolHoldsBackAThird(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	pool := scheduler.NewPool(2)
	done := h.start(context.Background(), &scheduler.Loop{Plan: plan(t, "a:\nb:\nc:", nil), MaxParallel: 8, Slots: pool})
	h.expect("boot#1")
	h.succeed("boot")
	next := func() string {
		t.Helper()
		select {
		case s := <-h.started:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no attempt started in 10 s")
			return ""
		}
	}
	first, second := next(), next()
	if n := pool.InUse(); n != 2 {
		t.Errorf("%d slots taken while two jobs run, want 2", n)
	}
	job := strings.TrimSuffix(first, "#1")
	h.succeed(job)
	h.await("build " + job + " SUCCESS")
	third := next()
	events := h.eventsNow()
	if i, j := slices.Index(events, "start "+third), slices.Index(events, "build "+job+" SUCCESS"); i < j {
		t.Errorf("%s started before %s ended (with %s running): events %v", third, job, second, events)
	}
	for _, s := range []string{second, third} {
		h.succeed(strings.TrimSuffix(s, "#1"))
	}
	if r := wait(t, done); r.result != store.Success {
		t.Errorf("result %s", r.result)
	}
	if n := pool.InUse(); n != 0 {
		t.Errorf("%d slots still taken at the end", n)
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
