package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// TestNoHTTP: the coordinator decides; serving HTTP is internal/server's.
// Nothing it imports, however deep, is net/http (which would also bring
// in the metrics library: metrics reach it through Observer).
func TestNoHTTP(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var pkgs []string
	importers := map[string][]string{} // net/http -> who imports it
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p.ImportPath)
		for _, imp := range p.Imports {
			importers[imp] = append(importers[imp], p.ImportPath)
		}
	}
	if !slices.Contains(pkgs, "github.com/sortie-ci/sortie/internal/coordinator") {
		t.Fatalf("go list did not list the coordinator:\n%s", out)
	}
	if slices.Contains(pkgs, "net/http") {
		t.Errorf("the coordinator depends on net/http, imported by %v", importers["net/http"])
	}
}

// TestNewOwner: owner ids are new each time, say nothing of a kind, and
// are ids a bastion takes.
func TestNewOwner(t *testing.T) {
	a, b := NewOwner(), NewOwner()
	if a == b {
		t.Errorf("two owners named %s", a)
	}
	for _, id := range []string{a, b} {
		if err := bastion.CheckOwner(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

// TestServiceLifecycle: Stop before Start does nothing, Stop waits for the
// loop, a second Stop (concurrent or not) too, and a stopped loop starts
// again; a second Start is refused. The Coordinator's Stop is safe before
// Start and twice.
func TestServiceLifecycle(t *testing.T) {
	ctx := t.Context()
	running := make(chan struct{}, 1)
	var returned bool
	l := &loop{name: "test", run: func(ctx context.Context) {
		running <- struct{}{}
		<-ctx.Done()
		returned = true
	}}
	l.Stop(ctx)
	for range 2 {
		returned = false
		if err := l.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Start(ctx); err == nil {
			t.Error("a second Start was not refused")
		}
		<-running
		done := make(chan struct{})
		go func() { l.Stop(ctx); close(done) }()
		l.Stop(ctx)
		<-done
		if !returned {
			t.Error("Stop returned before the loop did")
		}
	}

	h := newHarness(t, twoJobs)
	h.c.Stop(ctx)
	h.start()
	h.c.Stop(ctx)
	h.c.Stop(ctx)
	if !h.c.Stopping() {
		t.Error("a stopped coordinator does not say it is stopping")
	}
	if err := h.c.Start(ctx); err == nil {
		t.Error("a second Start was not refused")
	}
}

const serialConfig = `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: '%s'}
pipelines:
  p: {manager: serial, jobs: [boot, work]}
`

// TestSerialAdmission: a serial pipeline admits its oldest buildset and
// holds the next back until the first has ended; a pause holds even the
// first.
func TestSerialAdmission(t *testing.T) {
	g := newGate(t)
	h := newHarness(t, fmt.Sprintf(serialConfig, g.wait()))
	ctx := t.Context()
	if err := h.c.SetPause(ctx, store.Pause{Pipeline: "p", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	h.start()
	first, second := h.submit("p"), h.submit("p")
	h.pass()
	if got := h.c.TestSignals.Admitted.Pending(); len(got) != 0 {
		t.Fatalf("admitted %v while paused", got)
	}
	plan := h.c.Status().Plan
	if len(plan.Waiting) != 2 || !strings.Contains(plan.Waiting[0].Reason, "paused") {
		t.Errorf("plan while paused: %+v, want both waiting for the pause", plan)
	}
	if err := h.c.ClearPause(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	waitSignal(t, "the first admitted", &h.c.TestSignals.Admitted, first.ID)
	h.pass()
	if bs := h.get(second.ID); bs.State != store.BuildsetQueued {
		t.Errorf("the second is %s while the first runs, want QUEUED", bs.State)
	}
	if got := h.c.TestSignals.Admitted.Pending(); len(got) != 0 {
		t.Errorf("admitted %v while the first runs", got)
	}
	g.open(t)
	seen := map[string][]Ended{}
	h.waitEnded(first.ID, seen)
	waitSignal(t, "the second admitted", &h.c.TestSignals.Admitted, second.ID)
	if ev := h.waitEnded(second.ID, seen); ev.Result != store.Success {
		t.Errorf("second: %s", ev.Result)
	}
}

// TestAdoptsPredecessor: a server that died while a buildset ran left its
// pipeline semaphore held (semaphore.ReleaseDead keeps it), and another
// buildset waiting for it. The next coordinator on the state dir adopts
// the running one, which gets the semaphore back (moved to the new owner,
// never free in between), resumes it, and only then lets the waiter in.
func TestAdoptsPredecessor(t *testing.T) {
	h := newHarness(t, `
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  p: {manager: independent, semaphore: bridge, jobs: [boot, work]}
  q: {manager: independent, semaphore: bridge, jobs: [boot, work]}
`)
	ctx := t.Context()
	// The predecessor: a server on this node, host and state dir, its
	// lease still running (it was killed a moment ago); the state dir's
	// lock, which the new one holds, proves it dead.
	now := time.Now()
	host := hostname()
	dead, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "o-dead1", Kind: store.OwnerNode,
		Node: host, Host: host, StateDir: h.state, Lease: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	// Another server elsewhere, alive: its waiter stays.
	other, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "o-other", Kind: store.OwnerNode,
		Node: "elsewhere", Host: "elsewhere", StateDir: "/elsewhere", Lease: time.Hour, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	running := h.create("p")
	if err := h.st.StartBuildset(ctx, store.StartBuildsetParams{ID: running.ID, Fence: dead, At: now}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []semaphore.Request{
		{Holder: running.ID, Buildset: running.ID, Owner: dead.Owner, Fence: dead, Semaphores: map[string]int{"bridge": 1}, Since: now, Now: now},
		{Holder: "waiter", Buildset: "waiter", Owner: other.Owner, Fence: other, Semaphores: map[string]int{"bridge": 1}, Since: now, Now: now},
	} {
		if _, err := semaphore.TryAcquire(ctx, h.st, r); err != nil {
			t.Fatal(err)
		}
	}
	h.start()
	waitSignal(t, "the adopted buildset's run", &h.c.TestSignals.Launched, running.ID)
	if bs := h.get(running.ID); bs.Owner != h.c.Owner() {
		t.Errorf("adopted buildset's owner %s, want %s", bs.Owner, h.c.Owner())
	}
	if ev := h.waitEnded(running.ID, map[string][]Ended{}); ev.Result != store.Success {
		t.Errorf("adopted buildset: %s", ev.Result)
	}
	rows, err := h.st.Owners(ctx, store.OwnerFilter{IDs: []string{dead.Owner, other.Owner, h.c.Owner()}})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]store.OwnerState{}
	for _, o := range rows {
		states[o.ID] = o.State
	}
	want := map[string]store.OwnerState{dead.Owner: store.OwnerReleased, other.Owner: store.OwnerLive, h.c.Owner(): store.OwnerLive}
	if !maps.Equal(states, want) {
		t.Errorf("owners %v, want %v", states, want)
	}
	if ws, _ := h.st.Waiters(ctx); len(ws) != 1 || ws[0].Holder != "waiter" {
		t.Errorf("waiters %+v, want the live server's", ws)
	}
}

// TestStartFailsCleanly: a recovery that cannot be done (the owners file
// is a directory) fails Start, which stops what it started.
func TestStartFailsCleanly(t *testing.T) {
	h := newHarness(t, twoJobs)
	if err := os.Mkdir(filepath.Join(h.state, "serve.owners"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := h.c.Start(t.Context())
	if err == nil || !strings.HasPrefix(err.Error(), "recover: ") {
		t.Fatalf("Start = %v, want a recovery error", err)
	}
	if !h.c.Stopping() {
		t.Error("a failed Start left the coordinator running")
	}
}
