package cron_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/trigger/cron"
	"github.com/sortie-ci/sortie/internal/trigger/triggertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// deadline bounds every wait for the timer under test: a failing test
// fails instead of hanging. Nothing waits for it to pass.
const deadline = 30 * time.Second

// fired is one call of fire, with the clock's time at the call.
type fired struct {
	cron.Tick
	at time.Time
}

// harness runs a Timer in a goroutine and records its ticks.
type harness struct {
	t     *testing.T
	clock *triggertest.Clock
	ticks chan fired
}

// start runs timer on a fake clock showing now and stops it, checking that
// Run returns the cancel's cause, when the test ends. onFire, when set, is
// called inside fire, after the tick is recorded.
func start(t *testing.T, timer cron.Timer, now time.Time, onFire func(*triggertest.Clock, cron.Tick)) *harness {
	t.Helper()
	h := &harness{t: t, clock: triggertest.NewClock(now), ticks: make(chan fired, 100)}
	timer.Clock = h.clock
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- timer.Run(ctx, func(tick cron.Tick) {
			h.ticks <- fired{Tick: tick, at: h.clock.Now()}
			if onFire != nil {
				onFire(h.clock, tick)
			}
		})
	}()
	stopped := errors.New("test over")
	t.Cleanup(func() {
		cancel(stopped)
		select {
		case err := <-done:
			if !errors.Is(err, stopped) {
				t.Errorf("Run = %v, want the cause %v", err, stopped)
			}
		case <-time.After(deadline):
			t.Errorf("Run did not return %v after its context was canceled", deadline)
		}
	})
	return h
}

// next waits for the next fire.
func (h *harness) next() fired {
	h.t.Helper()
	select {
	case f := <-h.ticks:
		return f
	case <-time.After(deadline):
		h.t.Fatalf("no tick within %v", deadline)
		return fired{}
	}
}

// waiting waits until the timer waits on the clock again, then checks that
// it fired nothing meanwhile: it has been through the loop and found
// nothing due.
func (h *harness) waiting() {
	h.t.Helper()
	h.clock.WaitForWaiters(h.t, 1)
	select {
	case f := <-h.ticks:
		h.t.Fatalf("unexpected tick %+v", f)
	default:
	}
}

// advanceTo waits until the timer waits on the clock, then sets the clock
// to t.
func (h *harness) advanceTo(t time.Time) {
	h.t.Helper()
	h.clock.WaitForWaiters(h.t, 1)
	h.clock.Set(t)
}

func (h *harness) want(got fired, tick time.Time, missed bool) {
	h.t.Helper()
	if !got.Time.Equal(tick) || got.Missed != missed {
		h.t.Errorf("tick %v (missed %v), want %v (missed %v)", got.Time, got.Missed, tick, missed)
	}
	if got.at.Before(got.Time) {
		h.t.Errorf("tick %v fired early, at %v", got.Time, got.at)
	}
}

func TestTimerFiresEachTick(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "*/15 * * * *", nil)
	h := start(t, cron.Timer{Schedule: s}, date(2026, 1, 2, 10, 7), nil)
	for _, tick := range []time.Time{date(2026, 1, 2, 10, 15), date(2026, 1, 2, 10, 30), date(2026, 1, 2, 10, 45), date(2026, 1, 2, 11, 0)} {
		h.advanceTo(tick.Add(-time.Second))
		h.waiting()
		h.advanceTo(tick)
		h.want(h.next(), tick, false)
	}
}

// TestTimerFiresWhenTheClockJumps: a wait is at most a minute, so a wall
// clock that jumps ahead, or a machine that slept, is noticed.
func TestTimerFiresWhenTheClockJumps(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 * * * *", nil)
	h := start(t, cron.Timer{Schedule: s}, date(2026, 1, 2, 10, 7), nil)
	h.clock.WaitForWaiters(t, 1)
	if next, _ := h.clock.Next(); next.Sub(h.clock.Now()) > time.Minute {
		t.Errorf("the timer waits until %v, more than a minute", next)
	}
	// Past one tick: it fires.
	h.advanceTo(date(2026, 1, 2, 11, 20))
	h.want(h.next(), date(2026, 1, 2, 11, 0), false)
	// Past several ticks: it fires once, for the latest, as missed.
	h.advanceTo(date(2026, 1, 2, 15, 5))
	h.want(h.next(), date(2026, 1, 2, 15, 0), true)
	h.waiting()
	h.advanceTo(date(2026, 1, 2, 16, 0))
	h.want(h.next(), date(2026, 1, 2, 16, 0), false)
}

