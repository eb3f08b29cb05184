package cron_test

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin on machines without a zone database

	"github.com/sortie-ci/sortie/internal/trigger/cron"
)

func date(y int, m time.Month, d, h, min int) time.Time {
	return time.Date(y, m, d, h, min, 0, 0, time.UTC)
}

func mustParse(t testing.TB, expr string, loc *time.Location) *cron.Schedule {
	t.Helper()
	s, err := cron.Parse(expr, loc)
	if err != nil {
		t.Fatalf("Parse(%q): %v", expr, err)
	}
	return s
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	for _, expr := range []string{
		"",
		"* * * *",      // four fields
		"0 * * * * *",  // six: no seconds field
		"60 * * * *",   // minute out of range
		"0 24 * * *",   // hour out of range
		"0 0 * * 7",    // 7 is not Sunday here: 0 is
		"0 0 0 * *",    // no day 0
		"@fortnightly", // no such descriptor
		"@every",       // no duration
		"TZ=UTC",       // a zone and nothing else (robfig/cron panics on it)
		"CRON_TZ=Europe/Berlin",
		"CRON_TZ=Mars/Olympus 0 * * * *",
	} {
		if s, err := cron.Parse(expr, nil); !errors.Is(err, cron.ErrBadExpression) {
			t.Errorf("Parse(%q) = %v, %v; want ErrBadExpression", expr, s, err)
		}
	}
}

func TestNextUTC(t *testing.T) {
	t.Parallel()
	// Friday 2 January 2026.
	fri := date(2026, 1, 2, 10, 30)
	tests := []struct {
		expr  string
		after time.Time
		want  time.Time
	}{
		{"0 * * * *", fri, date(2026, 1, 2, 11, 0)},
		{"0 * * * *", date(2026, 1, 2, 11, 0), date(2026, 1, 2, 12, 0)}, // strictly after
		{"0 * * * *", date(2026, 1, 2, 10, 59).Add(59*time.Second + 999*time.Millisecond), date(2026, 1, 2, 11, 0)},
		{"@hourly", fri, date(2026, 1, 2, 11, 0)},
		{"*/15 * * * *", fri, date(2026, 1, 2, 10, 45)},
		{"0 9 * * 1-5", fri, date(2026, 1, 5, 9, 0)}, // Friday after 9: Monday
		{"0 9 * * mon-fri", fri, date(2026, 1, 5, 9, 0)},
		{"0 0 * * 0", fri, date(2026, 1, 4, 0, 0)}, // 0 = Sunday
		{"@weekly", fri, date(2026, 1, 4, 0, 0)},   // weeks start on Sunday
		{"@daily", fri, date(2026, 1, 3, 0, 0)},
		{"@monthly", fri, date(2026, 2, 1, 0, 0)},
		{"0 0 13 * 5", fri, date(2026, 1, 9, 0, 0)},    // day 13 or a Friday, as in cron
		{"30 2 29 2 *", fri, date(2028, 2, 29, 2, 30)}, // the next leap day
		{"@every 90m", fri, fri.Add(90 * time.Minute)},
		{"0 0 30 2 *", fri, time.Time{}}, // never
		{"0 0 1 1 *", date(2026, 12, 31, 23, 59), date(2027, 1, 1, 0, 0)},
	}
	for _, tt := range tests {
		s := mustParse(t, tt.expr, nil)
		got := s.Next(tt.after)
		if !got.Equal(tt.want) {
			t.Errorf("%q.Next(%v) = %v, want %v", tt.expr, tt.after, got, tt.want)
		}
		if !got.IsZero() && got.Location() != time.UTC {
			t.Errorf("%q.Next(%v) is in %v, want UTC", tt.expr, tt.after, got.Location())
		}
	}
	if d := date(2026, 1, 4, 0, 0).Weekday(); d != time.Sunday {
		t.Fatalf("test data: 4 January 2026 is a %v", d)
	}
}

// TestNextKeepsTheCallersLocation: the schedule decides the wall clock the
// ticks are read in; the result is in the caller's location.
func TestNextKeepsTheCallersLocation(t *testing.T) {
	t.Parallel()
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	s := mustParse(t, "0 9 * * *", nil) // 09:00 UTC
	got := s.Next(date(2026, 1, 2, 10, 0).In(tokyo))
	if want := date(2026, 1, 3, 9, 0); !got.Equal(want) || got.Location() != tokyo {
		t.Errorf("Next = %v, want %v in Asia/Tokyo", got, want)
	}
}

