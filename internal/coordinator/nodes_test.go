package coordinator

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// TestNodeNameTaken: a server does not start under the name of a node
// that is live on another host; one whose lease ran out does not stop it.
func TestNodeNameTaken(t *testing.T) {
	h := newHarness(t, fmt.Sprintf(serialConfig, "true"))
	ctx := t.Context()
	other, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{
		ID: NewOwner(), Kind: store.OwnerNode, Node: hostname(), Host: "elsewhere", StateDir: "/srv/sortie", Lease: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = h.c.Start(ctx)
	if !errors.Is(err, ErrNodeNameTaken) || !strings.Contains(err.Error(), other.Owner) || !strings.Contains(err.Error(), "elsewhere") {
		t.Fatalf("start beside a live node of the same name: %v, want ErrNodeNameTaken naming %s on elsewhere", err, other.Owner)
	}

	// The same name, but its lease ran out an hour ago: a start goes on.
	h2 := newHarness(t, fmt.Sprintf(serialConfig, "true"))
	if _, err := h2.st.RegisterOwner(ctx, store.RegisterOwnerParams{
		ID: NewOwner(), Kind: store.OwnerNode, Node: hostname(), Host: "elsewhere", StateDir: "/srv/sortie",
		Lease: time.Minute, Now: time.Now().Add(-time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	h2.start()
}

// TestForgetNode: a live node is refused unless forced; forced, its owner
// is fenced and released, what it held is said, and its running buildset
// is adopted and run to its end here.
func TestForgetNode(t *testing.T) {
	h := newHarness(t, twoJobs)
	h.start()
	ctx := t.Context()
	gone, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{
		ID: NewOwner(), Kind: store.OwnerNode, Node: "gone", Host: "elsewhere", StateDir: "/srv/sortie", Lease: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	id := startedBy(t, h.runner, h.cfg.Load(), gone, time.Now().UTC())

	if _, err := h.c.ForgetNode(ctx, "nobody", false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("forget an unknown node: %v, want ErrNotFound", err)
	}
	if _, err := h.c.ForgetNode(ctx, hostname(), true); !errors.Is(err, ErrNodeSelf) {
		t.Errorf("forget this node: %v, want ErrNodeSelf", err)
	}
	if _, err := h.c.ForgetNode(ctx, "gone", false); !errors.Is(err, ErrNodeLive) {
		t.Fatalf("forget a live node without force: %v, want ErrNodeLive", err)
	}
	if o := owner(t, h.st, gone.Owner); o.State != store.OwnerLive {
		t.Fatalf("a refused forget moved the owner to %s", o.State)
	}
	f, err := h.c.ForgetNode(ctx, "gone", true)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Owners) != 1 || f.Owners[0].ID != gone.Owner || len(f.Buildsets) != 1 || f.Buildsets[0] != id {
		t.Errorf("forgotten %+v, want owner %s with buildset %s", f, gone.Owner, id)
	}
	if o := owner(t, h.st, gone.Owner); o.State != store.OwnerReleased {
		t.Errorf("the forgotten owner is %s, want released", o.State)
	}
	ev := h.waitEnded(id, map[string][]Ended{})
	if bs := h.get(id); bs.Owner != h.c.Owner() {
		t.Errorf("the buildset ended (%+v) owned by %q, want this node's %q", ev, bs.Owner, h.c.Owner())
	}
	if _, err := h.c.ForgetNode(ctx, "gone", false); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("forget it again: %v, want ErrNotFound (nothing left to forget)", err)
	}
}

func owner(t *testing.T, st store.Owners, id string) store.Owner {
	t.Helper()
	os, err := st.Owners(t.Context(), store.OwnerFilter{IDs: []string{id}})
	if err != nil || len(os) != 1 {
		t.Fatalf("owner %s: %v, %v", id, os, err)
	}
	return os[0]
}

// TestCheckDrift: a live node with another config is named, and logged
// once however often it is checked; once it is gone, the end of the drift
// is logged.
func TestCheckDrift(t *testing.T) {
	h := newHarness(t, twoJobs)
	h.start()
	ctx := t.Context()
	// Alone, it compares with nobody, and computes no fingerprint (a
	// `sortie run` of 10,000 jobs spent 0.3 s on it).
	h.c.fpMu.Lock()
	h.c.fpOf, h.c.fp = nil, ""
	h.c.fpMu.Unlock()
	if differ, err := h.c.CheckDrift(ctx); err != nil || len(differ) != 0 {
		t.Fatalf("drift alone: %v, %v; want none", differ, err)
	}
	h.c.fpMu.Lock()
	computed := h.c.fpOf != nil
	h.c.fpMu.Unlock()
	if computed {
		t.Error("CheckDrift alone computed the config's fingerprint")
	}
	other, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{
		ID: NewOwner(), Kind: store.OwnerNode, Node: "other", Host: "elsewhere", StateDir: "/srv/sortie",
		ConfigFP: "0123456789abcdef", Lease: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A node with the same settings is no drift.
	if _, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{
		ID: NewOwner(), Kind: store.OwnerNode, Node: "twin", Host: "elsewhere", StateDir: "/srv/twin",
		ConfigFP: h.cfg.Load().Fingerprint(), Lease: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		differ, err := h.c.CheckDrift(ctx)
		if err != nil || len(differ) != 1 || !strings.HasPrefix(differ[0], "other ") {
			t.Fatalf("drift: %v, %v; want other alone", differ, err)
		}
	}
	if n := strings.Count(h.log.String(), "config drift: "); n != 1 {
		t.Errorf("the drift was logged %d times, want once:\n%s", n, h.log)
	}
	if !strings.Contains(h.log.String(), "other (0123456789ab)") {
		t.Errorf("the log does not name the node and its fingerprint:\n%s", h.log)
	}
	if _, err := h.st.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{other.Owner}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if differ, err := h.c.CheckDrift(ctx); err != nil || len(differ) != 0 {
		t.Fatalf("drift once other is fenced: %v, %v; want none", differ, err)
	}
	if !strings.Contains(h.log.String(), "config drift over") {
		t.Errorf("the end of the drift is not logged:\n%s", h.log)
	}
}