func TestTimerCatchesUpOnceAtStart(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 * * * *", nil)
	// Down from 06:00 until 10:07: 07:00 to 10:00 were missed.
	h := start(t, cron.Timer{Schedule: s, Last: date(2026, 1, 2, 6, 0), Jitter: 30 * time.Minute, Key: "hourly"}, date(2026, 1, 2, 10, 7), nil)
	got := h.next()
	h.want(got, date(2026, 1, 2, 10, 0), true)
	if !got.at.Equal(date(2026, 1, 2, 10, 7)) {
		t.Errorf("catch-up fired at %v, want at once", got.at)
	}
	h.waiting()
	due := date(2026, 1, 2, 11, 0).Add(cron.StableJitter("hourly", date(2026, 1, 2, 11, 0), 30*time.Minute))
	h.advanceTo(due)
	h.want(h.next(), date(2026, 1, 2, 11, 0), false)
}

func TestTimerNoCatchUp(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 * * * *", nil)
	for _, tt := range []struct {
		name       string
		last, next time.Time
	}{
		{"never fired", time.Time{}, date(2026, 1, 2, 11, 0)},
		{"fired the last tick", date(2026, 1, 2, 10, 0), date(2026, 1, 2, 11, 0)},
		// The clock is behind the store: 11:00 fired already.
		{"last ahead of the clock", date(2026, 1, 2, 11, 0), date(2026, 1, 2, 12, 0)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, cron.Timer{Schedule: s, Last: tt.last}, date(2026, 1, 2, 10, 7), nil)
			for at := date(2026, 1, 2, 10, 30); at.Before(tt.next); at = at.Add(30 * time.Minute) {
				h.waiting()
				h.advanceTo(at)
			}
			h.waiting()
			h.advanceTo(tt.next)
			h.want(h.next(), tt.next, false)
		})
	}
}

func TestTimerJitter(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 * * * *", nil)
	delays := map[time.Time]time.Duration{
		date(2026, 1, 2, 11, 0): 7 * time.Minute,
		date(2026, 1, 2, 12, 0): 2 * time.Hour, // clamped to Jitter
		date(2026, 1, 2, 13, 0): -time.Minute,  // clamped to 0
	}
	timer := cron.Timer{Schedule: s, Jitter: 10 * time.Minute, Delay: func(tick time.Time) time.Duration { return delays[tick] }}
	h := start(t, timer, date(2026, 1, 2, 10, 7), nil)

	h.advanceTo(date(2026, 1, 2, 11, 6)) // the tick has passed, its delay has not
	h.waiting()
	h.advanceTo(date(2026, 1, 2, 11, 7))
	h.want(h.next(), date(2026, 1, 2, 11, 0), false)

	h.advanceTo(date(2026, 1, 2, 12, 9))
	h.waiting()
	h.advanceTo(date(2026, 1, 2, 12, 10))
	h.want(h.next(), date(2026, 1, 2, 12, 0), false)

	h.advanceTo(date(2026, 1, 2, 13, 0))
	h.want(h.next(), date(2026, 1, 2, 13, 0), false)
}

// TestTimerDropsTicksWhileFiring: a slow fire does not leave a backlog.
func TestTimerDropsTicksWhileFiring(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 * * * *", nil)
	slow := true
	h := start(t, cron.Timer{Schedule: s}, date(2026, 1, 2, 10, 7), func(clock *triggertest.Clock, tick cron.Tick) {
		if slow {
			slow = false
			clock.Set(tick.Time.Add(150 * time.Minute)) // fire took 2.5 hours
		}
	})
	h.advanceTo(date(2026, 1, 2, 11, 0))
	h.want(h.next(), date(2026, 1, 2, 11, 0), false)
	h.waiting()
	h.advanceTo(date(2026, 1, 2, 14, 0))
	h.want(h.next(), date(2026, 1, 2, 14, 0), false)
}