func TestNextInBerlin(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	at := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, berlin) }

	nine := mustParse(t, "0 9 * * *", berlin)
	pinned := mustParse(t, "CRON_TZ=Europe/Berlin 0 9 * * *", time.UTC)
	for _, tt := range []struct{ after, want time.Time }{
		{date(2026, 1, 2, 12, 0), date(2026, 1, 3, 8, 0)}, // CET, UTC+1
		{date(2026, 7, 2, 12, 0), date(2026, 7, 3, 7, 0)}, // CEST, UTC+2
		// The night of the change to summer time (29 March 2026).
		{date(2026, 3, 28, 12, 0), date(2026, 3, 29, 7, 0)},
	} {
		for _, s := range []*cron.Schedule{nine, pinned} {
			if got := s.Next(tt.after); !got.Equal(tt.want) {
				t.Errorf("%q in %v: Next(%v) = %v, want %v", s, s.Location(), tt.after, got, tt.want.In(berlin))
			}
		}
	}

	// The documented daylight saving time behaviour, robfig/cron's: a time
	// in the skipped hour does not fire that day, one in the repeated hour
	// fires twice, and hourly fires every real hour.
	walk := func(expr string, from time.Time, n int) []time.Time {
		s := mustParse(t, expr, berlin)
		var ticks []time.Time
		for t := from; len(ticks) < n; {
			t = s.Next(t)
			ticks = append(ticks, t)
		}
		return ticks
	}
	check := func(name string, got []time.Time, want ...time.Time) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %v, want %v", name, got, want)
		}
		for i := range want {
			if !got[i].Equal(want[i]) {
				t.Errorf("%s: tick %d = %v (%v), want %v (%v)", name, i, got[i], got[i].UTC(), want[i], want[i].UTC())
			}
		}
	}
	check("spring forward", walk("30 2 * * *", at(2026, 3, 28, 12, 0), 2),
		at(2026, 3, 30, 2, 30), at(2026, 3, 31, 2, 30))
	cest230 := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC) // 02:30 CEST
	check("fall back", walk("30 2 * * *", at(2026, 10, 24, 12, 0), 3),
		cest230, cest230.Add(time.Hour), at(2026, 10, 26, 2, 30))
	check("hourly across fall back", walk("0 * * * *", time.Date(2026, 10, 24, 23, 30, 0, 0, time.UTC), 4),
		time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 10, 25, 2, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 3, 0, 0, 0, time.UTC))
}

func TestMissed(t *testing.T) {
	t.Parallel()
	hourly := "0 * * * *"
	tests := []struct {
		name       string
		expr       string
		last, now  time.Time
		wantMissed bool
		want       time.Time
	}{
		{"never fired", hourly, time.Time{}, date(2026, 1, 2, 10, 30), false, time.Time{}},
		{"no time passed", hourly, date(2026, 1, 2, 10, 0), date(2026, 1, 2, 10, 0), false, time.Time{}},
		{"clock went back", hourly, date(2026, 1, 2, 10, 0), date(2026, 1, 2, 8, 0), false, time.Time{}},
		{"before the next tick", hourly, date(2026, 1, 2, 10, 0), date(2026, 1, 2, 10, 59), false, time.Time{}},
		{"a second before it", hourly, date(2026, 1, 2, 10, 0), date(2026, 1, 2, 10, 59).Add(59 * time.Second), false, time.Time{}},
		{"exactly at it", hourly, date(2026, 1, 2, 10, 0), date(2026, 1, 2, 11, 0), true, date(2026, 1, 2, 11, 0)},
		{"one missed", hourly, date(2026, 1, 2, 10, 0), date(2026, 1, 2, 11, 20), true, date(2026, 1, 2, 11, 0)},
		{"three missed: the latest", hourly, date(2026, 1, 2, 10, 0), date(2026, 1, 2, 13, 5), true, date(2026, 1, 2, 13, 0)},
		{"last between ticks", hourly, date(2026, 1, 2, 10, 17), date(2026, 1, 2, 12, 59), true, date(2026, 1, 2, 12, 0)},
		{"down for a year, every minute", "* * * * *", date(2025, 1, 2, 10, 0), date(2026, 1, 2, 10, 30).Add(30 * time.Second), true, date(2026, 1, 2, 10, 30)},
		{"down for a week, weekdays", "0 9 * * 1-5", date(2026, 1, 2, 9, 0), date(2026, 1, 11, 12, 0), true, date(2026, 1, 9, 9, 0)},
		{"weekend only", "0 9 * * 1-5", date(2026, 1, 2, 9, 0), date(2026, 1, 4, 23, 0), false, time.Time{}},
		{"every 90m counts from last", "@every 90m", date(2026, 1, 2, 10, 7), date(2026, 1, 2, 15, 0), true, date(2026, 1, 2, 14, 37)},
		{"every 90m, not yet", "@every 90m", date(2026, 1, 2, 10, 7), date(2026, 1, 2, 11, 36), false, time.Time{}},
		{"never fires", "0 0 30 2 *", date(2020, 1, 1, 0, 0), date(2026, 1, 1, 0, 0), false, time.Time{}},
	}
	for _, tt := range tests {
		s := mustParse(t, tt.expr, nil)
		missed, latest := s.Missed(tt.last, tt.now)
		if missed != tt.wantMissed || !latest.Equal(tt.want) {
			t.Errorf("%s: %q.Missed(%v, %v) = %v, %v; want %v, %v", tt.name, tt.expr, tt.last, tt.now, missed, latest, tt.wantMissed, tt.want)
		}
	}
}

