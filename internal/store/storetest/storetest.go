// Package storetest is the conformance suite of store.Store: every
// implementation runs Run against a fresh database and must pass it whole.
//
// Times are kept to the microsecond: a time a store is given comes back in
// UTC, the same instant once both are truncated to whole microseconds
// (PostgreSQL's timestamptz keeps microseconds, SQLite's integers
// nanoseconds; a store may keep more, never less, and never rounds up).
// Every other time the suite writes is a whole number of microseconds, so
// that the cases compare times exactly, and a "just after T" is T plus a
// microsecond.
//
// Beyond the doc comments of store.Store, the suite pins these choices, so
// that every implementation makes them alike:
//   - CreateBuildset with an existing ID is an ErrConflict.
//   - Builds and Attempts of an unknown buildset or build, and a
//     Filter.Before naming no buildset, are ErrNotFound.
//   - StartAttempt with a Number not above the build's Attempt is an
//     ErrConflict (two processes cannot both start attempt 2).
//   - A zero time given to StartBuildset, EndBuildset, FinishAttempt or
//     FinishBuild leaves that time nil; FinishBuild of a build that never
//     started leaves it nil whatever the time (SKIPPED builds have null
//     times).
//   - EndBuildset of a DONE buildset reports false and changes nothing,
//     not even the semaphore rows of that buildset; a RUNNING build
//     between two attempts (none running) gets StartedResult.
//   - CreateBuildset with a ConfigError (or Skipped) and jobs is refused;
//     with none it makes the buildset DONE, never seen QUEUED.
//   - A lease "until T" is alive at T and expired a microsecond after it;
//     FenceOwners fences an owner whose lease ended before its Now, and
//     RenewOwner refuses a lease that ended, fenced or not.
//   - An owner that was never registered has no right to write: its
//     fenced writes are ErrFenced, and its waiters are dead.
//   - UpdateSemaphores sees a waiter alive while its owner is live and its
//     lease runs, and drops nothing by itself; through
//     semaphore.TryAcquire a dead owner's waiters are dropped, never its
//     holders: they keep their slots until ReleaseOwner.
//   - Every write that carries a Fence is ErrFenced, and changes nothing,
//     once its owner is fenced (fencing.go).
//   - UpdateSemaphores applies all of a change or none of it, and refuses
//     one that touches a semaphore it did not lock.
//   - A waiter keeps the rank of its first request.
//   - A waiter ranked ahead keeps one slot of each semaphore it waits for:
//     a later request is granted only if room remains beyond those slots.
//   - JobDurations of an even count is the mean of the middle two.
//   - A Spec given empty comes back nil.
//   - ClaimBuildsets leaves a buildset's state and times alone, and
//     moves its holders and waiters to the claimer; an admitted
//     buildset has no owner until claimed.
//   - RunningAttempts of an unknown buildset is ErrNotFound; an attempt
//     finished with a zero time (a Result, no FinishedAt) is not running.
//   - After ReleaseOwner the holders it was told to keep stay held, by the
//     released owner, until their buildset is adopted or ends.
//   - ClearPause("") clears the pause of all pipelines, not each
//     pipeline's own.
//   - ClaimDelivery does not move a delivery's time when it is claimed
//     again: a delivery replayed every day is still forgotten by age.
//   - A leader's term runs until ExpiresAt inclusive, as a lease; Elect
//     by the leader itself gives it a new term (it gave the old one up).
//   - A buildset made under a Term that is no longer the leader's, with a
//     cron tick claimed before, or with a poll mark that moved, is not
//     made, and neither is its tick or mark.
//   - Of concurrent EndBuildset calls on one buildset, exactly one reports
//     it ended; of concurrent StartAttempt calls of one number, exactly one
//     succeeds and the others are ErrConflict.
//   - AppendLog of a chunk already stored (same Seq, Offset and bytes) is
//     not an error; another chunk under its Seq or at its Offset is an
//     ErrConflict; an empty chunk is refused. ReadLog and LogSize of a log
//     that has no chunk give nothing and 0, not ErrNotFound: logs are not
//     tied to attempt rows.
//   - UpdateHosts of a task or result whose index is kept already leaves
//     the kept row as it is; recaps are replaced host by host; the
//     summary as a whole. Recaps come back by host in byte order,
//     BuildsetHosts' builds in build order; a build without results has
//     no rows (nil slices).
//   - A reader never sees a buildset appear behind one it saw already:
//     buildsets become visible in Seq order, so whoever takes the oldest
//     active buildset first cannot later find an older one.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// Run runs the conformance suite. newStore returns a new, empty store for
// one subtest and closes it when that test ends (t.Cleanup); subtests run
// in parallel, each on its own store.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"CreateGet", testCreateGet},
		{"FilesNilVersusEmpty", testFilesNilVersusEmpty},
		{"ModeNotKept", testModeNotKept},
		{"BuildByJob", testBuildByJob},
		{"CreateDuplicate", testCreateDuplicate},
		{"GetUnknown", testGetUnknown},
		{"CreateMakesWaitingBuilds", testCreateMakesWaitingBuilds},
		{"List", testList},
		{"ListPages", testListPages},
		{"ListDefaultLimit", testListDefaultLimit},
		{"BuildsetTransitions", testBuildsetTransitions},
		{"EndBuildset", testEndBuildset},
		{"EndBuildsetDefaults", testEndBuildsetDefaults},
		{"CreateConfigError", testCreateConfigError},
		{"CreateSkipped", testCreateSkipped},
		{"BuildTransitions", testBuildTransitions},
		{"Attempts", testAttempts},
		{"AttemptConflicts", testAttemptConflicts},
		{"FinishAttemptAndBuild", testFinishAttemptAndBuild},
		{"WriteBuilds", testWriteBuilds},
		{"WriteBuildsFenced", testWriteBuildsFenced},
		{"SemaphoreAllOrNothing", testSemaphoreAllOrNothing},
		{"SemaphoreMax", testSemaphoreMax},
		{"SemaphoreReacquire", testSemaphoreReacquire},
		{"SemaphoreRelease", testSemaphoreRelease},
		{"SemaphoreReleaseBuildset", testSemaphoreReleaseBuildset},
		{"FairnessPrecedence", testFairnessPrecedence},
		{"FairnessAging", testFairnessAging},
		{"FairnessSince", testFairnessSince},
		{"FairnessWaiterReleased", testFairnessWaiterReleased},
		{"FairnessWaiterKeepsRank", testFairnessWaiterKeepsRank},
		{"FairnessOtherSemaphore", testFairnessOtherSemaphore},
		{"FairnessReservesSlots", testFairnessReservesSlots},
		{"Owners", testOwners},
		{"OwnerLease", testOwnerLease},
		{"OwnerStateMachine", testOwnerStateMachine},
		{"TwoReapers", testTwoReapers},
		{"ExpiredHolderKept", testExpiredHolderKept},
		{"RenewedHolderKept", testRenewedHolderKept},
		{"UnregisteredOwner", testUnregisteredOwner},
		{"Fenced", testFenced},
		{"JobDurations", testJobDurations},
		{"Seq", testSeq},
		{"SpecNilVersusEmpty", testSpecNilVersusEmpty},
		{"ListByCommit", testListByCommit},
		{"AdmitTransitions", testAdmitTransitions},
		{"ActiveBuildsets", testActiveBuildsets},
		{"ClaimBuildsets", testClaimBuildsets},
		{"ChangedBuildsets", testChangedBuildsets},
		{"ChangedBuildsetsConcurrent", testChangedBuildsetsConcurrent},
		{"ClaimOnce", testClaimOnce},
		{"CancelRequests", testCancelRequests},
		{"RunningAttempts", testRunningAttempts},
		{"ReleaseOwner", testReleaseOwner},
		{"ReleaseOwnerKeeps", testReleaseOwnerKeeps},
		{"Pauses", testPauses},
		{"Marks", testMarks},
		{"Deliveries", testDeliveries},
		{"SemaphoreConcurrency", testSemaphoreConcurrency},
		{"UpdateView", testUpdateView},
		{"UpdateAliveFlag", testUpdateAliveFlag},
		{"UpdateAtomic", testUpdateAtomic},
		{"UpdateKeepsFirstRank", testUpdateKeepsFirstRank},
		{"TimePrecision", testTimePrecision},
		{"EndBuildsetOnce", testEndBuildsetOnce},
		{"StartAttemptOnce", testStartAttemptOnce},
		{"SeqVisibleInOrder", testSeqVisibleInOrder},
		{"OutboxWithStateChanges", testOutboxWithStateChanges},
		{"OutboxClaims", testOutboxClaims},
		{"OutboxClaimOnce", testOutboxClaimOnce},
		{"LeaderOne", testLeaderOne},
		{"LeaderRace", testLeaderRace},
		{"LeaderExpiry", testLeaderExpiry},
		{"LeaderReelectExpired", testLeaderReelectExpired},
		{"LeaderResign", testLeaderResign},
		{"LeaderFenced", testLeaderFenced},
		{"CronTicks", testCronTicks},
		{"CronTickRace", testCronTickRace},
		{"PollSwap", testPollSwap},
		{"LogAppendRead", testLogAppendRead},
		{"LogEmpty", testLogEmpty},
		{"LogKeysApart", testLogKeysApart},
		{"LogAppendTwice", testLogAppendTwice},
		{"LogReadBounded", testLogReadBounded},
		{"Hosts", testHosts},
		{"HostsNewAttempt", testHostsNewAttempt},
		{"HostsUnknown", testHostsUnknown},
		{"HostsBuildset", testHostsBuildset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

// t0 is not in UTC and has microseconds, so that a store that drops the
// zone's offset or keeps only milliseconds fails. Like every time the suite
// writes, it is a whole number of microseconds (see the package doc).
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.FixedZone("CET", 3600))