// TestTimerClockGoesBack: a tick fires once even if the wall clock is set
// back over it while it fires.
func TestTimerClockGoesBack(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 * * * *", nil)
	back := true
	h := start(t, cron.Timer{Schedule: s}, date(2026, 1, 2, 10, 59), func(clock *triggertest.Clock, tick cron.Tick) {
		if back {
			back = false
			clock.Set(date(2026, 1, 2, 10, 30))
		}
	})
	h.advanceTo(date(2026, 1, 2, 11, 0))
	h.want(h.next(), date(2026, 1, 2, 11, 0), false)
	h.advanceTo(date(2026, 1, 2, 11, 0)) // 11:00 again
	h.waiting()
	h.advanceTo(date(2026, 1, 2, 11, 30))
	h.waiting()
	h.advanceTo(date(2026, 1, 2, 12, 0))
	h.want(h.next(), date(2026, 1, 2, 12, 0), false)
}

func TestTimerBerlin(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	s := mustParse(t, "0 9 * * *", berlin)
	h := start(t, cron.Timer{Schedule: s}, date(2026, 3, 28, 12, 0), nil)
	h.advanceTo(date(2026, 3, 29, 6, 59))
	h.waiting()
	h.advanceTo(date(2026, 3, 29, 7, 0)) // 09:00 CEST
	h.want(h.next(), date(2026, 3, 29, 7, 0), false)
}

func TestTimerNeverFiring(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 0 30 2 *", nil)
	ctx, cancel := context.WithCancelCause(context.Background())
	clock := triggertest.NewClock(date(2026, 1, 2, 10, 0))
	done := make(chan error, 1)
	go func() {
		done <- (&cron.Timer{Schedule: s, Clock: clock}).Run(ctx, func(cron.Tick) { t.Error("fired") })
	}()
	reason := errors.New("shutdown")
	cancel(reason)
	select {
	case err := <-done:
		if !errors.Is(err, reason) {
			t.Errorf("Run = %v, want %v", err, reason)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return")
	}
}

func TestTimerCanceledBeforeStart(t *testing.T) {
	t.Parallel()
	s := mustParse(t, "0 * * * *", nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	clock := triggertest.NewClock(date(2026, 1, 2, 10, 7))
	timer := cron.Timer{Schedule: s, Clock: clock, Last: date(2026, 1, 2, 6, 0)}
	if err := timer.Run(ctx, func(cron.Tick) { t.Error("fired after cancel") }); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestTimerNilSchedule(t *testing.T) {
	t.Parallel()
	if err := (&cron.Timer{}).Run(context.Background(), func(cron.Tick) {}); err == nil {
		t.Error("Run without a schedule succeeded")
	}
}

func TestStableJitter(t *testing.T) {
	t.Parallel()
	const max = 10 * time.Minute
	tick := date(2026, 1, 2, 11, 0)
	if a, b := cron.StableJitter("hourly", tick, max), cron.StableJitter("hourly", tick, max); a != b {
		t.Errorf("StableJitter is not stable: %v, %v", a, b)
	}
	if d := cron.StableJitter("hourly", tick, 0); d != 0 {
		t.Errorf("StableJitter with max 0 = %v", d)
	}
	// Spread: over many ticks and keys, delays cover the range.
	var lo, hi time.Duration = max, 0
	distinct := map[time.Duration]bool{}
	for i := range 500 {
		for _, key := range []string{"hourly", "periodic"} {
			d := cron.StableJitter(key, tick.Add(time.Duration(i)*time.Hour), max)
			if d < 0 || d >= max {
				t.Fatalf("StableJitter = %v, outside [0, %v)", d, max)
			}
			lo, hi = min(lo, d), maxDur(hi, d)
			distinct[d] = true
		}
	}
	if lo > max/20 || hi < max-max/20 || len(distinct) < 900 {
		t.Errorf("StableJitter spreads poorly: min %v, max %v, %d distinct of 1000", lo, hi, len(distinct))
	}
	if cron.StableJitter("hourly", tick, max) == cron.StableJitter("periodic", tick, max) {
		t.Errorf("two keys got the same delay")
	}
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}