// TestMissedMatchesWalk checks the bisection of Missed against the obvious
// walk from tick to tick, on random schedules and gaps.
func TestMissedMatchesWalk(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	exprs := []string{
		"* * * * *", "*/7 * * * *", "0 * * * *", "5,35 */3 * * *", "30 2 * * *", "0 9 * * 1-5",
		"0 0 1,15 * *", "0 0 13 * 5", "@daily", "@weekly", "@every 45m", "@every 1h30m", "17 4 29 2 *",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	base := date(2025, 1, 1, 0, 0)
	for range 300 {
		expr := exprs[rng.IntN(len(exprs))]
		loc := time.UTC
		if rng.IntN(2) == 0 {
			loc = berlin
		}
		s := mustParse(t, expr, loc)
		last := base.Add(time.Duration(rng.Int64N(int64(2 * 365 * 24 * time.Hour))))
		now := last.Add(time.Duration(rng.Int64N(int64(10 * 24 * time.Hour))))
		if rng.IntN(4) == 0 { // land on a tick
			now = s.Next(last)
		}
		missed, latest := s.Missed(last, now)
		var walked time.Time
		for t := s.Next(last); !t.IsZero() && !t.After(now); t = s.Next(t) {
			walked = t
		}
		if missed != !walked.IsZero() || !latest.Equal(walked) {
			t.Errorf("%q in %v: Missed(%v, %v) = %v, %v; walking gives %v", expr, loc, last, now, missed, latest, walked)
		}
	}
}

// FuzzSchedule checks that Parse never panics, that Next is strictly
// after its argument, and that Missed agrees with walking the ticks.
func FuzzSchedule(f *testing.F) {
	for _, expr := range []string{"0 * * * *", "*/5 * * * *", "0 9 * * 1-5", "@every 90m", "@hourly", "TZ=UTC", "CRON_TZ=Europe/Berlin 30 2 * * *", "0 0 30 2 *", "1-59/13 1,2 1 1 0"} {
		f.Add(expr, int64(1767225600), uint32(7200))
	}
	f.Fuzz(func(t *testing.T, expr string, lastUnix int64, gapSeconds uint32) {
		s, err := cron.Parse(expr, nil)
		if err != nil {
			return
		}
		last := time.Unix(lastUnix%(1<<34), 0).UTC() // within years 1425-2514
		now := last.Add(time.Duration(gapSeconds%(3*24*3600)) * time.Second)
		next := s.Next(last)
		if !next.IsZero() && !next.After(last) {
			t.Fatalf("Next(%v) = %v", last, next)
		}
		missed, latest := s.Missed(last, now)
		var walked time.Time
		steps := 0
		for t := next; !t.IsZero() && !t.After(now); t = s.Next(t) {
			walked = t
			if steps++; steps > 5000 {
				return // "@every 1s" over days: too long to walk
			}
		}
		if missed != !walked.IsZero() || !latest.Equal(walked) {
			t.Fatalf("Missed(%v, %v) = %v, %v; walking gives %v", last, now, missed, latest, walked)
		}
	})
}