func at(d time.Duration) time.Time { return t0.Add(d) }

func ptr[T any](v T) *T { return &v }

// longLease outlives every time the suite writes: an owner made by own
// stays alive throughout a case.
const longLease = 100_000 * time.Hour

// own returns the Fence of owner id, registering it the first time (a
// node, with a longLease from t0).
func own(t *testing.T, s store.Store, id string) store.Fence {
	t.Helper()
	os, err := s.Owners(t.Context(), store.OwnerFilter{IDs: []string{id}})
	must(t, "owners", err)
	if len(os) == 1 {
		return store.Fence{Owner: id, Epoch: os[0].Epoch}
	}
	f, err := s.RegisterOwner(t.Context(), store.RegisterOwnerParams{ID: id, Kind: store.OwnerNode, Lease: longLease, Now: t0})
	must(t, "register "+id, err)
	return f
}

// writer is the Fence of the process that makes a case's writes when
// which one does not matter.
func writer(t *testing.T, s store.Store) store.Fence { return own(t, s, "writer") }

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func create(t *testing.T, s store.Store, bs *store.Buildset, jobs ...string) {
	t.Helper()
	must(t, "create buildset "+bs.ID, s.CreateBuildset(t.Context(), store.CreateBuildsetParams{Buildset: bs, Jobs: jobs}))
}

func get(t *testing.T, s store.Store, id string) *store.Buildset {
	t.Helper()
	bs, err := s.GetBuildset(t.Context(), id)
	must(t, "get buildset "+id, err)
	return bs
}

// finish ends a buildset through EndBuildset, its unfinished builds
// CANCELED, and fails unless it ended.
func finish(t *testing.T, s store.Store, id string, result store.Result, errMsg string, at time.Time) {
	t.Helper()
	ended, err := s.EndBuildset(t.Context(), store.EndBuildsetParams{
		ID: id, Result: result, Error: errMsg, BuildResult: store.Canceled, Reason: "test", At: at,
	})
	must(t, "end buildset "+id, err)
	if !ended {
		t.Fatalf("end buildset %s: it was DONE already", id)
	}
}

func build(t *testing.T, s store.Store, buildsetID, job string) *store.Build {
	t.Helper()
	bs, err := s.Builds(t.Context(), buildsetID)
	must(t, "builds of "+buildsetID, err)
	for _, b := range bs {
		if b.Job == job {
			return b
		}
	}
	t.Fatalf("builds of %s: no build %s", buildsetID, job)
	return nil
}

// checkUTC fails unless every time is in UTC: stores hand back UTC.
func checkUTC(t *testing.T, what string, ts ...*time.Time) {
	t.Helper()
	for _, ts := range ts {
		if ts != nil && ts.Location() != time.UTC {
			t.Errorf("%s: time %v is in %v, want UTC", what, ts, ts.Location())
		}
	}
}

// ignoreSeq compares buildsets without their Seq, which only has to grow.
var ignoreSeq = cmpopts.IgnoreFields(store.Buildset{}, "Seq")

func diff(t *testing.T, what string, want, got any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, opts...); d != "" {
		t.Errorf("%s (-want +got):\n%s", what, d)
	}
}

