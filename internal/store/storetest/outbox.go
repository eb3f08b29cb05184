package storetest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/store"
)

// newDelivery is a delivery to record at d after t0.
func newDelivery(id, reporter, event string, d time.Duration) store.NewReportDelivery {
	return store.NewReportDelivery{ID: id, Reporter: reporter, Event: event, Target: []byte(`{"type":"webhook"}`), At: at(d)}
}

// deliveryIDs returns the deliveries' ids, and their states.
func deliveryIDs(ds []*store.ReportDelivery) (ids []string, states []store.DeliveryState) {
	for _, d := range ds {
		ids = append(ids, d.ID)
		states = append(states, d.State)
	}
	return ids, states
}

func deliveriesOf(t *testing.T, s store.Store, buildset string) []*store.ReportDelivery {
	t.Helper()
	ds, err := s.ReportDeliveries(t.Context(), buildset)
	must(t, "report deliveries of "+buildset, err)
	return ds
}

// testOutboxWithStateChanges: deliveries are recorded with the change that
// causes them (a buildset made DONE, its start, its end) or not at all: a
// change refused records none, and a delivery that cannot be recorded
// undoes the change.
func testOutboxWithStateChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Made DONE with a config error: its failure is reported.
	must(t, "create config error", s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset:    &store.Buildset{ID: "bad", Pipeline: "deploy", Commit: "a", CreatedAt: t0, FinishedAt: ptr(t0)},
		ConfigError: "base needs letsencrypt", Reports: []store.NewReportDelivery{newDelivery("bad-1", "gh", "failure", 0)},
	}))
	got := deliveriesOf(t, s, "bad")
	if len(got) != 1 {
		t.Fatalf("deliveries of a buildset made with a config error: %d, want 1", len(got))
	}
	want := &store.ReportDelivery{
		ID: "bad-1", Seq: got[0].Seq, Buildset: "bad", Reporter: "gh", Event: "failure", Target: []byte(`{"type":"webhook"}`),
		State: store.DeliveryPending, CreatedAt: t0.UTC(), NextAt: t0.UTC(),
	}
	diff(t, "delivery as recorded", want, got[0])
	checkUTC(t, "CreatedAt, NextAt", &got[0].CreatedAt, &got[0].NextAt)

	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base")
	if ds := deliveriesOf(t, s, "bs1"); len(ds) != 0 {
		t.Errorf("a buildset made QUEUED has deliveries: %v", ds)
	}
	start := store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "p"), At: at(time.Second), Reports: []store.NewReportDelivery{
		newDelivery("bs1-start-gh", "gh", "start", time.Second), newDelivery("bs1-start-hook", "hook", "start", time.Second),
	}}
	must(t, "start with reports", s.StartBuildset(ctx, start))
	// Started again: refused, and nothing more is recorded.
	start.Reports = []store.NewReportDelivery{newDelivery("bs1-start-again", "gh", "start", 2*time.Second)}
	wantErr(t, "start a running buildset", s.StartBuildset(ctx, start), store.ErrConflict)
	ids, _ := deliveryIDs(deliveriesOf(t, s, "bs1"))
	diff(t, "deliveries after a start and a refused one", []string{"bs1-start-gh", "bs1-start-hook"}, ids)

	// An end whose delivery cannot be recorded (its id exists) is undone
	// whole: the buildset, its builds and the other deliveries.
	_, err := s.EndBuildset(ctx, store.EndBuildsetParams{
		ID: "bs1", Result: store.Failure, BuildResult: store.Canceled, Reason: "test", At: at(time.Minute),
		Reports: []store.NewReportDelivery{newDelivery("bs1-end-gh", "gh", "failure", time.Minute), newDelivery("bad-1", "hook", "failure", time.Minute)},
	})
	if err == nil {
		t.Fatal("an end with a delivery id recorded already succeeded")
	}
	if bs := get(t, s, "bs1"); bs.State != store.BuildsetRunning || bs.Result != "" {
		t.Errorf("an end whose delivery was refused left the buildset %s %s, want RUNNING", bs.State, bs.Result)
	}
	if b := build(t, s, "bs1", "base"); b.State != store.BuildWaiting {
		t.Errorf("an end whose delivery was refused left its build %s, want WAITING", b.State)
	}
	ids, _ = deliveryIDs(deliveriesOf(t, s, "bs1"))
	diff(t, "deliveries after a refused end", []string{"bs1-start-gh", "bs1-start-hook"}, ids)

	end := store.EndBuildsetParams{
		ID: "bs1", Result: store.Failure, BuildResult: store.Canceled, Reason: "test", At: at(time.Minute),
		Reports: []store.NewReportDelivery{newDelivery("bs1-end-gh", "gh", "failure", time.Minute)},
	}
	ended, err := s.EndBuildset(ctx, end)
	must(t, "end", err)
	if !ended {
		t.Fatal("end: not ended")
	}
	// Ended again: nothing changes, nothing is recorded.
	end.Reports = []store.NewReportDelivery{newDelivery("bs1-end-again", "gh", "failure", 2*time.Minute)}
	ended, err = s.EndBuildset(ctx, end)
	must(t, "end again", err)
	if ended {
		t.Error("a second end ended the buildset")
	}
	ids, _ = deliveryIDs(deliveriesOf(t, s, "bs1"))
	diff(t, "deliveries after the end", []string{"bs1-start-gh", "bs1-start-hook", "bs1-end-gh"}, ids)

	_, err = s.ReportDeliveries(ctx, "nope")
	wantErr(t, "deliveries of an unknown buildset", err, store.ErrNotFound)
	st, err := s.ReportDeliveryStats(ctx)
	must(t, "stats", err)
	if st.Pending != 4 || st.OldestPending == nil || !st.OldestPending.Equal(t0) {
		t.Errorf("stats = %d pending, oldest %v; want 4, %v", st.Pending, st.OldestPending, t0)
	}
}

