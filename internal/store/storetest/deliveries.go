package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// testDeliveries: a delivery is claimed once, concurrent claims included;
// old deliveries and those beyond the count are forgotten, and can then be
// claimed again.
func testDeliveries(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := time.Date(2026, 3, 14, 15, 0, 0, 0, time.UTC)
	claim := func(id string, at time.Time, forget time.Time, keep int) bool {
		t.Helper()
		ok, err := s.ClaimDelivery(ctx, store.DeliveryClaim{ID: id, At: at, ForgetBefore: forget, Keep: keep})
		must(t, "claim "+id, err)
		return ok
	}
	if !claim("github/a", t0, time.Time{}, 0) {
		t.Fatal("first claim of github/a = false")
	}
	if claim("github/a", t0.Add(time.Second), time.Time{}, 0) {
		t.Error("second claim of github/a = true")
	}
	if !claim("gitlab/a", t0.Add(2*time.Second), time.Time{}, 0) {
		t.Error("gitlab/a is not github/a, but its claim = false")
	}
	if claim("GitHub/a", t0, time.Time{}, 0) != true {
		t.Error("ids are case-sensitive: GitHub/a = false")
	}

	// Of concurrent claims of one id, exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.ClaimDelivery(ctx, store.DeliveryClaim{ID: "gitea/race", At: t0.Add(time.Duration(i) * time.Millisecond)})
			if err != nil {
				t.Errorf("concurrent claim: %v", err)
				return
			}
			if ok {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Errorf("%d of 8 concurrent claims of one delivery won, want 1", won)
	}

	// By age: a claim forgets what came before ForgetBefore; a claim
	// again does not refresh a delivery's time.
	day := 24 * time.Hour
	if claim("github/a", t0.Add(day), t0, 0) {
		t.Error("github/a, received at ForgetBefore, claimed again")
	}
	if !claim("github/b", t0.Add(8*day), t0.Add(day), 0) {
		t.Error("github/b = false")
	}
	if !claim("github/a", t0.Add(8*day), t0.Add(time.Microsecond), 0) {
		t.Error("github/a, received before ForgetBefore, was not forgotten")
	}

	// By count: Keep newest, this one included.
	for i := range 5 {
		if !claim(fmt.Sprintf("github/n%d", i), t0.Add(9*day+time.Duration(i)*time.Second), time.Time{}, 3) {
			t.Errorf("github/n%d = false", i)
		}
	}
	for i, want := range []bool{true, true, false, false, false} {
		// n0 and n1 were forgotten; n2..n4 are kept (each claim keeps 3).
		got := claim(fmt.Sprintf("github/n%d", i), t0.Add(10*day), time.Time{}, 0)
		if got != want {
			t.Errorf("claim of github/n%d after Keep 3 = %v, want %v", i, got, want)
		}
	}
}