func testCreateGet(t *testing.T, s store.Store) {
	bs := &store.Buildset{
		ID:        "bs1",
		Pipeline:  "deploy",
		Commit:    "0123456789abcdef0123456789abcdef01234567",
		Files:     []string{"playbooks/base.yaml", "inventory/hosts"},
		Plan:      []byte(`{"pipeline":"deploy","jobs":[{"name":"base"}]}`),
		Spec:      []byte(`{"base":{"run":"make"}}`),
		Mode:      []byte(`{"check":true}`),
		Cause:     "push to main by github",
		RerunOf:   "bs0",
		CreatedAt: t0,
		// Kept: the process that will run it itself (a sortie run).
		PinnedTo: "run-someone",
		// Ignored: a new buildset is QUEUED with no owner and no result,
		// and the store assigns Seq.
		Owner: "someone", State: store.BuildsetDone, Result: store.Success, Seq: -7,
	}
	create(t, s, bs, "bootstrap", "base")
	if bs.Seq <= 0 {
		t.Errorf("CreateBuildset set Seq = %d, want > 0", bs.Seq)
	}
	got := get(t, s, "bs1")
	want := &store.Buildset{
		ID:        "bs1",
		Seq:       bs.Seq,
		Pipeline:  "deploy",
		Commit:    "0123456789abcdef0123456789abcdef01234567",
		Files:     []string{"playbooks/base.yaml", "inventory/hosts"},
		State:     store.BuildsetQueued,
		Plan:      []byte(`{"pipeline":"deploy","jobs":[{"name":"base"}]}`),
		Spec:      []byte(`{"base":{"run":"make"}}`),
		Mode:      []byte(`{"check":true}`),
		Cause:     "push to main by github",
		RerunOf:   "bs0",
		PinnedTo:  "run-someone",
		CreatedAt: t0,
	}
	diff(t, "GetBuildset", want, got)
	active, err := s.ActiveBuildsets(t.Context())
	must(t, "active", err)
	diff(t, "ActiveBuildsets", []*store.Buildset{want}, active)
	// The reads that list buildsets leave out the plan, and the spec,
	// the mode being kept apart.
	light := *want
	light.Plan, light.Spec = nil, nil
	list, err := s.ListBuildsets(t.Context(), store.Filter{})
	must(t, "list", err)
	diff(t, "ListBuildsets", []*store.Buildset{&light}, list)
	ch, err := s.ChangedBuildsets(t.Context(), 0)
	must(t, "changed", err)
	diff(t, "ChangedBuildsets", []*store.Buildset{&light}, ch.Buildsets)
	one, err := s.GetBuildsetLight(t.Context(), "bs1")
	must(t, "get light", err)
	diff(t, "GetBuildsetLight", &light, one)
	if _, err := s.GetBuildsetLight(t.Context(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetBuildsetLight of an unknown id: %v, want ErrNotFound", err)
	}
	checkUTC(t, "CreatedAt", &got.CreatedAt)
	if got.CreatedAt.Nanosecond() != t0.Nanosecond() {
		t.Errorf("CreatedAt sub-second = %d ns, want %d", got.CreatedAt.Nanosecond(), t0.Nanosecond())
	}
}

// testBuildByJob: Build reads one build by its job, the same as Builds
// has it, and is ErrNotFound for a job the buildset does not run or a
// buildset that does not exist.
func testBuildByJob(t *testing.T, s store.Store) {
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "c", CreatedAt: t0}, "boot", "a", "b")
	f := own(t, s, "n1")
	must(t, "start a", s.StartAttempt(t.Context(), store.StartAttemptParams{
		Attempt: &store.Attempt{BuildsetID: "bs1", Job: "a", Number: 1, Owner: f.Owner, StartedAt: at(time.Second), Log: "a.log"}, Fence: f}))
	all, err := s.Builds(t.Context(), "bs1")
	must(t, "builds", err)
	for _, want := range all {
		got, err := s.Build(t.Context(), "bs1", want.Job)
		must(t, "build "+want.Job, err)
		diff(t, "Build "+want.Job, want, got)
	}
	if got := build(t, s, "bs1", "a"); got.State != store.BuildRunning || got.Attempt != 1 {
		t.Errorf("build a: %+v, want RUNNING, attempt 1", got)
	}
	for _, c := range [][2]string{{"bs1", "nope"}, {"nope", "a"}} {
		if b, err := s.Build(t.Context(), c[0], c[1]); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Build(%s, %s) = %+v, %v; want ErrNotFound", c[0], c[1], b, err)
		}
	}
}

// testModeNotKept: a buildset made without its mode kept apart (by an
// older Sortie, before the column) is listed with its spec, where the
// mode is then read; its plan is still left out.
func testModeNotKept(t *testing.T, s store.Store) {
	bs := &store.Buildset{
		ID: "old", Pipeline: "deploy", Commit: "c", CreatedAt: t0,
		Plan: []byte(`{"pipeline":"deploy"}`), Spec: []byte(`{"check":true,"limit":"web*"}`),
	}
	create(t, s, bs, "boot")
	if got := get(t, s, "old"); got.Mode != nil || string(got.Spec) != string(bs.Spec) {
		t.Errorf("GetBuildset: Mode %q Spec %q, want no mode and the spec", got.Mode, got.Spec)
	}
	list, err := s.ListBuildsets(t.Context(), store.Filter{})
	must(t, "list", err)
	ch, err := s.ChangedBuildsets(t.Context(), 0)
	must(t, "changed", err)
	one, err := s.GetBuildsetLight(t.Context(), "old")
	must(t, "get light", err)
	for what, got := range map[string][]*store.Buildset{"ListBuildsets": list, "ChangedBuildsets": ch.Buildsets, "GetBuildsetLight": {one}} {
		if len(got) != 1 || got[0].Mode != nil || string(got[0].Spec) != string(bs.Spec) || got[0].Plan != nil {
			t.Errorf("%s: %+v, want old with its spec, no mode and no plan", what, got)
		}
	}
}

func testFilesNilVersusEmpty(t *testing.T, s store.Store) {
	create(t, s, &store.Buildset{ID: "cron", Pipeline: "hourly", Commit: "c", CreatedAt: t0})
	create(t, s, &store.Buildset{ID: "empty", Pipeline: "deploy", Commit: "c", Files: []string{}, CreatedAt: at(time.Second)})
	if got := get(t, s, "cron"); got.Files != nil {
		t.Errorf("buildset without file list: Files = %#v, want nil", got.Files)
	}
	if got := get(t, s, "empty"); got.Files == nil || len(got.Files) != 0 {
		t.Errorf("buildset with empty file list: Files = %#v, want []string{}", got.Files)
	}
	if got := get(t, s, "cron"); got.Plan != nil {
		t.Errorf("buildset without plan: Plan = %q, want nil", got.Plan)
	}
	list, err := s.ListBuildsets(t.Context(), store.Filter{})
	must(t, "list", err)
	for _, bs := range list {
		if (bs.ID == "cron") != (bs.Files == nil) {
			t.Errorf("ListBuildsets: %s: Files = %#v", bs.ID, bs.Files)
		}
	}
}

func testCreateDuplicate(t *testing.T, s store.Store) {
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "bootstrap")
	err := s.CreateBuildset(t.Context(), store.CreateBuildsetParams{Buildset: &store.Buildset{ID: "bs1", Pipeline: "hourly", Commit: "b", CreatedAt: at(time.Second)}, Jobs: []string{"x"}})
	wantErr(t, "create duplicate", err, store.ErrConflict)
	if got := get(t, s, "bs1"); got.Pipeline != "deploy" {
		t.Errorf("duplicate create changed the buildset: %+v", got)
	}
}

func testGetUnknown(t *testing.T, s store.Store) {
	_, err := s.GetBuildset(t.Context(), "nope")
	wantErr(t, "get unknown", err, store.ErrNotFound)
	_, err = s.Builds(t.Context(), "nope")
	wantErr(t, "builds of unknown", err, store.ErrNotFound)
	_, err = s.Attempts(t.Context(), "nope", "base")
	wantErr(t, "attempts of unknown", err, store.ErrNotFound)
	_, err = s.ListBuildsets(t.Context(), store.Filter{Before: "nope"})
	wantErr(t, "list before unknown", err, store.ErrNotFound)
}

func testCreateMakesWaitingBuilds(t *testing.T, s store.Store) {
	// Not sorted: builds come back in creation order, not by name.
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "bootstrap", "zuul", "base", "letsencrypt")
	got, err := s.Builds(t.Context(), "bs1")
	must(t, "builds", err)
	var want []*store.Build
	for _, job := range []string{"bootstrap", "zuul", "base", "letsencrypt"} {
		want = append(want, &store.Build{BuildsetID: "bs1", Job: job, State: store.BuildWaiting})
	}
	diff(t, "Builds", want, got)

	create(t, s, &store.Buildset{ID: "nojobs", Pipeline: "deploy", Commit: "a", CreatedAt: t0})
	got, err = s.Builds(t.Context(), "nojobs")
	must(t, "builds of a buildset without jobs", err)
	if len(got) != 0 {
		t.Errorf("builds of a buildset without jobs: %v", got)
	}
}

func ids(bss []*store.Buildset) []string {
	var out []string
	for _, bs := range bss {
		out = append(out, bs.ID)
	}
	return out
}

