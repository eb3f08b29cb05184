package coordinator

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/store"
)

const twoJobs = `
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: "exit 1", env: {COLOUR: blue}, secret_env: [TOKEN]}
  b: {run: "true", dependencies: [a]}
  c: {run: "true"}
pipelines:
  p: {jobs: [boot, a, b, c]}
`

// TestReap: the buildsets of a `sortie run` that died are ended
// ERROR, with their running build ERROR and its attempt LOST, once the
// build it left running on the bastion has been ended; those of a live
// run, and of servers, are left alone.
func TestReap(t *testing.T) {
	h := newHarness(t, twoJobs)
	r, cfg := h.runner, h.cfg.Load()
	ctx := context.Background()
	now := time.Now().UTC()
	// What the dead run left: its boot build, still running, tagged with
	// its owner id but not recorded (as `sortie run` starts its builds).
	deadBastion := local.New(t.TempDir())
	deadBastion.Owner, deadBastion.Untracked = "run-dead", true
	orphan := make(chan bastion.Outcome, 1)
	go func() {
		out, _ := deadBastion.Run(ctx, bastion.Spec{Command: "sleep 300", Env: map[string]string{}}, nil)
		orphan <- out
	}()
	waitFor(t, "the orphan to start", func() bool { return len(ownerProcs(t, "run-dead")) > 0 })
	mk := func(owner string, kind store.OwnerKind, alive bool) string {
		fence := register(t, h.st, owner, kind, alive)
		id := startedBy(t, r, cfg, fence, now)
		if err := r.Store.StartAttempt(ctx, store.StartAttemptParams{Fence: fence,
			Attempt: &store.Attempt{BuildsetID: id, Job: "boot", Number: 1, Owner: owner, StartedAt: now}}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	dead, live, srv := mk("run-dead", store.OwnerRun, false), mk("run-live", store.OwnerRun, true), mk("srv-dead", store.OwnerNode, false)
	// The dead run had made its checkout: reaping marks it finished, for
	// the bastion's cleanup to remove in its turn.
	deadBS, _ := r.Store.GetBuildset(ctx, dead)
	checkout, err := r.Bastion.Checkout(ctx, r.Mirror.Dir, dead, deadBS.Commit, nil)
	if err != nil {
		t.Fatal(err)
	}
	reaper := &Reaper{Store: h.st, Runner: r}
	reaped, err := reaper.Reap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reaped) != 1 || reaped[0] != dead {
		t.Fatalf("reaped %v, want [%s]", reaped, dead)
	}
	if left := ownerProcs(t, "run-dead"); len(left) > 0 {
		t.Errorf("the dead run's build still runs after the reap: pids %v", left)
	}
	if _, err := os.Stat(filepath.Join(checkout, ".git", "sortie-finished")); err != nil {
		t.Errorf("the dead run's checkout is not marked finished: %v", err)
	}
	select {
	case out := <-orphan:
		if out.ExitCode == 0 {
			t.Errorf("the orphan ended by itself: %+v", out)
		}
	case <-time.After(10 * time.Second):
		t.Error("the orphan's Run never returned")
	}
	bs, _ := r.Store.GetBuildset(ctx, dead)
	if bs.State != store.BuildsetDone || bs.Result != store.Error || !strings.Contains(bs.Error, "run-dead") {
		t.Errorf("dead run's buildset: %s %s %q", bs.State, bs.Result, bs.Error)
	}
	builds, _ := r.Store.Builds(ctx, dead)
	for _, b := range builds {
		want := store.Canceled
		if b.Job == "boot" {
			want = store.Error
		}
		if b.Result != want {
			t.Errorf("%s: %s, want %s", b.Job, b.Result, want)
		}
	}
	atts, _ := r.Store.Attempts(ctx, dead, "boot")
	if atts[0].Result != store.Lost {
		t.Errorf("attempt: %s, want LOST", atts[0].Result)
	}
	for _, id := range []string{live, srv} {
		if bs, _ := r.Store.GetBuildset(ctx, id); bs.State != store.BuildsetRunning {
			t.Errorf("%s (%s) was touched: %s", id, bs.Owner, bs.State)
		}
	}
	// The dead ones are released (the server's buildset is left for its
	// successor); the live one is not touched.
	owners, err := h.st.Owners(ctx, store.OwnerFilter{IDs: []string{"run-dead", "run-live", "srv-dead"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range owners {
		want := store.OwnerReleased
		if o.ID == "run-live" {
			want = store.OwnerLive
		}
		if o.State != want {
			t.Errorf("owner %s: %s, want %s", o.ID, o.State, want)
		}
	}
}

// register registers owner of kind, with a lease of a minute: alive, or
// run out an hour ago.
func register(t *testing.T, st store.Owners, owner string, kind store.OwnerKind, alive bool) store.Fence {
	t.Helper()
	at := time.Now()
	if !alive {
		at = at.Add(-time.Hour)
	}
	fence, err := st.RegisterOwner(context.Background(), store.RegisterOwnerParams{ID: owner, Kind: kind, Lease: time.Minute, Now: at})
	if err != nil {
		t.Fatal(err)
	}
	return fence
}

// ownerProcs lists the live (not zombie) processes whose environment tags
// them with owner, as local.Bastion does.
func ownerProcs(t *testing.T, owner string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	tag := []byte(local.OwnerEnv + "=" + owner + "\x00")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, tag...)) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if i := bytes.LastIndexByte(stat, ')'); err == nil && i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unreachable is a bastion on which the builds of one owner cannot be
// ended.
type unreachable struct {
	bastion.Bastion
	owner string
}

func (u unreachable) KillOwner(ctx context.Context, owner string, grace time.Duration) error {
	if owner == u.owner {
		return errors.New("connection refused")
	}
	return u.Bastion.KillOwner(ctx, owner, grace)
}

// TestReapKeepsWhatItCannotEnd: a dead run whose builds cannot be
// ended on the bastion keeps its buildset RUNNING (and so its pipeline
// held) for another try, says why, and does not stop the others' reaping.
func TestReapKeepsWhatItCannotEnd(t *testing.T) {
	h := newHarness(t, twoJobs)
	r, cfg := h.runner, h.cfg.Load()
	ctx := context.Background()
	now := time.Now().UTC()
	stuck := startedBy(t, r, cfg, register(t, h.st, "run-stuck", store.OwnerRun, false), now)
	gone := startedBy(t, r, cfg, register(t, h.st, "run-gone", store.OwnerRun, false), now)
	r.Bastion = unreachable{Bastion: r.Bastion, owner: "run-stuck"}
	reaper := &Reaper{Store: h.st, Runner: r}
	reaped, err := reaper.Reap(ctx)
	if err == nil || !strings.Contains(err.Error(), "run-stuck") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %v, want one naming run-stuck and why", err)
	}
	if len(reaped) != 1 || reaped[0] != gone {
		t.Errorf("reaped %v, want [%s]", reaped, gone)
	}
	if bs, _ := r.Store.GetBuildset(ctx, stuck); bs.State != store.BuildsetRunning {
		t.Errorf("the buildset whose builds could not be ended: %s, want RUNNING", bs.State)
	}
	// The next round, the bastion reachable again, finishes the job.
	r.Bastion = r.Bastion.(unreachable).Bastion
	if reaped, err := reaper.Reap(ctx); err != nil || len(reaped) != 1 || reaped[0] != stuck {
		t.Errorf("the next round reaped %v (%v), want [%s]", reaped, err, stuck)
	}
}

// startedBy makes a buildset of pipeline p that fence's owner started at
// now, and returns its id.
func startedBy(t *testing.T, r *buildset.Runner, cfg *config.Config, fence store.Fence, now time.Time) string {
	t.Helper()
	ctx := context.Background()
	bs, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store.StartBuildset(ctx, store.StartBuildsetParams{ID: bs.ID, Fence: fence, At: now}); err != nil {
		t.Fatal(err)
	}
	return bs.ID
}
