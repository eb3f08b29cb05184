// Package cron runs the cron triggers of pipelines (SPEC §1, trigger: {cron:
// ...}). A Schedule says when a pipeline's ticks are and which ticks were
// missed while the server was down; a Timer waits for each tick on an
// injected clock, adds the pipeline's jitter, and reports it. Neither
// creates a buildset: the server does, once per reported tick.
package cron

import (
	"errors"
	"fmt"
	"strings"
	"time"

	robfig "github.com/robfig/cron/v3"

	"github.com/sortie-ci/sortie/internal/config"
)

// Schedule is a parsed cron expression: the ticks of a cron trigger. It is
// immutable and safe for concurrent use.
//
// Expressions are what the config accepts (config.ParseCron): five fields
// "minute hour day-of-month month day-of-week" with 0 = Sunday (7 is not
// accepted), names such as "mon" and "jan", or a descriptor: @yearly,
// @monthly, @weekly (Sunday 00:00), @daily, @hourly, or "@every 90m". A
// leading "CRON_TZ=Area/City " (or "TZ=") pins the expression to that zone.
// As in cron, a day-of-month and a day-of-week that are both restricted
// match a day that satisfies either.
type Schedule struct {
	expr  string
	spec  robfig.Schedule
	loc   *time.Location
	every time.Duration // > 0 for "@every": ticks are that far apart, counted from the last one
}

// ErrBadExpression is returned (wrapped) by Parse for an expression that is
// not a valid cron expression.
var ErrBadExpression = errors.New("bad cron expression")

// Parse parses a cron expression whose times are wall-clock times in loc
// (nil means UTC) unless the expression names its own zone with CRON_TZ=.
//
// Around a change of daylight saving time the ticks are robfig/cron's, not
// Vixie cron's: a fixed time in the hour that is skipped does not fire that
// day (in Europe/Berlin "30 2 * * *" skips the last Sunday of March), and
// one in the hour that is repeated fires twice (the last Sunday of October,
// at 02:30 CEST and 02:30 CET); "0 * * * *" fires every real hour. UTC has
// no such days, which is why it is the safer zone for a server.
func Parse(expr string, loc *time.Location) (*Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	// robfig/cron slices up to the first space after a zone prefix, and
	// panics when there is none; user input must not panic.
	if (strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ=")) && !strings.Contains(expr, " ") {
		return nil, fmt.Errorf("cron: parse %q: %w: a zone prefix needs an expression after it", expr, ErrBadExpression)
	}
	spec, err := config.ParseCron(expr)
	if err != nil {
		return nil, fmt.Errorf("cron: parse %q: %w: %w", expr, ErrBadExpression, err)
	}
	s := &Schedule{expr: expr, spec: spec, loc: loc}
	if cd, ok := spec.(robfig.ConstantDelaySchedule); ok {
		s.every = cd.Delay
	}
	return s, nil
}

// String returns the expression the schedule was parsed from.
func (s *Schedule) String() string { return s.expr }

// Location returns the zone the schedule's wall-clock times are read in
// when the expression does not name its own.
func (s *Schedule) Location() *time.Location { return s.loc }

// Next returns the first tick strictly after after, in after's location. It
// returns the zero time when the schedule has no tick in the five years
// after it (an expression such as "0 0 30 2 *" never fires).
//
// An "@every d" schedule has no fixed ticks: Next returns after+d (to the
// second), so its ticks are counted from the one before.
func (s *Schedule) Next(after time.Time) time.Time {
	next := s.spec.Next(after.In(s.loc))
	if next.IsZero() {
		return next
	}
	return next.In(after.Location())
}

// Missed reports whether at least one tick fell in (last, now], the ticks a
// server that fired last at last and was down until now did not fire, and
// returns the latest of them. A server runs such a pipeline once on start,
// for that latest tick, not once per missed tick.
//
// A zero last means the pipeline never fired: nothing was missed, since the
// server did not know of the schedule before (it should record the time it
// first saw the schedule as last). A last at or after now (a clock that went
// back) misses nothing. Missed takes O(log(now-last)) steps, however many
// ticks the gap holds.
func (s *Schedule) Missed(last, now time.Time) (missed bool, latest time.Time) {
	if last.IsZero() || !now.After(last) {
		return false, time.Time{}
	}
	due := func(t time.Time) bool { return !t.IsZero() && !t.After(now) }
	first := s.Next(last)
	if !due(first) {
		return false, time.Time{}
	}
	if s.every > 0 {
		// Ticks are first + k*every; Next(first) adds exactly every, as
		// first is on a whole second.
		k := now.Sub(first) / s.every
		return true, first.Add(k * s.every).In(now.Location())
	}
	// Next is monotonic: the latest tick at or before now is Next(x) for
	// the largest x with Next(x) <= now. Bisect for it, keeping
	// Next(lo) <= now < Next(hi) (hi = now satisfies it, as Next(now) >
	// now). When hi-lo is a nanosecond no tick can lie in (Next(lo), now]:
	// such a tick t would satisfy lo < t <= hi.
	lo, hi := last, now
	for hi.Sub(lo) > time.Nanosecond {
		mid := lo.Add(hi.Sub(lo) / 2)
		if due(s.Next(mid)) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return true, s.Next(lo).In(now.Location())
}