func testList(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Created out of time order, and d1/d2 at the same instant: newest
	// first means by CreatedAt, then by creation.
	create(t, s, &store.Buildset{ID: "h1", Pipeline: "hourly", Commit: "a", CreatedAt: at(2 * time.Second)})
	create(t, s, &store.Buildset{ID: "d0", Pipeline: "deploy", Commit: "a", CreatedAt: at(1 * time.Second)})
	create(t, s, &store.Buildset{ID: "d1", Pipeline: "deploy", Commit: "b", CreatedAt: at(3 * time.Second)})
	create(t, s, &store.Buildset{ID: "d2", Pipeline: "deploy", Commit: "c", CreatedAt: at(3 * time.Second)})
	create(t, s, &store.Buildset{ID: "h2", Pipeline: "hourly", Commit: "c", CreatedAt: at(4*time.Second + time.Microsecond)})
	must(t, "start d0", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "d0", Fence: own(t, s, "p1"), At: at(5 * time.Second)}))
	finish(t, s, "d0", store.Success, "", at(6*time.Second))
	must(t, "start d1", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "d1", Fence: own(t, s, "p1"), At: at(5 * time.Second)}))
	finish(t, s, "d1", store.Failure, "base failed", at(6*time.Second))
	finish(t, s, "h1", store.Success, "", at(6*time.Second))
	must(t, "start h2", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "h2", Fence: own(t, s, "p1"), At: at(5 * time.Second)}))

	for _, tt := range []struct {
		name string
		f    store.Filter
		want []string
	}{
		{"all", store.Filter{}, []string{"h2", "d2", "d1", "h1", "d0"}},
		{"pipeline", store.Filter{Pipeline: "deploy"}, []string{"d2", "d1", "d0"}},
		{"result", store.Filter{Result: store.Success}, []string{"h1", "d0"}},
		{"state", store.Filter{State: store.BuildsetQueued}, []string{"d2"}},
		{"state running", store.Filter{State: store.BuildsetRunning}, []string{"h2"}},
		{"pipeline and result", store.Filter{Pipeline: "deploy", Result: store.Success}, []string{"d0"}},
		{"limit", store.Filter{Limit: 2}, []string{"h2", "d2"}},
		{"before", store.Filter{Before: "d2"}, []string{"d1", "h1", "d0"}},
		{"before same instant", store.Filter{Before: "d1"}, []string{"h1", "d0"}},
		{"before and pipeline", store.Filter{Before: "d2", Pipeline: "hourly"}, []string{"h1"}},
		{"before the oldest", store.Filter{Before: "d0"}, nil},
		{"no match", store.Filter{Pipeline: "nope"}, nil},
	} {
		got, err := s.ListBuildsets(ctx, tt.f)
		must(t, tt.name, err)
		diff(t, "ListBuildsets "+tt.name, tt.want, ids(got), cmpopts.EquateEmpty())
	}

	got, err := s.ListBuildsets(ctx, store.Filter{Pipeline: "deploy", Result: store.Failure})
	must(t, "list failures", err)
	want := []*store.Buildset{{
		ID: "d1", Pipeline: "deploy", Commit: "b", State: store.BuildsetDone, Result: store.Failure,
		Error: "base failed", Owner: "p1", CreatedAt: at(3 * time.Second),
		StartedAt: ptr(at(5 * time.Second)), FinishedAt: ptr(at(6 * time.Second)),
	}}
	diff(t, "ListBuildsets failures", want, got, ignoreSeq)
	for _, bs := range got {
		checkUTC(t, "ListBuildsets", &bs.CreatedAt, bs.StartedAt, bs.FinishedAt)
	}
}

func testListPages(t *testing.T, s store.Store) {
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("bs%d", i)
		// Pairs share an instant, so paging must not lose or repeat one.
		create(t, s, &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: at(time.Duration(i/2) * time.Second)})
		want = append([]string{id}, want...)
	}
	var got []string
	f := store.Filter{Limit: 3}
	for page := 0; ; page++ {
		if page > 10 {
			t.Fatalf("paging does not end: %v", got)
		}
		bss, err := s.ListBuildsets(t.Context(), f)
		must(t, "page", err)
		if len(bss) > 3 {
			t.Fatalf("page of %d, limit 3", len(bss))
		}
		if len(bss) == 0 {
			break
		}
		got = append(got, ids(bss)...)
		f.Before = bss[len(bss)-1].ID
	}
	diff(t, "all pages", want, got)
}

func testListDefaultLimit(t *testing.T, s store.Store) {
	for i := range 51 {
		create(t, s, &store.Buildset{ID: fmt.Sprintf("bs%02d", i), Pipeline: "deploy", Commit: "a", CreatedAt: at(time.Duration(i) * time.Second)})
	}
	got, err := s.ListBuildsets(t.Context(), store.Filter{})
	must(t, "list", err)
	if len(got) != 50 {
		t.Fatalf("default limit: got %d buildsets, want 50", len(got))
	}
	if got[0].ID != "bs50" || got[49].ID != "bs01" {
		t.Errorf("default limit: got %s..%s, want bs50..bs01", got[0].ID, got[49].ID)
	}
}

func testBuildsetTransitions(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "bootstrap")

	must(t, "start", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "proc-1"), At: at(time.Second)}))
	wantErr(t, "start twice", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "proc-2"), At: at(2 * time.Second)}), store.ErrConflict)
	got := get(t, s, "bs1")
	if got.State != store.BuildsetRunning || got.Owner != "proc-1" || got.StartedAt == nil || !got.StartedAt.Equal(at(time.Second)) {
		t.Errorf("after start: %+v", got)
	}
	checkUTC(t, "StartedAt", got.StartedAt)

	finish(t, s, "bs1", store.Failure, "letsencrypt failed", at(3*time.Second))
	// Ending it again changes nothing, and says so.
	ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: "bs1", Result: store.Success, BuildResult: store.Success, At: at(4 * time.Second)})
	must(t, "end done", err)
	if ended {
		t.Error("end done: ended again")
	}
	wantErr(t, "start done", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "proc-2"), At: at(4 * time.Second)}), store.ErrConflict)
	got = get(t, s, "bs1")
	want := &store.Buildset{
		ID: "bs1", Pipeline: "deploy", Commit: "a", State: store.BuildsetDone, Result: store.Failure,
		Error: "letsencrypt failed", Owner: "proc-1", CreatedAt: t0,
		StartedAt: ptr(at(time.Second)), FinishedAt: ptr(at(3 * time.Second)),
	}
	diff(t, "after finish", want, got, ignoreSeq)
	checkUTC(t, "FinishedAt", got.FinishedAt)

	// A queued buildset cancelled before it ran is ended from QUEUED.
	create(t, s, &store.Buildset{ID: "queued", Pipeline: "hourly", Commit: "a", CreatedAt: t0})
	finish(t, s, "queued", store.Canceled, "cancelled by alice", at(time.Second))
	if got := get(t, s, "queued"); got.State != store.BuildsetDone || got.Result != store.Canceled || got.StartedAt != nil {
		t.Errorf("ended from QUEUED: %+v", got)
	}

	wantErr(t, "start unknown", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "nope", Fence: own(t, s, "p"), At: t0}), store.ErrNotFound)
	_, err = s.EndBuildset(ctx, store.EndBuildsetParams{ID: "nope", Result: store.Success, BuildResult: store.Success, At: t0})
	wantErr(t, "end unknown", err, store.ErrNotFound)
}