// testOutboxClaims: claims take due deliveries oldest first, one at a time
// per buildset and reporter, count a try each, and hold them until their
// claim ends; only the claim's worker and try may finish one; a delivery
// pending again waits until its time.
func testOutboxClaims(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "a", Pipeline: "deploy", Commit: "a", CreatedAt: t0})
	create(t, s, &store.Buildset{ID: "b", Pipeline: "deploy", Commit: "b", CreatedAt: t0})
	must(t, "start a", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "a", Fence: own(t, s, "p"), At: at(time.Second), Reports: []store.NewReportDelivery{
		newDelivery("a-start-gh", "gh", "start", time.Second), newDelivery("a-start-hook", "hook", "start", time.Second),
	}}))
	must(t, "start b", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "b", Fence: own(t, s, "p"), At: at(2 * time.Second), Reports: []store.NewReportDelivery{
		newDelivery("b-start-gh", "gh", "start", 2*time.Second),
	}}))
	ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: "a", Result: store.Success, BuildResult: store.Canceled, At: at(3 * time.Second),
		Reports: []store.NewReportDelivery{newDelivery("a-end-gh", "gh", "success", 3*time.Second)}})
	must(t, "end a", err)
	if !ended {
		t.Fatal("end a: not ended")
	}
	claim := func(worker string, now time.Duration, limit int) []*store.ReportDelivery {
		t.Helper()
		ds, err := s.ClaimReportDeliveries(ctx, store.ClaimReportDeliveriesParams{Worker: worker, Now: at(now), Until: at(now + time.Minute), Limit: limit})
		must(t, "claim by "+worker, err)
		return ds
	}
	ids := func(ds []*store.ReportDelivery) []string {
		out, _ := deliveryIDs(ds)
		return out
	}
	// Not due before it was recorded.
	diff(t, "claimed before any is due", []string(nil), ids(claim("w1", 0, 10)), cmpopts.EquateEmpty())
	// a-end-gh waits behind a-start-gh (same buildset and reporter).
	got := claim("w1", 10*time.Second, 2)
	diff(t, "first claim, limit 2", []string{"a-start-gh", "a-start-hook"}, ids(got))
	if got[0].Tries != 1 || got[0].ClaimedBy != "w1" || got[0].ClaimedUntil == nil || !got[0].ClaimedUntil.Equal(at(70*time.Second)) ||
		got[0].LastTryAt == nil || !got[0].LastTryAt.Equal(at(10*time.Second)) {
		t.Errorf("claimed delivery: %+v", got[0])
	}
	diff(t, "second claim", []string{"b-start-gh"}, ids(claim("w2", 10*time.Second, 10)))
	// Everything left is claimed or waits behind a claimed one.
	diff(t, "third claim", []string(nil), ids(claim("w2", 11*time.Second, 10)), cmpopts.EquateEmpty())

	finish := func(p store.FinishReportDeliveryParams) error {
		return s.FinishReportDelivery(ctx, p)
	}
	wantErr(t, "finish by another worker", finish(store.FinishReportDeliveryParams{ID: "a-start-gh", Worker: "w2", Try: 1, State: store.DeliveryDelivered, At: at(12 * time.Second)}), store.ErrConflict)
	wantErr(t, "finish another try", finish(store.FinishReportDeliveryParams{ID: "a-start-gh", Worker: "w1", Try: 2, State: store.DeliveryDelivered, At: at(12 * time.Second)}), store.ErrConflict)
	wantErr(t, "finish unknown", finish(store.FinishReportDeliveryParams{ID: "nope", Worker: "w1", Try: 1, State: store.DeliveryDelivered, At: at(12 * time.Second)}), store.ErrNotFound)
	must(t, "delivered", finish(store.FinishReportDeliveryParams{ID: "a-start-gh", Worker: "w1", Try: 1, State: store.DeliveryDelivered, At: at(12 * time.Second)}))
	wantErr(t, "finish twice", finish(store.FinishReportDeliveryParams{ID: "a-start-gh", Worker: "w1", Try: 1, State: store.DeliveryDelivered, At: at(13 * time.Second)}), store.ErrConflict)
	// a-start-hook fails; tried again from 40s.
	must(t, "retry later", finish(store.FinishReportDeliveryParams{ID: "a-start-hook", Worker: "w1", Try: 1, State: store.DeliveryPending,
		Error: "503 Service Unavailable", NextAt: at(40 * time.Second), At: at(12 * time.Second)}))

	// Now a-end-gh is at the head of its line.
	diff(t, "claim after the start was delivered", []string{"a-end-gh"}, ids(claim("w1", 13*time.Second, 10)))
	diff(t, "claim before the retry is due", []string(nil), ids(claim("w1", 39*time.Second, 10)), cmpopts.EquateEmpty())
	got = claim("w1", 40*time.Second, 10)
	diff(t, "claim when the retry is due", []string{"a-start-hook"}, ids(got))
	if got[0].Tries != 2 || got[0].LastError != "503 Service Unavailable" {
		t.Errorf("retried delivery: tries %d, last error %q", got[0].Tries, got[0].LastError)
	}
	// w2 died holding b-start-gh: its claim comes back once it has ended
	// (at 70s), not before.
	diff(t, "claim while w2's claim runs", []string(nil), ids(claim("w3", 70*time.Second, 10)), cmpopts.EquateEmpty())
	got = claim("w3", 70*time.Second+time.Microsecond, 10)
	diff(t, "claim after w2's claim ran out", []string{"b-start-gh"}, ids(got))
	if got[0].Tries != 2 || got[0].ClaimedBy != "w3" {
		t.Errorf("taken over: tries %d, claimed by %s", got[0].Tries, got[0].ClaimedBy)
	}
	wantErr(t, "the dead claim's finish", finish(store.FinishReportDeliveryParams{ID: "b-start-gh", Worker: "w2", Try: 1, State: store.DeliveryDelivered, At: at(71 * time.Second)}), store.ErrConflict)
	must(t, "given up", finish(store.FinishReportDeliveryParams{ID: "b-start-gh", Worker: "w3", Try: 2, State: store.DeliveryFailed, Error: "gave up", At: at(72 * time.Second)}))

	all := deliveriesOf(t, s, "b")
	if d := all[0]; d.State != store.DeliveryFailed || d.DoneAt == nil || !d.DoneAt.Equal(at(72*time.Second)) || d.LastError != "gave up" ||
		d.ClaimedBy != "" || d.ClaimedUntil != nil {
		t.Errorf("failed delivery: %+v", d)
	}
	st, err := s.ReportDeliveryStats(ctx)
	must(t, "stats", err)
	if st.Pending != 2 || st.OldestPending == nil || !st.OldestPending.Equal(at(time.Second)) {
		t.Errorf("stats = %d pending, oldest %v; want 2, %v", st.Pending, st.OldestPending, at(time.Second))
	}
}

