package storetest

import (
	"bytes"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// ThroughStates makes a buildset with plan and spec and takes it through
// its state changes (admitted, claimed, started, ended) by a node owner,
// calling measure just before the changes and once they are made, and
// returns what it said each time. It checks that the buildset ends DONE
// with its plan and spec as made. A store's test measures what it writes
// (its log, its storage): the plan and spec are written once, when the
// buildset is made, never again by a change of its state.
func ThroughStates(t *testing.T, s store.Store, plan, spec []byte, measure func() int64) (before, after int64) {
	t.Helper()
	ctx := t.Context()
	bs := &store.Buildset{ID: "bs", Pipeline: "deploy", Commit: "c", CreatedAt: time.Now(), Plan: plan, Spec: spec}
	must(t, "create", s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs, Jobs: []string{"boot"}}))
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "server", Kind: store.OwnerNode, Lease: time.Hour})
	must(t, "register", err)
	before = measure()
	must(t, "admit", s.AdmitBuildset(ctx, bs.ID, f, time.Now()))
	if claimed, err := s.ClaimBuildsets(ctx, store.ClaimParams{Fence: f, Max: 1}); err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %d buildsets, %v", len(claimed), err)
	}
	must(t, "start", s.StartBuildset(ctx, store.StartBuildsetParams{ID: bs.ID, Fence: f, At: time.Now()}))
	_, err = s.EndBuildset(ctx, store.EndBuildsetParams{ID: bs.ID, Result: store.Success, BuildResult: store.Success, At: time.Now(), Fence: &f})
	must(t, "end", err)
	after = measure()
	got, err := s.GetBuildset(ctx, bs.ID)
	must(t, "get", err)
	if !bytes.Equal(got.Plan, plan) || !bytes.Equal(got.Spec, spec) || got.State != store.BuildsetDone {
		t.Errorf("after its end: %s, plan of %d bytes, spec of %d; want DONE with both as made", got.State, len(got.Plan), len(got.Spec))
	}
	return before, after
}