func testBuildTransitions(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "bootstrap", "base", "zuul")

	// Skipped without ever starting: null times, a reason, even when the
	// caller gives the time it decided so.
	must(t, "skip", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "zuul", Result: store.Skipped, Reason: "dependency base failed", At: at(time.Second), Fence: writer(t, s)}))
	diff(t, "skipped build", &store.Build{
		BuildsetID: "bs1", Job: "zuul", State: store.BuildDone, Result: store.Skipped, Reason: "dependency base failed",
	}, build(t, s, "bs1", "zuul"))
	wantErr(t, "finish skipped", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "zuul", Result: store.Success, Reason: "", At: at(time.Second), Fence: writer(t, s)}), store.ErrConflict)
	wantErr(t, "start attempt of done build",
		s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "zuul", Number: 1, Owner: "p", StartedAt: at(time.Second)}, Fence: own(t, s, "p")}),
		store.ErrConflict)

	must(t, "start attempt", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 1, Owner: "p", StartedAt: at(time.Second), Log: "logs/bs1/base/1"}, Fence: own(t, s, "p")}))
	must(t, "finish attempt", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 1, Result: store.Failure, Error: "exit status 2", At: at(2 * time.Second), Fence: writer(t, s)}))
	must(t, "finish build", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "base", Result: store.Failure, Reason: "", At: at(2 * time.Second), Fence: writer(t, s)}))
	wantErr(t, "finish build twice", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "base", Result: store.Failure, Reason: "", At: at(3 * time.Second), Fence: writer(t, s)}), store.ErrConflict)
	got := build(t, s, "bs1", "base")
	diff(t, "finished build", &store.Build{
		BuildsetID: "bs1", Job: "base", State: store.BuildDone, Result: store.Failure, Attempt: 1,
		StartedAt: ptr(at(time.Second)), FinishedAt: ptr(at(2 * time.Second)), Log: "logs/bs1/base/1",
	}, got)
	checkUTC(t, "build times", got.StartedAt, got.FinishedAt)

	wantErr(t, "finish unknown build", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "nope", Result: store.Success, Reason: "", At: t0, Fence: writer(t, s)}), store.ErrNotFound)
	wantErr(t, "finish build of unknown buildset", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "nope", Job: "base", Result: store.Success, Reason: "", At: t0, Fence: writer(t, s)}), store.ErrNotFound)
}

func testAttempts(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "bootstrap", "base")

	got, err := s.Attempts(ctx, "bs1", "base")
	must(t, "attempts before any", err)
	if len(got) != 0 {
		t.Errorf("attempts before any: %v", got)
	}

	must(t, "start #1", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 1, Owner: "proc-1", StartedAt: at(time.Second), Log: "log-1"}, Fence: own(t, s, "proc-1")}))
	diff(t, "build after #1", &store.Build{
		BuildsetID: "bs1", Job: "base", State: store.BuildRunning, Attempt: 1, StartedAt: ptr(at(time.Second)), Log: "log-1",
	}, build(t, s, "bs1", "base"))
	must(t, "finish #1", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 1, Result: store.Lost, Error: "ssh: connection refused", At: at(2 * time.Second), Fence: writer(t, s)}))
	wantErr(t, "finish #1 twice", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 1, Result: store.Success, Error: "", At: at(3 * time.Second), Fence: writer(t, s)}), store.ErrConflict)

	// A retry while the build is RUNNING.
	must(t, "start #2", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 2, Owner: "proc-2", StartedAt: at(3 * time.Second), Log: "log-2"}, Fence: own(t, s, "proc-2")}))
	diff(t, "build after #2", &store.Build{
		BuildsetID: "bs1", Job: "base", State: store.BuildRunning, Attempt: 2,
		StartedAt: ptr(at(time.Second)), // the first attempt's start
		Log:       "log-2",
	}, build(t, s, "bs1", "base"))

	got, err = s.Attempts(ctx, "bs1", "base")
	must(t, "attempts", err)
	want := []*store.Attempt{
		{BuildsetID: "bs1", Job: "base", Number: 1, Owner: "proc-1", StartedAt: at(time.Second), FinishedAt: ptr(at(2 * time.Second)),
			Result: store.Lost, Log: "log-1", Error: "ssh: connection refused"},
		{BuildsetID: "bs1", Job: "base", Number: 2, Owner: "proc-2", StartedAt: at(3 * time.Second), Log: "log-2"},
	}
	diff(t, "Attempts", want, got)
	for _, a := range got {
		checkUTC(t, "attempt times", &a.StartedAt, a.FinishedAt)
	}

	must(t, "finish #2", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 2, Result: store.Success, Error: "", At: at(4 * time.Second), Fence: writer(t, s)}))
	must(t, "finish build", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "base", Result: store.Success, Reason: "", At: at(4 * time.Second), Fence: writer(t, s)}))
	diff(t, "build after success", &store.Build{
		BuildsetID: "bs1", Job: "base", State: store.BuildDone, Result: store.Success, Attempt: 2,
		StartedAt: ptr(at(time.Second)), FinishedAt: ptr(at(4 * time.Second)), Log: "log-2",
	}, build(t, s, "bs1", "base"))
}

func testAttemptConflicts(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base")
	must(t, "start #1", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 1, Owner: "p1", StartedAt: at(time.Second)}, Fence: own(t, s, "p1")}))
	must(t, "start #2", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 2, Owner: "p1", StartedAt: at(2 * time.Second)}, Fence: own(t, s, "p1")}))
	wantErr(t, "start #2 again",
		s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 2, Owner: "p2", StartedAt: at(3 * time.Second)}, Fence: own(t, s, "p2")}),
		store.ErrConflict)
	wantErr(t, "start #1 again",
		s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "base", Number: 1, Owner: "p2", StartedAt: at(3 * time.Second)}, Fence: own(t, s, "p2")}),
		store.ErrConflict)
	wantErr(t, "start attempt of unknown build",
		s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: "nope", Number: 1, Owner: "p", StartedAt: t0}, Fence: own(t, s, "p")}),
		store.ErrNotFound)
	wantErr(t, "start attempt of unknown buildset",
		s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "nope", Job: "base", Number: 1, Owner: "p", StartedAt: t0}, Fence: own(t, s, "p")}),
		store.ErrNotFound)
	wantErr(t, "finish unknown attempt", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 3, Result: store.Success, Error: "", At: t0, Fence: writer(t, s)}), store.ErrNotFound)
	wantErr(t, "finish attempt of unknown build", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "nope", Number: 1, Result: store.Success, Error: "", At: t0, Fence: writer(t, s)}), store.ErrNotFound)
	_, err := s.Attempts(ctx, "bs1", "nope")
	wantErr(t, "attempts of unknown build", err, store.ErrNotFound)
	got, err := s.Attempts(ctx, "bs1", "base")
	must(t, "attempts", err)
	if len(got) != 2 || got[1].Owner != "p1" {
		t.Errorf("a refused attempt changed the attempts: %+v", got)
	}
}

