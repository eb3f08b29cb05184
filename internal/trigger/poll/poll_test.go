package poll_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/trigger/poll"
	"github.com/sortie-ci/sortie/internal/trigger/triggertest"
)

var _ poll.Resolver = (*source.Mirror)(nil)

func TestMain(m *testing.M) {
	// The git test must not depend on the git configuration of whoever
	// runs it.
	for k, v := range map[string]string{
		"GIT_CONFIG_GLOBAL":   os.DevNull,
		"GIT_CONFIG_NOSYSTEM": "1",
		"GIT_AUTHOR_NAME":     "Sortie Test",
		"GIT_AUTHOR_EMAIL":    "test@example.org",
		"GIT_COMMITTER_NAME":  "Sortie Test",
		"GIT_COMMITTER_EMAIL": "test@example.org",
	} {
		os.Setenv(k, v)
	}
	goleak.VerifyTestMain(m)
}

const (
	interval = time.Minute
	deadline = 30 * time.Second // bounds every wait; nothing waits for it to pass
	shaA     = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	shaB     = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	shaC     = "cccccccccccccccccccccccccccccccccccccccc"
)

// resolver is a hand-written fake: function fields, nil meaning success.
type resolver struct {
	update  func(ctx context.Context) error
	resolve func(ctx context.Context, rev string) (string, error)
}

func (r resolver) Update(ctx context.Context) error { return r.update(ctx) }
func (r resolver) Resolve(ctx context.Context, rev string) (string, error) {
	return r.resolve(ctx, rev)
}

// branch is a branch whose head and failures the test sets.
type branch struct {
	mu         sync.Mutex
	head       string
	updateErr  error
	resolveErr error
	revs       []string // what Resolve was asked
}

func (b *branch) set(head string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.head = head
}

func (b *branch) fail(updateErr, resolveErr error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.updateErr, b.resolveErr = updateErr, resolveErr
}

func (b *branch) resolver() resolver {
	return resolver{
		update: func(context.Context) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.updateErr
		},
		resolve: func(_ context.Context, rev string) (string, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.revs = append(b.revs, rev)
			if b.resolveErr != nil {
				return "", b.resolveErr
			}
			return b.head, nil
		},
	}
}

type change struct{ old, new string }

// harness runs a Poller on a fake clock and records what it reports.
type harness struct {
	t       *testing.T
	clock   *triggertest.Clock
	changes chan change
	errs    chan error
}

// start runs p and, when the test ends, stops it and checks that Run
// returned the cancel's cause.
func start(t *testing.T, p poll.Poller) *harness {
	t.Helper()
	h := &harness{
		t:       t,
		clock:   triggertest.NewClock(time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC)),
		changes: make(chan change, 100),
		errs:    make(chan error, 100),
	}
	p.Clock = h.clock
	p.OnError = func(err error) { h.errs <- err }
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, func(old, new string) { h.changes <- change{old, new} }) }()
	stopped := errors.New("test over")
	t.Cleanup(func() {
		cancel(stopped)
		select {
		case err := <-done:
			if !errors.Is(err, stopped) {
				t.Errorf("Run = %v, want the cause %v", err, stopped)
			}
		case <-time.After(deadline):
			t.Errorf("Run did not return %v after its context was canceled", deadline)
		}
	})
	return h
}

// polled waits until the poller has polled and waits for the next poll,
// and returns what it reported meanwhile.
func (h *harness) polled() ([]change, []error) {
	h.t.Helper()
	h.clock.WaitForWaiters(h.t, 1)
	var changes []change
	var errs []error
	for {
		select {
		case c := <-h.changes:
			changes = append(changes, c)
		case err := <-h.errs:
			errs = append(errs, err)
		default:
			return changes, errs
		}
	}
}

// tick starts the next poll.
func (h *harness) tick() {
	h.t.Helper()
	h.clock.WaitForWaiters(h.t, 1)
	h.clock.Advance(interval)
}

