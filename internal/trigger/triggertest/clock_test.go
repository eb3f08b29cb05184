package triggertest_test

import (
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/trigger"
	"github.com/sortie-ci/sortie/internal/trigger/triggertest"
)

func TestClock(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)
	c := triggertest.NewClock(t0)

	select {
	case got := <-c.After(0):
		if !got.Equal(t0) {
			t.Errorf("After(0) sent %v, want %v", got, t0)
		}
	default:
		t.Fatal("After(0) did not fire at once")
	}

	late, early := c.After(2*time.Minute), c.After(time.Minute)
	c.WaitForWaiters(t, 2)
	if next, ok := c.Next(); !ok || !next.Equal(t0.Add(time.Minute)) {
		t.Errorf("Next = %v, %v; want %v", next, ok, t0.Add(time.Minute))
	}
	c.Advance(59 * time.Second)
	if n := c.Waiters(); n != 2 {
		t.Fatalf("%d waiters before their time, want 2", n)
	}
	c.Set(t0.Add(time.Hour))
	for _, ch := range []<-chan time.Time{early, late} {
		select {
		case got := <-ch:
			if !got.Equal(t0.Add(time.Hour)) {
				t.Errorf("waiter got %v, want the clock's time", got)
			}
		default:
			t.Error("a due waiter did not fire")
		}
	}
	if n := c.Waiters(); n != 0 {
		t.Errorf("%d waiters left", n)
	}
	if _, ok := c.Next(); ok {
		t.Error("Next with no waiters")
	}

	// Going back fires nothing.
	back := c.After(time.Minute)
	c.Set(t0)
	select {
	case <-back:
		t.Error("waiter fired when the clock went back")
	default:
	}
	if !c.Now().Equal(t0) {
		t.Errorf("Now = %v, want %v", c.Now(), t0)
	}
}

func TestSystemClock(t *testing.T) {
	t.Parallel()
	var c trigger.Clock = trigger.SystemClock()
	before := time.Now()
	if now := c.Now(); now.Before(before) {
		t.Errorf("Now = %v, before %v", now, before)
	}
	<-c.After(0)
}
