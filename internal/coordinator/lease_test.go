package coordinator

import (
	"context"
	"testing"

	"github.com/sortie-ci/sortie/internal/store"
)

// TestLostLeaseGoesOnAsNewOwner: another process fenced this one while a
// build ran (its lease had run out, say after a SIGSTOP). The end of the
// build is refused as fenced and written nowhere; the coordinator stops
// its runs, registers as a new owner, recovers what the old one left as a
// successor on the state dir would (the build's attempt LOST, tried
// again), and the buildset ends SUCCESS under the new owner.
func TestLostLeaseGoesOnAsNewOwner(t *testing.T) {
	g := newGate(t)
	h := newHarness(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: '`+g.wait()+`', attempts: 2}
pipelines:
  p: {jobs: [boot, work]}
`)
	ctx := context.Background()
	h.start()
	old := h.c.Owner()
	waitSignal(t, "the first registration", &h.c.TestSignals.Registered, old)
	bs := h.submit("p")
	waitFor(t, "work to start", func() bool {
		atts, _ := h.st.Attempts(ctx, bs.ID, "work")
		return len(atts) == 1
	})
	if _, err := h.st.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{old}, Force: true}); err != nil {
		t.Fatal(err)
	}
	g.open(t) // work ends; recording its end is refused
	var next string
	for wctx := waitCtx(t); next == ""; {
		id, err := h.c.TestSignals.Registered.Wait(wctx)
		if err != nil {
			t.Fatalf("waiting for a new registration: %v", err)
		}
		if id != old {
			next = id
		}
	}
	if ev := h.waitEnded(bs.ID, map[string][]Ended{}); ev.Result != store.Success {
		t.Errorf("the buildset: %s, want SUCCESS", ev.Result)
	}
	if got := h.get(bs.ID).Owner; got != next {
		t.Errorf("the buildset's owner %s, want the new owner %s", got, next)
	}
	atts, err := h.st.Attempts(ctx, bs.ID, "work")
	if err != nil {
		t.Fatal(err)
	}
	if len(atts) != 2 || atts[0].Result != store.Lost || atts[1].Result != store.Success || atts[1].Owner != next {
		t.Errorf("work's attempts %+v, want LOST then SUCCESS by %s", atts, next)
	}
	owners, err := h.st.Owners(ctx, store.OwnerFilter{IDs: []string{old, next}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		want := map[string]store.OwnerState{old: store.OwnerReleased, next: store.OwnerLive}[o.ID]
		if o.State != want {
			t.Errorf("owner %s: %s, want %s", o.ID, o.State, want)
		}
	}
	if h.c.Owner() != next {
		t.Errorf("Owner() = %s, want %s", h.c.Owner(), next)
	}
}
