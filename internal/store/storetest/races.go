package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// The cases below race several goroutines on one store, as several
// processes race on one database: a store whose transitions are not
// compare-and-swap under concurrency fails them (most of the time; none
// of them fails a correct store).

// racers is how many goroutines race in each case.
const racers = 8

// testEndBuildsetOnce: of concurrent ends of one buildset, exactly one
// ends it, and what it wrote is what stays.
func testEndBuildsetOnce(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "running", "waiting")
	must(t, "start", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "p"), At: at(time.Second)}))
	must(t, "start attempt", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{
		BuildsetID: "bs1", Job: "running", Number: 1, Owner: "p", StartedAt: at(time.Second)}, Fence: own(t, s, "p")}))
	var (
		wg     sync.WaitGroup
		start  = make(chan struct{})
		ended  [racers]bool
		errs   [racers]error
		result = func(i int) store.Result { return []store.Result{store.Canceled, store.Error}[i%2] }
	)
	for i := range racers {
		wg.Go(func() {
			<-start
			ended[i], errs[i] = s.EndBuildset(ctx, store.EndBuildsetParams{
				ID: "bs1", Result: result(i), Error: fmt.Sprint("ender ", i), BuildResult: result(i),
				Reason: fmt.Sprint("ender ", i), At: at(time.Duration(i+2) * time.Second),
			})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i := range racers {
		must(t, fmt.Sprint("end ", i), errs[i])
		if ended[i] {
			if winner >= 0 {
				t.Errorf("enders %d and %d both ended the buildset", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no ender ended the buildset")
	}
	bs := get(t, s, "bs1")
	if bs.State != store.BuildsetDone || bs.Result != result(winner) || bs.Error != fmt.Sprint("ender ", winner) ||
		bs.FinishedAt == nil || !bs.FinishedAt.Equal(at(time.Duration(winner+2)*time.Second)) {
		t.Errorf("ender %d ended it, but the buildset is %+v", winner, bs)
	}
	for _, job := range []string{"running", "waiting"} {
		if b := build(t, s, "bs1", job); b.Result != result(winner) || b.Reason != fmt.Sprint("ender ", winner) {
			t.Errorf("ender %d ended it, but build %s is %+v", winner, job, b)
		}
	}
}

// testStartAttemptOnce: of concurrent starts of one attempt, exactly one
// starts it; the others are conflicts and change nothing.
func testStartAttemptOnce(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base")
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  [racers]error
	)
	for i := range racers {
		fence := own(t, s, fmt.Sprint("p", i))
		wg.Go(func() {
			<-start
			errs[i] = s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{
				BuildsetID: "bs1", Job: "base", Number: 1, Owner: fmt.Sprint("p", i),
				StartedAt: at(time.Duration(i+1) * time.Second), Log: fmt.Sprint("log-", i)}, Fence: fence})
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("starters %d and %d both started attempt 1", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("starter %d: got error %v, want %v", i, err, store.ErrConflict)
		}
	}
	if winner < 0 {
		t.Fatal("no starter started attempt 1")
	}
	atts, err := s.Attempts(ctx, "bs1", "base")
	must(t, "attempts", err)
	diff(t, "attempts", []*store.Attempt{{BuildsetID: "bs1", Job: "base", Number: 1, Owner: fmt.Sprint("p", winner),
		StartedAt: at(time.Duration(winner+1) * time.Second), Log: fmt.Sprint("log-", winner)}}, atts)
	diff(t, "build", &store.Build{BuildsetID: "bs1", Job: "base", State: store.BuildRunning, Attempt: 1,
		StartedAt: ptr(at(time.Duration(winner+1) * time.Second)), Log: fmt.Sprint("log-", winner)}, build(t, s, "bs1", "base"))
}

// testSeqVisibleInOrder: while writers create buildsets at once, a reader
// listing the active ones never finds a new one with a Seq below one it
// saw before. A store that hands out Seq before it commits, without
// ordering the commits, lets a reader take the newest buildset first.
func testSeqVisibleInOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	const writers, each = 4, 10
	var (
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
					Buildset: &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: t0}, Jobs: []string{"base"},
				}); err != nil {
					t.Errorf("create %s: %v", id, err)
					return
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	seen := map[string]int64{}
	var newest int64
	var newestID string
	for last := false; !last; {
		select {
		case <-done:
			last = true // one more read after every create returned
		default:
		}
		active, err := s.ActiveBuildsets(ctx)
		if err != nil {
			<-done
			t.Fatalf("active buildsets: %v", err)
		}
		top, topID := newest, newestID
		for _, bs := range active {
			if _, ok := seen[bs.ID]; ok {
				continue
			}
			seen[bs.ID] = bs.Seq
			if bs.Seq < newest {
				t.Errorf("buildset %s (Seq %d) became visible after %s (Seq %d)", bs.ID, bs.Seq, newestID, newest)
			}
			if bs.Seq > top {
				top, topID = bs.Seq, bs.ID
			}
		}
		newest, newestID = top, topID
	}
	if len(seen) != writers*each {
		t.Errorf("saw %d buildsets, want %d", len(seen), writers*each)
	}
}
