package cron

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"time"

	"github.com/sortie-ci/sortie/internal/trigger"
)

// maxWait bounds one wait on the clock. A wait is measured on the monotonic
// clock, which stands still while the machine is suspended and ignores
// steps of the wall clock; waking at least this often notices that wall
// time has reached the tick anyway.
const maxWait = time.Minute

// Tick is one firing of a Timer.
type Tick struct {
	// Time is the tick's scheduled time, without jitter. The server records
	// it as the pipeline's last tick and passes it back as Timer.Last after
	// a restart.
	Time time.Time
	// Missed is set when ticks passed without firing: Time is then the
	// latest of them, and this one call stands for all of them. It happens
	// at start, for the ticks since Timer.Last, and while running when the
	// machine was suspended or the wall clock jumped ahead over a tick.
	Missed bool
}

// Timer fires a pipeline's cron trigger. Set its fields, then call Run; the
// fields must not change while Run runs.
type Timer struct {
	// Schedule says when the ticks are. Required.
	Schedule *Schedule
	// Clock is the time source; nil means trigger.SystemClock().
	Clock trigger.Clock
	// Last is the latest tick fired before, by this process or an earlier
	// one (from the store); zero means none. Ticks in (Last, start] are
	// missed and fired once, at start (see Schedule.Missed); ticks at or
	// before Last never fire, even if the clock is behind it.
	Last time.Time
	// Jitter bounds the delay added to each tick before it fires, so that
	// pipelines on the same schedule do not all start at once. Zero means
	// none. A Jitter longer than the interval between ticks makes the
	// timer skip the ticks that pass while it waits.
	Jitter time.Duration
	// Key seeds the default delay (StableJitter): use the pipeline's name,
	// so that pipelines spread apart while every process and every restart
	// picks the same delay for the same pipeline and tick.
	Key string
	// Delay, when set, replaces StableJitter; its result is clamped to
	// [0, Jitter].
	Delay func(tick time.Time) time.Duration
}

// Run fires the timer until ctx is done, then returns context.Cause(ctx).
// It runs in the caller's goroutine and starts none, so the caller owns its
// lifetime: cancel ctx and wait for Run to return.
//
// fire is called in Run's goroutine, once per tick, in order, never after
// ctx is done; it should be quick (record the tick and enqueue a buildset).
// Ticks that pass while fire runs are not queued up: the next call is for
// the next tick after fire returns, like time.Ticker dropping ticks.
//
// Run first fires once with Missed set if ticks were missed since Last.
// Catch-up fires are not delayed by jitter.
func (t *Timer) Run(ctx context.Context, fire func(Tick)) error {
	if t.Schedule == nil {
		return errors.New("cron: run: nil schedule")
	}
	clock := t.Clock
	if clock == nil {
		clock = trigger.SystemClock()
	}
	s := t.Schedule

	// from is the time after which the next tick is looked for: never
	// before the last tick fired, so that a wall clock that went back
	// cannot fire a tick twice.
	now := clock.Now()
	from := later(now, t.Last)
	if missed, latest := s.Missed(t.Last, now); missed {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		fire(Tick{Time: latest, Missed: true})
		from = later(clock.Now(), latest)
	}
	for {
		tick := s.Next(from)
		if tick.IsZero() {
			// No tick in the next five years: nothing to do but wait.
			<-ctx.Done()
			return context.Cause(ctx)
		}
		due := tick.Add(t.delay(tick))
		for {
			now = clock.Now()
			d := due.Sub(now)
			if d <= 0 {
				break
			}
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-clock.After(min(d, maxWait)):
			}
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		// A later tick whose latest possible due time has passed too was
		// slept through: fire it, once, for all of them.
		ev := Tick{Time: tick}
		if missed, latest := s.Missed(tick, now.Add(-t.Jitter)); missed {
			ev = Tick{Time: latest, Missed: true}
		}
		fire(ev)
		from = later(clock.Now(), ev.Time)
	}
}

func (t *Timer) delay(tick time.Time) time.Duration {
	if t.Jitter <= 0 {
		return 0
	}
	if t.Delay == nil {
		return StableJitter(t.Key, tick, t.Jitter)
	}
	return min(max(t.Delay(tick), 0), t.Jitter)
}

// StableJitter returns a delay in [0, max) that depends only on key and
// tick: pseudo-random across keys and ticks, the same in every process. It
// returns 0 when max <= 0.
func StableJitter(key string, tick time.Time, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(tick.UnixNano()))
	h.Write(b[:])
	// FNV mixes its last bytes poorly into the high bits; a finalizer
	// (splitmix64's) spreads them before the modulo.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return time.Duration(x % uint64(max))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