// testOutboxClaimOnce: workers claiming at once each get different
// deliveries, and every delivery is claimed.
func testOutboxClaimOnce(t *testing.T, s store.Store) {
	ContendClaims(t, []store.Store{s})
}

// ContendClaims runs several workers on each of stores (one database
// opened several times, as several processes would) that claim and
// deliver 60 deliveries of 20 buildsets, and checks that no delivery is
// claimed by two at once, each is delivered once, and each buildset's
// deliveries to one reporter are delivered in order.
func ContendClaims(t *testing.T, stores []store.Store) {
	t.Helper()
	ctx := t.Context()
	const buildsets = 20
	s := stores[0]
	for i := range buildsets {
		id := fmt.Sprintf("bs%02d", i)
		create(t, s, &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: t0})
		must(t, "start "+id, s.StartBuildset(ctx, store.StartBuildsetParams{ID: id, Fence: own(t, s, "p"), At: at(time.Second), Reports: []store.NewReportDelivery{
			newDelivery(id+"-start-gh", "gh", "start", time.Second), newDelivery(id+"-start-hook", "hook", "start", time.Second),
		}}))
		ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: id, Result: store.Success, BuildResult: store.Canceled, At: at(2 * time.Second),
			Reports: []store.NewReportDelivery{newDelivery(id+"-end-gh", "gh", "success", 2*time.Second)}})
		must(t, "end "+id, err)
		if !ended {
			t.Fatalf("end %s: not ended", id)
		}
	}
	const total = 3 * buildsets
	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		order     = map[string][]string{} // buildset/reporter -> ids as delivered
		wg        sync.WaitGroup
	)
	now := at(time.Minute)
	for w := range 3 * len(stores) {
		st := stores[w%len(stores)]
		worker := fmt.Sprintf("w%d", w)
		wg.Go(func() {
			for idle := 0; idle < 50; {
				ds, err := st.ClaimReportDeliveries(ctx, store.ClaimReportDeliveriesParams{Worker: worker, Now: now, Until: now.Add(time.Hour), Limit: 3})
				if err != nil {
					t.Errorf("claim by %s: %v", worker, err)
					return
				}
				mu.Lock()
				done := len(delivered) == total
				mu.Unlock()
				if done {
					return
				}
				if len(ds) == 0 {
					idle++
					time.Sleep(time.Millisecond) // others hold the heads of the lines
					continue
				}
				idle = 0
				for _, d := range ds {
					mu.Lock()
					delivered[d.ID]++
					key := d.Buildset + "/" + d.Reporter
					order[key] = append(order[key], d.ID)
					mu.Unlock()
					if err := st.FinishReportDelivery(ctx, store.FinishReportDeliveryParams{ID: d.ID, Worker: worker, Try: d.Tries, State: store.DeliveryDelivered, At: now}); err != nil {
						t.Errorf("finish %s by %s: %v", d.ID, worker, err)
					}
				}
			}
		})
	}
	wg.Wait()
	if len(delivered) != total {
		t.Errorf("%d deliveries delivered, want %d", len(delivered), total)
	}
	for id, n := range delivered {
		if n != 1 {
			t.Errorf("%s claimed %d times", id, n)
		}
	}
	for i := range buildsets {
		id := fmt.Sprintf("bs%02d", i)
		diff(t, "order of "+id+"'s deliveries to gh", []string{id + "-start-gh", id + "-end-gh"}, order[id+"/gh"])
	}
}
