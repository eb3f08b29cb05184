package coordinator

import (
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

// TestClaimsShareWork: the leader admits, and every server runs what it
// claims: with one build slot each, two servers run two buildsets at once
// (one each, the follower too), and the third waits, admitted and
// claimed by nobody, until one of them has room.
func TestClaimsShareWork(t *testing.T) {
	onStores(t, func(t *testing.T, open func() store.Store) {
		g := newGate(t)
		cfg := fmt.Sprintf(claimsConfig, g.wait())
		o := harnessOptions{store: open()}
		a := newHarnessWith(t, cfg, o)
		o.store, o.repo = open(), a.repo
		b := newHarnessWith(t, cfg, o)
		a.start()
		b.start()
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
			for {
				bs := a.get(id)
				if bs.State == store.BuildsetDone {
					if bs.Result != store.Success {
						builds, _ := a.st.Builds(t.Context(), id)
						for _, b := range builds {
							t.Logf("%s: %s %s %s", b.Job, b.State, b.Result, b.Reason)
						}
						t.Errorf("%s ended %s: %s", id, bs.Result, bs.Error)
					}
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("%s is still %s", id, bs.State)
				}
				time.Sleep(10 * time.Millisecond)
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
