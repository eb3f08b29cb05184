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

// TestReapDeadRuns: the buildsets of a `sortie run` that died are ended
// ERROR, with their running build ERROR and its attempt LOST, once the
// build it left running on the bastion has been ended; those of a live
// run, and of servers, are left alone.
func TestReapDeadRuns(t *testing.T) {
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
	mk := func(owner string) string {
		id := startedBy(t, r, cfg, owner, now)
		if err := r.Store.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: id, Job: "boot", Number: 1, Owner: owner, StartedAt: now}}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	dead, live, srv := mk("run-dead"), mk("run-live"), mk("srv-dead")
	// The dead run had made its checkout: reaping marks it finished, for
	// the bastion's cleanup to remove in its turn.
	deadBS, _ := r.Store.GetBuildset(ctx, dead)
	checkout, err := r.Bastion.Checkout(ctx, r.Mirror.Dir, dead, deadBS.Commit, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.st.RenewLease(ctx, "run-live", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	reaper := &Reaper{Store: h.st, Runner: r}
	reaped, err := reaper.ReapDeadRuns(ctx, now)
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

// TestReapDeadRunsKeepsWhatItCannotEnd: a dead run whose builds cannot be
// ended on the bastion keeps its buildset RUNNING (and so its pipeline
// held) for another try, says why, and does not stop the others' reaping.
func TestReapDeadRunsKeepsWhatItCannotEnd(t *testing.T) {
	h := newHarness(t, twoJobs)
	r, cfg := h.runner, h.cfg.Load()
	ctx := context.Background()
	now := time.Now().UTC()
	stuck, gone := startedBy(t, r, cfg, "run-stuck", now), startedBy(t, r, cfg, "run-gone", now)
	r.Bastion = unreachable{Bastion: r.Bastion, owner: "run-stuck"}
	reaper := &Reaper{Store: h.st, Runner: r}
	reaped, err := reaper.ReapDeadRuns(ctx, now)
	if err == nil || !strings.Contains(err.Error(), "run-stuck") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %v, want one naming run-stuck and why", err)
	}
	if len(reaped) != 1 || reaped[0] != gone {
		t.Errorf("reaped %v, want [%s]", reaped, gone)
	}
	if bs, _ := r.Store.GetBuildset(ctx, stuck); bs.State != store.BuildsetRunning {
		t.Errorf("the buildset whose builds could not be ended: %s, want RUNNING", bs.State)
	}
}

// startedBy makes a buildset of pipeline p that owner started at now, and
// returns its id.
func startedBy(t *testing.T, r *buildset.Runner, cfg *config.Config, owner string, now time.Time) string {
	t.Helper()
	ctx := context.Background()
	bs, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Store.StartBuildset(ctx, store.StartBuildsetParams{ID: bs.ID, Owner: owner, At: now}); err != nil {
		t.Fatal(err)
	}
	return bs.ID
}
