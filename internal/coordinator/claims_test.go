package coordinator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

const claimsConfig = `
limits: {max_parallel: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: '%s'}
pipelines:
  p: {manager: independent, jobs: [boot, work]}
`

// twoServers starts two servers on one store, with one build slot each,
// whose job waits for g; a, started first, leads.
func twoServers(t *testing.T, open func() store.Store, g gate) (a, b *harness) {
	t.Helper()
	cfg := fmt.Sprintf(claimsConfig, g.wait())
	o := harnessOptions{store: open()}
	a = newHarnessWith(t, cfg, o)
	o.store, o.repo = open(), a.repo
	b = newHarnessWith(t, cfg, o)
	a.start()
	b.start()
	return a, b
}

// TestClaimsShareWork: the leader admits, and every server runs what it
// claims: with one build slot each, two servers run two buildsets at once
// (one each, the follower too), and the third waits, admitted and
// claimed by nobody, until one of them has room.
func TestClaimsShareWork(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		g := newGate(t)
		a, b := twoServers(t, open, g)
		if a.c.Leading() == nil || b.c.Leading() != nil {
			t.Fatal("a should lead, b follow")
		}
		ctx := waitCtx(t)
		var ids []string
		for range 3 {
			ids = append(ids, a.submit("p").ID)
		}
		ranA, err := a.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for the leader to run one: %v", err)
		}
		ranB, err := b.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatalf("waiting for the follower to run one: %v", err)
		}
		if ranA == ranB || ranA == ids[2] || ranB == ids[2] {
			t.Fatalf("a runs %s and b %s; want the two oldest of %v, one each", ranA, ranB, ids)
		}
		// Full, neither takes more, however often it looks.
		for _, h := range []*harness{a, b, a} {
			if err := h.c.Claim(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		if bs := a.get(ids[2]); bs.State != store.BuildsetAdmitted || bs.Owner != "" {
			t.Errorf("the third buildset is %s owned by %q, want ADMITTED and unclaimed while both servers are full", bs.State, bs.Owner)
		}
		if p := append(a.c.TestSignals.Launched.Pending(), b.c.TestSignals.Launched.Pending()...); len(p) > 0 {
			t.Errorf("launched %v beyond the build slots", p)
		}
		g.open(t)
		for _, id := range ids {
			waitDone(t, ctx, a, id)
			if bs := a.get(id); bs.Result != store.Success {
				builds, _ := a.st.Builds(t.Context(), id)
				for _, b := range builds {
					t.Logf("%s: %s %s %s", b.Job, b.State, b.Result, b.Reason)
				}
				t.Errorf("%s ended %s: %s", id, bs.Result, bs.Error)
			}
		}
		owners := map[string]string{ranA: a.c.Owner(), ranB: b.c.Owner()}
		for id, want := range owners {
			if got := a.get(id).Owner; got != want {
				t.Errorf("%s was run by %q, want %q", id, got, want)
			}
		}
		if got := a.get(ids[2]).Owner; got != a.c.Owner() && got != b.c.Owner() {
			t.Errorf("the third was run by %q, neither server", got)
		}
	})
}

// TestCancelThroughAnotherServer: a cancel asked of a server that does not
// run the buildset reaches the one that does, which cancels it; the other
// buildset runs on.
func TestCancelThroughAnotherServer(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		g := newGate(t)
		a, b := twoServers(t, open, g)
		ctx := waitCtx(t)
		one, two := a.submit("p").ID, a.submit("p").ID
		ranA, err := a.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ranB, err := b.c.TestSignals.Launched.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ranA == ranB || (ranA != one && ranA != two) || (ranB != one && ranB != two) {
			t.Fatalf("a runs %s and b %s; want %s and %s, one each", ranA, ranB, one, two)
		}
		if err := a.c.Cancel(t.Context(), ranB, "alice"); err != nil {
			t.Fatalf("cancel through a of what b runs: %v", err)
		}
		waitDone(t, ctx, a, ranB)
		if bs := a.get(ranB); bs.Result != store.Canceled {
			t.Errorf("the buildset b ran ended %s (%s), want CANCELED", bs.Result, bs.Error)
		}
		if !a.c.Running(ranA) {
			t.Errorf("a's buildset %s stopped running", ranA)
		}
		g.open(t)
		waitDone(t, ctx, a, ranA)
		if bs := a.get(ranA); bs.Result != store.Success {
			t.Errorf("the buildset a ran ended %s (%s), want SUCCESS", bs.Result, bs.Error)
		}
		if err := a.c.Cancel(t.Context(), ranB, "bob"); !errors.Is(err, store.ErrConflict) {
			t.Errorf("cancel of a finished buildset: %v, want ErrConflict", err)
		}
	})
}

// waitDone waits until buildset id is DONE in h's store.
func waitDone(t *testing.T, ctx context.Context, h *harness, id string) {
	t.Helper()
	for h.get(id).State != store.BuildsetDone {
		if ctx.Err() != nil {
			t.Fatalf("%s is still %s", id, h.get(id).State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
