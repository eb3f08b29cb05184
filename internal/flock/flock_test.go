package flock_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/flock"
)

// A held lock makes a second taker wait until it is released, and a taker
// whose context ends gives up with the cause.
func TestLockWaitsAndHonoursContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.lock")
	held, err := flock.Lock(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), 100*time.Millisecond, errors.New("gave up"))
	defer cancel()
	if _, err := flock.Lock(ctx, path); err == nil || !errors.Is(err, context.Cause(ctx)) {
		t.Fatalf("second Lock while held: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		f, err := flock.Lock(context.Background(), path)
		if err == nil {
			f.Close()
		}
		got <- err
	}()
	held.Close()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lock was never handed over after release")
	}
}
