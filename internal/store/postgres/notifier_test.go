package postgres

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// patience bounds every wait for a notification: far above what a loaded
// CI machine takes, and only reached when the test fails.
const patience = 20 * time.Second

// startNotifier returns a started notifier on a fresh database, stopped
// when the test ends.
func startNotifier(t *testing.T) (*Store, *Notifier, string) {
	t.Helper()
	s, dbURL := open(t)
	n := NewNotifier(s, nil)
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return s, n, dbURL
}

// subscribe subscribes to topics and waits for the first resync, after
// which the topics are listened to.
func subscribe(t *testing.T, n *Notifier, topics ...string) *Subscription {
	t.Helper()
	sub := n.Subscribe(topics...)
	t.Cleanup(sub.Close)
	if got := next(t, sub); !got.Resync {
		t.Fatalf("first notification %+v, want a resync", got)
	}
	return sub
}

// next returns the next notification of sub, failing the test if none
// comes within patience.
func next(t *testing.T, sub *Subscription) Notification {
	t.Helper()
	timer := time.NewTimer(patience)
	defer timer.Stop()
	select {
	case nt := <-sub.C():
		return nt
	case <-timer.C:
		t.Fatalf("no notification within %v", patience)
		return Notification{}
	}
}

// TestNotifierCommitted: a NOTIFY sent inside a transaction is delivered
// once it commits.
func TestNotifierCommitted(t *testing.T) {
	t.Parallel()
	s, n, _ := startNotifier(t)
	sub := subscribe(t, n, "sortie_admit")
	err := s.tx(t.Context(), func(tx pgx.Tx) error { return Notify(t.Context(), tx, "sortie_admit", "bs-1") })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := next(t, sub), (Notification{Topic: "sortie_admit", Payload: "bs-1"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestNotifierRolledBack: a NOTIFY of a transaction that rolled back is
// never delivered: the next notification is the one committed after it.
func TestNotifierRolledBack(t *testing.T) {
	t.Parallel()
	s, n, _ := startNotifier(t)
	sub := subscribe(t, n, "sortie_claim")
	errAbort := errors.New("abort")
	err := s.tx(t.Context(), func(tx pgx.Tx) error {
		if err := Notify(t.Context(), tx, "sortie_claim", "rolled back"); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("tx = %v, want %v", err, errAbort)
	}
	if err := Notify(t.Context(), s.pool, "sortie_claim", "committed"); err != nil {
		t.Fatal(err)
	}
	if got, want := next(t, sub), (Notification{Topic: "sortie_claim", Payload: "committed"}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestNotifierTopics: a subscription hears its topics only, several
// subscriptions of one topic each hear it, and one made before Start gets
// its resync once started.
func TestNotifierTopics(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	n := NewNotifier(s, nil)
	early := n.Subscribe("b")
	t.Cleanup(early.Close)
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	if got := next(t, early); !got.Resync {
		t.Fatalf("first notification of a subscription made before Start: %+v, want a resync", got)
	}
	a := subscribe(t, n, "a")
	ab := subscribe(t, n, "a", "b")
	for _, topic := range []string{"a", "b"} {
		if err := Notify(t.Context(), s.pool, topic, "to "+topic); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		sub  *Subscription
		want []string
	}{{"a", a, []string{"a"}}, {"a,b", ab, []string{"a", "b"}}, {"b", early, []string{"b"}}} {
		for _, topic := range tc.want {
			if got, want := next(t, tc.sub), (Notification{Topic: topic, Payload: "to " + topic}); got != want {
				t.Errorf("subscription %s: got %+v, want %+v", tc.name, got, want)
			}
		}
	}
	// a heard nothing of b: a's next notification is the next of a.
	if err := Notify(t.Context(), s.pool, "a", "last"); err != nil {
		t.Fatal(err)
	}
	if got, want := next(t, a), (Notification{Topic: "a", Payload: "last"}); got != want {
		t.Errorf("subscription a: got %+v, want %+v", got, want)
	}
}

// TestNotifierResyncAfterTerminate: when the notifier's connection is
// killed, it reconnects, tells every subscription to resync, and hears
// notifications again.
func TestNotifierResyncAfterTerminate(t *testing.T) {
	t.Parallel()
	s, n, dbURL := startNotifier(t)
	sub := subscribe(t, n, "sortie_leader")
	other := subscribe(t, n, "sortie_pause")
	admin := connect(t, dbURL)
	var killed int
	err := admin.QueryRow(t.Context(), `SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, notifierAppName).Scan(&killed)
	if err != nil {
		t.Fatal(err)
	}
	if killed != 1 {
		t.Fatalf("terminated %d notifier connections, want 1", killed)
	}
	for _, sub := range []*Subscription{sub, other} {
		if got := next(t, sub); !got.Resync {
			t.Fatalf("after the connection was killed: %+v, want a resync", got)
		}
	}
	if err := Notify(t.Context(), s.pool, "sortie_leader", "elected"); err != nil {
		t.Fatal(err)
	}
	if got, want := next(t, sub), (Notification{Topic: "sortie_leader", Payload: "elected"}); got != want {
		t.Errorf("after the reconnection: got %+v, want %+v", got, want)
	}
}

// TestNotifierFullBuffer: a consumer that does not keep up loses
// notifications but is told so: the last place of its buffer holds a
// resync.
func TestNotifierFullBuffer(t *testing.T) {
	t.Parallel()
	s, n, _ := startNotifier(t)
	sub := subscribe(t, n, "sortie_semaphore")
	const sent = subscriptionBuffer + 10
	err := s.tx(t.Context(), func(tx pgx.Tx) error {
		for i := range sent {
			if err := Notify(t.Context(), tx, "sortie_semaphore", fmt.Sprint(i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFull(t, sub)
	var got []Notification
	for range subscriptionBuffer {
		got = append(got, next(t, sub))
	}
	for i, nt := range got[:subscriptionBuffer-1] {
		if want := (Notification{Topic: "sortie_semaphore", Payload: fmt.Sprint(i)}); nt != want {
			t.Errorf("notification %d = %+v, want %+v", i, nt, want)
		}
	}
	if last := got[subscriptionBuffer-1]; !last.Resync {
		t.Errorf("last notification %+v, want a resync", last)
	}
	// The rest were dropped, not kept back: the next notification is the
	// next one sent.
	if err := Notify(t.Context(), s.pool, "sortie_semaphore", "after"); err != nil {
		t.Fatal(err)
	}
	if got, want := next(t, sub), (Notification{Topic: "sortie_semaphore", Payload: "after"}); got != want {
		t.Errorf("after draining: got %+v, want %+v", got, want)
	}
}

// waitFull waits until sub's buffer is full, polling: a notifier delivers
// without telling anyone.
func waitFull(t *testing.T, sub *Subscription) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for len(sub.C()) < cap(sub.C()) {
		if time.Now().After(deadline) {
			t.Fatalf("buffer holds %d notifications after %v, want %d", len(sub.C()), patience, cap(sub.C()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNotifierLifecycle: Stop is safe before Start and twice, Start twice
// starts once, and a stopped notifier starts again. TestMain's leak check
// proves that Stop ends the goroutine.
func TestNotifierLifecycle(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	n := NewNotifier(s, nil)
	n.Stop()
	for range 2 {
		if err := n.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	sub := subscribe(t, n, "x")
	n.Stop()
	n.Stop()
	if err := n.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	if got := next(t, sub); !got.Resync {
		t.Fatalf("after a restart: %+v, want a resync", got)
	}
}

// TestNotifyInvalid: topics PostgreSQL would truncate or refuse and
// payloads too long are refused before they are sent.
func TestNotifyInvalid(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	for _, tc := range []struct{ topic, payload string }{
		{"", "x"},
		{strings.Repeat("t", maxTopicLen+1), "x"},
		{"t", strings.Repeat("p", maxPayloadLen+1)},
	} {
		if err := Notify(t.Context(), s.pool, tc.topic, tc.payload); err == nil {
			t.Errorf("Notify(%d-byte topic, %d-byte payload) succeeded", len(tc.topic), len(tc.payload))
		}
	}
	if err := Notify(t.Context(), s.pool, strings.Repeat("t", maxTopicLen), strings.Repeat("p", maxPayloadLen)); err != nil {
		t.Errorf("Notify at the limits: %v", err)
	}
}

// TestClaimsNotified: an admission, and the release of an owner whose
// buildsets become claimable, tell every server (store.TopicClaims), once
// committed; Wakeups turns those into wake-ups until stopped.
func TestClaimsNotified(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s, n, _ := startNotifier(t)
	sub := subscribe(t, n, store.TopicClaims)
	wakeups, stop := n.Wakeups(store.TopicClaims)
	defer stop()
	wake := func(what string) {
		t.Helper()
		select {
		case <-wakeups:
		case <-time.After(patience):
			t.Fatalf("%s: no wake-up within %v", what, patience)
		}
	}
	wake("the first resync")

	for _, id := range []string{"bs1", "bs2"} {
		if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: &store.Buildset{ID: id, Pipeline: "deploy", Commit: "a", CreatedAt: time.Now()}}); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "leader", Kind: store.OwnerNode, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AdmitBuildset(ctx, "bs1", leader, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sub); got.Topic != store.TopicClaims {
		t.Errorf("after an admission: %+v, want a notice of %s", got, store.TopicClaims)
	}
	wake("an admission")

	// A node runs bs2, and dies: its release makes bs2 claimable.
	node, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "node", Kind: store.OwnerNode, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs2", Fence: node, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{"node"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkOwnerEnded(ctx, "node"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: "node", Keep: []string{"bs2"}}); err != nil {
		t.Fatal(err)
	}
	if got := next(t, sub); got.Topic != store.TopicClaims {
		t.Errorf("after a release: %+v, want a notice of %s", got, store.TopicClaims)
	}
	wake("a release")
	stop()
	stop() // twice is fine
}
