package semaphore_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// A dead server's running buildset keeps its pipeline semaphore through a
// reap, until its successor adopts it: whoever else waits for the
// semaphore, even ranked ahead, does not get it in between. Its builds'
// semaphores are freed as usual.
func TestReapKeepsARunningBuildsetsPipelineSemaphore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := open(t, filepath.Join(t.TempDir(), "sortie.db"))
	t0 := time.Now().UTC().Add(-time.Hour)
	for _, id := range []string{"deploy", "hourly"} {
		if err := st.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: &store.Buildset{ID: id, Pipeline: id, Commit: "c", State: store.BuildsetQueued, CreatedAt: t0}, Jobs: []string{"a"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.StartBuildset(ctx, store.StartBuildsetParams{ID: "deploy", Owner: "srv-dead", At: t0}); err != nil {
		t.Fatal(err)
	}
	if err := st.RenewLease(ctx, "srv-dead", t0); err != nil { // long expired
		t.Fatal(err)
	}
	dead := &semaphore.Client{Store: st, Owner: "srv-dead"}
	bridge := map[string]int{"bridge": 1}
	if ok, err := dead.TryAcquire(ctx, "deploy", bridge, t0); !ok || err != nil {
		t.Fatalf("deploy's pipeline semaphore: %v %v", ok, err)
	}
	if ok, err := dead.TryAcquire(ctx, "deploy/a", map[string]int{"pool": 1}, t0); !ok || err != nil {
		t.Fatalf("deploy/a's semaphore: %v %v", ok, err)
	}

	e := &ender{}
	live := &semaphore.Client{Store: st, Owner: "srv-live", Bastion: e, Precedence: 5}
	if err := st.RenewLease(ctx, "srv-live", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	live.Reap(ctx)
	if got := e.kills(); !slices.Equal(got, []string{"srv-dead"}) {
		t.Fatalf("builds ended of %v, want srv-dead's", got)
	}
	holders := func() []string {
		hs, err := st.Holders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, h := range hs {
			out = append(out, h.Holder+"@"+h.Owner)
		}
		return out
	}
	if got := holders(); !slices.Equal(got, []string{"deploy@srv-dead"}) {
		t.Fatalf("holders after the reap: %v, want only deploy's pipeline semaphore, still srv-dead's", got)
	}
	// Hourly, older and ranked higher, does not get it.
	if ok, err := live.TryAcquire(ctx, "hourly", bridge, t0.Add(-time.Hour)); ok || err != nil {
		t.Fatalf("hourly acquired a semaphore kept for a running buildset: %v %v", ok, err)
	}
	// The successor adopts deploy and, with it, its semaphore.
	if err := st.SetBuildsetOwner(ctx, "deploy", "srv-live"); err != nil {
		t.Fatal(err)
	}
	if ok, err := live.TryAcquire(ctx, "deploy", bridge, t0); !ok || err != nil {
		t.Fatalf("the adopted buildset's acquire: %v %v", ok, err)
	}
	if got := holders(); !slices.Equal(got, []string{"deploy@srv-live"}) {
		t.Fatalf("holders after the adoption: %v", got)
	}
}
