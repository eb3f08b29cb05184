package semaphore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// BenchmarkTryAcquire measures one job's semaphore cost on SQLite: a
// granted TryAcquire and its Release, on a semaphore with no waiter, or
// with waiters ranked behind the request (each also waiting for a full
// max-1 semaphore), which every decision reads and ranks.
func BenchmarkTryAcquire(b *testing.B) {
	for _, waiters := range []int{0, 8} {
		b.Run(fmt.Sprintf("waiters=%d", waiters), func(b *testing.B) {
			ctx := context.Background()
			st, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "sortie.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			c := &semaphore.Client{Store: st, Owner: "bench"}
			if err := c.Start(ctx); err != nil {
				b.Fatal(err)
			}
			defer c.Stop()
			t0 := time.Now()
			sems := map[string]int{"s": 2}
			// The first takes "full" and one slot of "s"; the others wait.
			for i := range waiters {
				if _, err := c.Ranked(0).TryAcquire(ctx, fmt.Sprintf("w%d", i), map[string]int{"s": 2, "full": 1}, t0.Add(time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				h := fmt.Sprintf("bs/j%d", i)
				ok, err := c.Ranked(1).TryAcquire(ctx, h, sems, t0)
				if err != nil || !ok {
					b.Fatalf("acquire %s: %v %v", h, ok, err)
				}
				if err := c.Release(ctx, h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