// testFinishAttemptAndBuild: an attempt's end and its build's end happen
// together, or not at all.
func testFinishAttemptAndBuild(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base", "web", "db")
	for _, job := range []string{"base", "web", "db"} {
		must(t, "start "+job, s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs1", Job: job, Number: 1, Owner: "p1", StartedAt: at(time.Second)}, Fence: own(t, s, "p1")}))
	}
	must(t, "finish base", s.FinishAttemptAndBuild(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 1, Result: store.Failure, Error: "exit status 2", At: at(3 * time.Second), Fence: writer(t, s)}, store.FinishBuildParams{BuildsetID: "bs1", Job: "base", Result: store.Failure, Reason: "exit status 2", At: at(3 * time.Second), Fence: writer(t, s)}))
	b := build(t, s, "bs1", "base")
	if b.State != store.BuildDone || b.Result != store.Failure || b.Reason != "exit status 2" || b.FinishedAt == nil || !b.FinishedAt.Equal(at(3*time.Second)) {
		t.Errorf("build after FinishAttemptAndBuild: %+v", b)
	}
	atts, err := s.Attempts(ctx, "bs1", "base")
	must(t, "attempts", err)
	if len(atts) != 1 || atts[0].Result != store.Failure || atts[0].Error != "exit status 2" || atts[0].FinishedAt == nil {
		t.Errorf("attempt after FinishAttemptAndBuild: %+v", atts)
	}
	// An attempt finished already: nothing changes, the build included.
	must(t, "finish web's attempt", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "web", Number: 1, Result: store.Lost, Error: "lost", At: at(2 * time.Second), Fence: writer(t, s)}))
	wantErr(t, "finish a finished attempt", s.FinishAttemptAndBuild(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "web", Number: 1, Result: store.Success, Error: "", At: at(3 * time.Second), Fence: writer(t, s)}, store.FinishBuildParams{BuildsetID: "bs1", Job: "web", Result: store.Success, Reason: "", At: at(3 * time.Second), Fence: writer(t, s)}), store.ErrConflict)
	if b := build(t, s, "bs1", "web"); b.State != store.BuildRunning {
		t.Errorf("a refused FinishAttemptAndBuild finished the build: %+v", b)
	}
	// A build finished already: the attempt is not finished either.
	must(t, "cancel db", s.FinishBuild(ctx, store.FinishBuildParams{BuildsetID: "bs1", Job: "db", Result: store.Canceled, Reason: "cancelled", At: at(2 * time.Second), Fence: writer(t, s)}))
	wantErr(t, "finish the attempt of a finished build", s.FinishAttemptAndBuild(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "db", Number: 1, Result: store.Success, Error: "", At: at(3 * time.Second), Fence: writer(t, s)}, store.FinishBuildParams{BuildsetID: "bs1", Job: "db", Result: store.Success, Reason: "", At: at(3 * time.Second), Fence: writer(t, s)}), store.ErrConflict)
	running, err := s.RunningAttempts(ctx, "bs1")
	must(t, "running attempts", err)
	if len(running) != 1 || running[0].Job != "db" {
		t.Errorf("running attempts after a refused FinishAttemptAndBuild: %+v (the attempt of db must be unfinished: all or nothing)", running)
	}
	wantErr(t, "unknown attempt", s.FinishAttemptAndBuild(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "base", Number: 2, Result: store.Success, Error: "", At: t0, Fence: writer(t, s)}, store.FinishBuildParams{BuildsetID: "bs1", Job: "base", Result: store.Success, Reason: "", At: t0, Fence: writer(t, s)}), store.ErrNotFound)
}

// req makes a request for holder "<buildset>/<job>" of owner "proc".
func req(buildset, job string, sems map[string]int) semaphore.Request {
	return semaphore.Request{
		Holder:     buildset + "/" + job,
		Buildset:   buildset,
		Owner:      "proc",
		Semaphores: sems,
		Since:      t0,
		Now:        t0,
	}
}

// acquire decides a through the store's UpdateSemaphores, as every process
// does (semaphore.TryAcquire), and fails unless the answer is want: the
// cases below prove the store applies the rule's changes faithfully.
func acquire(t *testing.T, s store.Store, a semaphore.Request, want bool) {
	t.Helper()
	if a.Fence == (store.Fence{}) {
		a.Fence = own(t, s, a.Owner)
	}
	got, err := semaphore.TryAcquire(t.Context(), s, a)
	must(t, "acquire "+a.Holder, err)
	if got != want {
		t.Fatalf("acquire %s %v = %v, want %v", a.Holder, a.Semaphores, got, want)
	}
}

// release releases holder as the owner of its rows.
func release(t *testing.T, s store.Store, holder string) {
	t.Helper()
	owner := "writer"
	hs, err := s.Holders(t.Context())
	must(t, "holders", err)
	ws, err := s.Waiters(t.Context())
	must(t, "waiters", err)
	for _, h := range hs {
		if h.Holder == holder {
			owner = h.Owner
		}
	}
	for _, w := range ws {
		if w.Holder == holder {
			owner = w.Owner
		}
	}
	must(t, "release "+holder, s.ReleaseSemaphores(t.Context(), holder, own(t, s, owner)))
}

// holding returns "semaphore:holder" for every holder row, sorted.
func holding(t *testing.T, s store.Store) []string {
	t.Helper()
	hs, err := s.Holders(t.Context())
	must(t, "holders", err)
	var out []string
	for _, h := range hs {
		out = append(out, h.Semaphore+":"+h.Holder)
	}
	slices.Sort(out)
	return out
}

// waiting returns "semaphore:holder" for every waiter row, sorted.
func waiting(t *testing.T, s store.Store) []string {
	t.Helper()
	ws, err := s.Waiters(t.Context())
	must(t, "waiters", err)
	var out []string
	for _, w := range ws {
		out = append(out, w.Semaphore+":"+w.Holder)
	}
	slices.Sort(out)
	return out
}

func testSemaphoreAllOrNothing(t *testing.T, s store.Store) {
	acquire(t, s, req("bs1", "a", map[string]int{"A": 1}), true)
	acquire(t, s, req("bs2", "ab", map[string]int{"A": 1, "B": 1}), false)
	diff(t, "holders while A is full", []string{"A:bs1/a"}, holding(t, s))
	// B had room, yet nothing of the request is held.
	acquire(t, s, req("bs3", "b", map[string]int{"B": 2}), true)
	diff(t, "holders", []string{"A:bs1/a", "B:bs3/b"}, holding(t, s))

	release(t, s, "bs1/a")
	acquire(t, s, req("bs2", "ab", map[string]int{"A": 1, "B": 2}), true)
	diff(t, "holders after grant", []string{"A:bs2/ab", "B:bs2/ab", "B:bs3/b"}, holding(t, s))
	diff(t, "waiters after grant", []string(nil), waiting(t, s), cmpopts.EquateEmpty())

	hs, err := s.Holders(t.Context())
	must(t, "holders", err)
	for _, h := range hs {
		if h.Holder == "bs2/ab" {
			diff(t, "holder row", store.Holder{Semaphore: h.Semaphore, Holder: "bs2/ab", Buildset: "bs2", Owner: "proc", AcquiredAt: t0}, h)
			checkUTC(t, "AcquiredAt", &h.AcquiredAt)
		}
	}
}

func testSemaphoreMax(t *testing.T, s store.Store) {
	for i := range 3 {
		acquire(t, s, req(fmt.Sprint("bs", i), "j", map[string]int{"S": 3}), true)
	}
	acquire(t, s, req("bs3", "j", map[string]int{"S": 3}), false)
	if got := holding(t, s); len(got) != 3 {
		t.Errorf("holders = %v, want 3", got)
	}
	ws, err := s.Waiters(t.Context())
	must(t, "waiters", err)
	diff(t, "waiters", []store.Waiter{{Semaphore: "S", Holder: "bs3/j", Buildset: "bs3", Owner: "proc", Precedence: 0, Since: t0}}, ws)
	for _, w := range ws {
		checkUTC(t, "Since", &w.Since)
	}
}