func (h *harness) wantChanges(got []change, want ...change) {
	h.t.Helper()
	if len(got) != len(want) {
		h.t.Fatalf("changes %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			h.t.Errorf("change %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestFirstObservationRecords(t *testing.T) {
	t.Parallel()
	b := &branch{head: shaA}
	h := start(t, poll.Poller{Resolver: b.resolver(), Rev: "refs/heads/main", Interval: interval})
	changes, errs := h.polled()
	h.wantChanges(changes)
	if errs != nil {
		t.Fatalf("errors: %v", errs)
	}

	h.tick() // not moved
	changes, _ = h.polled()
	h.wantChanges(changes)

	b.set(shaB)
	h.tick()
	changes, _ = h.polled()
	h.wantChanges(changes, change{shaA, shaB})

	b.set(shaA) // moved back: that is a move too
	h.tick()
	changes, _ = h.polled()
	h.wantChanges(changes, change{shaB, shaA})

	b.mu.Lock()
	defer b.mu.Unlock()
	for _, rev := range b.revs {
		if rev != "refs/heads/main" {
			t.Errorf("Resolve(%q), want refs/heads/main", rev)
		}
	}
}

func TestLastKnownHead(t *testing.T) {
	t.Parallel()
	b := &branch{head: shaB}
	h := start(t, poll.Poller{Resolver: b.resolver(), Interval: interval, Last: shaA})
	changes, _ := h.polled()
	h.wantChanges(changes, change{shaA, shaB})

	b2 := &branch{head: shaA}
	h2 := start(t, poll.Poller{Resolver: b2.resolver(), Interval: interval, Last: shaA})
	changes, _ = h2.polled()
	h2.wantChanges(changes)
}

func TestErrorsKeepPolling(t *testing.T) {
	t.Parallel()
	b := &branch{head: shaA}
	h := start(t, poll.Poller{Resolver: b.resolver(), Rev: "refs/heads/main", Interval: interval})
	h.polled()

	unreachable := errors.New("could not resolve host")
	b.set(shaB)
	b.fail(unreachable, nil)
	h.tick()
	changes, errs := h.polled()
	h.wantChanges(changes)
	if len(errs) != 1 || !errors.Is(errs[0], unreachable) || !strings.HasPrefix(errs[0].Error(), "poll: update: ") {
		t.Errorf("errors %v, want one poll: update: ... wrapping %v", errs, unreachable)
	}

	b.fail(nil, source.ErrUnknownRevision) // the branch was deleted
	h.tick()
	changes, errs = h.polled()
	h.wantChanges(changes)
	if len(errs) != 1 || !errors.Is(errs[0], source.ErrUnknownRevision) {
		t.Errorf("errors %v, want one wrapping ErrUnknownRevision", errs)
	}

	b.set(shaC) // back, somewhere else
	b.fail(nil, nil)
	h.tick()
	changes, errs = h.polled()
	h.wantChanges(changes, change{shaA, shaC})
	if errs != nil {
		t.Errorf("errors %v", errs)
	}
}

// TestCancelDuringPoll: a poll canceled by the context is not an error.
func TestCancelDuringPoll(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	r := resolver{
		update: func(ctx context.Context) error {
			close(entered)
			<-ctx.Done()
			return ctx.Err()
		},
		resolve: func(context.Context, string) (string, error) { return shaA, nil },
	}
	var errs []error
	p := poll.Poller{Resolver: r, Interval: interval, Clock: triggertest.NewClock(time.Now()), OnError: func(err error) { errs = append(errs, err) }}
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, func(string, string) { t.Error("change reported") }) }()
	<-entered
	reason := errors.New("shutdown")
	cancel(reason)
	select {
	case err := <-done:
		if !errors.Is(err, reason) {
			t.Errorf("Run = %v, want %v", err, reason)
		}
	case <-time.After(deadline):
		t.Fatal("Run did not return")
	}
	if errs != nil {
		t.Errorf("OnError got %v", errs)
	}
}

func TestBadPoller(t *testing.T) {
	t.Parallel()
	b := &branch{head: shaA}
	for name, p := range map[string]poll.Poller{
		"no resolver": {Interval: interval},
		"no interval": {Resolver: b.resolver()},
		"negative":    {Resolver: b.resolver(), Interval: -time.Second},
	} {
		if err := p.Run(context.Background(), func(string, string) {}); err == nil {
			t.Errorf("%s: Run succeeded", name)
		}
	}
}

// TestEmptyHead: a Resolver that answers "" has not resolved anything.
func TestEmptyHead(t *testing.T) {
	t.Parallel()
	b := &branch{head: ""}
	h := start(t, poll.Poller{Resolver: b.resolver(), Interval: interval})
	changes, errs := h.polled()
	h.wantChanges(changes)
	if len(errs) != 1 {
		t.Errorf("errors %v, want one", errs)
	}
}

// TestRealMirror polls a real git repository through a source.Mirror.
func TestRealMirror(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dir := t.TempDir()
	upstream := filepath.Join(dir, "upstream")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = upstream
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.Mkdir(upstream, 0o755); err != nil {
		t.Fatal(err)
	}
	git("init", "--quiet", "-b", "main")
	git("commit", "--quiet", "--allow-empty", "-m", "first")
	first := git("rev-parse", "HEAD")

	m := &source.Mirror{Dir: filepath.Join(dir, "mirror.git"), URL: upstream}
	h := start(t, poll.Poller{Resolver: m, Rev: "refs/heads/main", Interval: interval})
	changes, errs := h.polled()
	h.wantChanges(changes)
	if errs != nil {
		t.Fatalf("errors: %v", errs)
	}

	git("commit", "--quiet", "--allow-empty", "-m", "second")
	git("tag", "main") // a tag named like the branch does not shadow it
	git("commit", "--quiet", "--allow-empty", "-m", "third")
	third := git("rev-parse", "HEAD")
	h.tick()
	changes, errs = h.polled()
	h.wantChanges(changes, change{first, third})
	if errs != nil {
		t.Fatalf("errors: %v", errs)
	}
}