func testSemaphoreReacquire(t *testing.T, s store.Store) {
	acquire(t, s, req("bs1", "j", map[string]int{"S": 1}), true)
	acquire(t, s, req("bs1", "j", map[string]int{"S": 1}), true)
	diff(t, "holders", []string{"S:bs1/j"}, holding(t, s))
	diff(t, "waiters", []string(nil), waiting(t, s), cmpopts.EquateEmpty())
}

func testSemaphoreRelease(t *testing.T, s store.Store) {
	acquire(t, s, req("bs1", "j", map[string]int{"S": 1}), true)
	acquire(t, s, req("bs2", "j", map[string]int{"S": 1}), false)
	release(t, s, "bs1/j")
	release(t, s, "bs1/j") // not held: no error
	release(t, s, "never/held")
	acquire(t, s, req("bs2", "j", map[string]int{"S": 1}), true)
	diff(t, "holders", []string{"S:bs2/j"}, holding(t, s))
	// Releasing a waiter drops its wait.
	acquire(t, s, req("bs3", "j", map[string]int{"S": 1}), false)
	release(t, s, "bs3/j")
	diff(t, "waiters", []string(nil), waiting(t, s), cmpopts.EquateEmpty())
}

func testSemaphoreReleaseBuildset(t *testing.T, s store.Store) {
	ctx := t.Context()
	acquire(t, s, req("bs1", "a", map[string]int{"A": 2}), true)
	acquire(t, s, req("bs2", "a", map[string]int{"A": 2}), true)
	acquire(t, s, req("bs2", "b", map[string]int{"B": 1}), true)
	acquire(t, s, req("bs1", "b", map[string]int{"B": 1}), false)
	acquire(t, s, req("bs3", "b", map[string]int{"B": 1}), false)
	// The pipeline semaphore of bs1, held by the buildset itself.
	acquire(t, s, semaphore.Request{Holder: "bs1", Buildset: "bs1", Owner: "proc", Semaphores: map[string]int{"P": 1}, Since: t0, Now: t0}, true)

	// Another owner's release takes nothing of proc's.
	must(t, "release buildset as another", s.ReleaseBuildset(ctx, "bs1", own(t, s, "other")))
	must(t, "release holder as another", s.ReleaseSemaphores(ctx, "bs2/a", own(t, s, "other")))
	diff(t, "holders after others' releases", []string{"A:bs1/a", "A:bs2/a", "B:bs2/b", "P:bs1"}, holding(t, s))
	must(t, "release buildset", s.ReleaseBuildset(ctx, "bs1", own(t, s, "proc")))
	diff(t, "holders", []string{"A:bs2/a", "B:bs2/b"}, holding(t, s))
	diff(t, "waiters", []string{"B:bs3/b"}, waiting(t, s))
	must(t, "release unknown buildset", s.ReleaseBuildset(ctx, "nope", own(t, s, "proc")))
}

func testFairnessPrecedence(t *testing.T, s store.Store) {
	sem := map[string]int{"S": 1}
	acquire(t, s, req("bs0", "j", sem), true)
	low := req("hourly", "j", sem)
	low.Precedence, low.Since, low.Now = 0, at(1*time.Second), at(1*time.Second)
	high := req("deploy", "j", sem)
	high.Precedence, high.Since, high.Now = 2, at(2*time.Second), at(2*time.Second)
	acquire(t, s, low, false)
	acquire(t, s, high, false)

	release(t, s, "bs0/j")
	// Room, but a higher precedence waits: the older low one must not take it.
	low.Now = at(3 * time.Second)
	acquire(t, s, low, false)
	high.Now = at(3 * time.Second)
	acquire(t, s, high, true)
	release(t, s, "deploy/j")
	low.Now = at(4 * time.Second)
	acquire(t, s, low, true)
}

// testFairnessAging: nothing waits forever. A low waiter that has waited
// one PrecedenceAging still yields to a high newcomer; after two it ranks
// with it, and goes first, being older.
func testFairnessAging(t *testing.T, s store.Store) {
	sem := map[string]int{"S": 1}
	step := semaphore.PrecedenceAging
	acquire(t, s, req("bs0", "j", sem), true)
	low := req("hourly", "j", sem)
	low.Precedence, low.Since, low.Now = 0, at(0), at(0)
	acquire(t, s, low, false)

	// One step later: high still goes first.
	high := req("deploy", "j", sem)
	high.Precedence, high.Since, high.Now = 2, at(step+time.Second), at(step+time.Second)
	acquire(t, s, high, false)
	release(t, s, "bs0/j")
	low.Now = at(step + 2*time.Second)
	acquire(t, s, low, false)
	high.Now = at(step + 2*time.Second)
	acquire(t, s, high, true)
	release(t, s, "deploy/j")
	low.Now = at(step + 3*time.Second)
	acquire(t, s, low, true)
	release(t, s, "hourly/j")

	// A low waiter of two steps ranks with a fresh high one: the older
	// goes first.
	acquire(t, s, req("bs1", "j", sem), true)
	low2 := req("hourly2", "j", sem)
	low2.Precedence, low2.Since, low2.Now = 0, at(10*step), at(10*step)
	acquire(t, s, low2, false)
	high2 := req("deploy2", "j", sem)
	high2.Precedence, high2.Since, high2.Now = 2, at(12*step+time.Second), at(12*step+time.Second)
	acquire(t, s, high2, false)
	release(t, s, "bs1/j")
	high2.Now = at(12*step + 2*time.Second)
	acquire(t, s, high2, false)
	low2.Now = at(12*step + 2*time.Second)
	acquire(t, s, low2, true)
}

func testFairnessSince(t *testing.T, s store.Store) {
	sem := map[string]int{"S": 1}
	acquire(t, s, req("bs0", "j", sem), true)
	old := req("old", "j", sem)
	old.Precedence, old.Since = 1, at(1*time.Second)
	young := req("young", "j", sem)
	young.Precedence, young.Since = 1, at(2*time.Second)
	acquire(t, s, young, false) // asking first does not rank a waiter
	acquire(t, s, old, false)

	release(t, s, "bs0/j")
	acquire(t, s, young, false)
	acquire(t, s, old, true)
	release(t, s, "old/j")
	acquire(t, s, young, true)
}

func testFairnessWaiterReleased(t *testing.T, s store.Store) {
	sem := map[string]int{"S": 1}
	acquire(t, s, req("bs0", "j", sem), true)
	ahead := req("ahead", "j", sem)
	ahead.Precedence = 2
	acquire(t, s, ahead, false)
	release(t, s, "bs0/j")
	later := req("later", "j", sem)
	acquire(t, s, later, false)
	// The waiter ahead gives up (its buildset was cancelled): no longer blocks.
	must(t, "release buildset", s.ReleaseBuildset(t.Context(), "ahead", own(t, s, "proc")))
	acquire(t, s, later, true)
}

func testFairnessWaiterKeepsRank(t *testing.T, s store.Store) {
	sem := map[string]int{"S": 1}
	acquire(t, s, req("bs0", "j", sem), true)
	first := req("first", "j", sem)
	first.Since = at(1 * time.Second)
	acquire(t, s, first, false)
	second := req("second", "j", sem)
	second.Since = at(2 * time.Second)
	acquire(t, s, second, false)
	// first asks again with a newer Since: it keeps its place.
	first.Since, first.Now = at(3*time.Second), at(3*time.Second)
	acquire(t, s, first, false)
	release(t, s, "bs0/j")
	second.Now = at(4 * time.Second)
	acquire(t, s, second, false)
	first.Now = at(4 * time.Second)
	acquire(t, s, first, true)
}

func testFairnessOtherSemaphore(t *testing.T, s store.Store) {
	acquire(t, s, req("bs0", "j", map[string]int{"T": 1}), true)
	waiter := req("waiter", "j", map[string]int{"T": 1})
	waiter.Precedence = 5
	acquire(t, s, waiter, false)
	// A lower-precedence request for another semaphore is not blocked.
	acquire(t, s, req("other", "j", map[string]int{"S": 1}), true)
	diff(t, "waiters", []string{"T:waiter/j"}, waiting(t, s))
}

func testFairnessReservesSlots(t *testing.T, s store.Store) {
	acquire(t, s, req("bs0", "a", map[string]int{"A": 1}), true)
	// first waits for A (full) and B (free, max 2): it keeps a slot of B.
	first := req("first", "j", map[string]int{"A": 1, "B": 2})
	first.Precedence = 1
	acquire(t, s, first, false)
	acquire(t, s, req("b1", "j", map[string]int{"B": 2}), true)
	acquire(t, s, req("b2", "j", map[string]int{"B": 2}), false) // the last slot is first's
	diff(t, "holders", []string{"A:bs0/a", "B:b1/j"}, holding(t, s))

	release(t, s, "bs0/a")
	acquire(t, s, first, true)
	diff(t, "holders", []string{"A:first/j", "B:b1/j", "B:first/j"}, holding(t, s))
	diff(t, "waiters", []string{"B:b2/j"}, waiting(t, s))
}

// owned makes a request for holder h of owner o.
func owned(h, o string, sems map[string]int, now time.Time) semaphore.Request {
	return semaphore.Request{Holder: h, Buildset: h, Owner: o, Semaphores: sems, Since: now, Now: now}
}

func testJobDurations(t *testing.T, s store.Store) {
	ctx := t.Context()
	type run struct {
		job    string
		dur    time.Duration
		result store.Result // "" leaves the attempt running
	}
	// In finish order. base: the last five successes are 90, 30, 40, 50, 5s.
	runs := []run{
		{"base", 10 * time.Second, store.Success},
		{"base", 20 * time.Second, store.Success},
		{"base", 90 * time.Second, store.Success},
		{"base", 1000 * time.Second, store.Failure},
		{"base", 30 * time.Second, store.Success},
		{"two", 10 * time.Second, store.Success},
		{"base", 40 * time.Second, store.Success},
		{"failing", 7 * time.Second, store.Failure},
		{"base", 50 * time.Second, store.Success},
		{"base", 2000 * time.Second, store.TimedOut},
		{"two", 20 * time.Second, store.Success},
		{"base", 5 * time.Second, store.Success},
		{"base", 3000 * time.Second, store.Lost},
		{"running", 0, ""},
	}
	for i, r := range runs {
		id := fmt.Sprintf("bs%02d", i)
		pipeline := []string{"deploy", "hourly"}[i%2]
		create(t, s, &store.Buildset{ID: id, Pipeline: pipeline, Commit: "a", CreatedAt: t0}, r.job)
		// Each run finishes an hour after the previous one, whatever its
		// length, so finish order is the order above.
		end := at(time.Duration(i+1) * time.Hour)
		must(t, "start "+id, s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: id, Job: r.job, Number: 1, Owner: "p", StartedAt: end.Add(-r.dur)}, Fence: own(t, s, "p")}))
		if r.result != "" {
			must(t, "finish "+id, s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: id, Job: r.job, Number: 1, Result: r.result, Error: "", At: end, Fence: writer(t, s)}))
		}
	}
	got, err := s.JobDurations(ctx, []string{"base", "two", "failing", "running", "never"})
	must(t, "job durations", err)
	diff(t, "JobDurations", map[string]time.Duration{"base": 40 * time.Second, "two": 15 * time.Second}, got)

	got, err = s.JobDurations(ctx, nil)
	must(t, "job durations of nothing", err)
	if len(got) != 0 {
		t.Errorf("job durations of nothing: %v", got)
	}
}

// testSemaphoreConcurrency has goroutines take turns on a max-2 semaphore
// through one store.
func testSemaphoreConcurrency(t *testing.T, s store.Store) {
	Contend(t, []store.Store{s}, 2)
}

// Contend has 8 goroutines, spread over stores (which may be several
// handles on one database, as separate processes would have), each take a
// semaphore of the given max and release it, several times over, and
// checks through an atomic counter and Holders that no more than max ever
// hold it at once, and that every request is eventually granted.
//
// A refused goroutine does not spin on the store: it waits until another
// releases, as a scheduler waits for an event. Spinning would measure
// SQLite's busy handler, which favours the process already writing.
func Contend(t *testing.T, stores []store.Store, limit int) {
	t.Helper()
	const (
		workers = 8
		rounds  = 8
	)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var (
		inside atomic.Int32
		since  atomic.Int64 // a fresh Since per request keeps the queue FIFO
		rel    releases
		wg     sync.WaitGroup
	)
	rel.cond.L = &rel.mu
	stop := context.AfterFunc(ctx, rel.stop)
	defer stop()
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		cancel()
	}
	for w := range workers {
		s := stores[w%len(stores)]
		fence := own(t, s, fmt.Sprintf("proc%d", w%len(stores)))
		wg.Go(func() {
			holder := fmt.Sprintf("w%d", w)
			for range rounds {
				a := semaphore.Request{
					Holder:     holder,
					Buildset:   holder,
					Owner:      fence.Owner,
					Fence:      fence,
					Semaphores: map[string]int{"S": limit},
					Since:      t0.Add(time.Duration(since.Add(1)) * time.Microsecond),
					Now:        t0,
				}
				for {
					gen := rel.current()
					ok, err := semaphore.TryAcquire(ctx, s, a)
					if err != nil {
						if ctx.Err() == nil {
							fail("acquire %s: %v", holder, err)
						}
						return
					}
					if ok {
						break
					}
					if !rel.wait(gen) {
						return
					}
				}
				if n := inside.Add(1); n > int32(limit) {
					fail("%d holders inside, max %d", n, limit)
				}
				hs, err := s.Holders(ctx)
				if err != nil {
					if ctx.Err() == nil {
						fail("holders: %v", err)
					}
					return
				}
				if len(hs) > limit {
					fail("%d holder rows, max %d: %v", len(hs), limit, hs)
				}
				inside.Add(-1)
				err = s.ReleaseSemaphores(ctx, holder, fence)
				rel.signal()
				if err != nil {
					if ctx.Err() == nil {
						fail("release %s: %v", holder, err)
					}
					return
				}
			}
		})
	}
	wg.Wait()
	if !t.Failed() {
		diff(t, "holders at the end", []string(nil), holding(t, stores[0]), cmpopts.EquateEmpty())
		diff(t, "waiters at the end", []string(nil), waiting(t, stores[0]), cmpopts.EquateEmpty())
	}
}

// releases wakes refused workers when another releases. A worker reads
// the generation before it asks, so a release that happens while it asks
// is not missed.
type releases struct {
	mu      sync.Mutex
	cond    sync.Cond
	gen     uint64
	stopped bool
}

func (r *releases) current() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gen
}

func (r *releases) signal() {
	r.mu.Lock()
	r.gen++
	r.mu.Unlock()
	r.cond.Broadcast()
}

func (r *releases) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.cond.Broadcast()
}

// wait waits for a release after gen; false if the run was stopped.
func (r *releases) wait(gen uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.gen == gen && !r.stopped {
		r.cond.Wait()
	}
	return !r.stopped
}
