// Package flock is an exclusive file lock (flock(2)) that honours a context:
// processes sharing a state dir or a bastion workdir take it around their
// mirror, checkouts and installs.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// poll is how often a lock held by someone else is tried again.
const poll = 20 * time.Millisecond

// Lock takes an exclusive flock on path, creating the file, and waits
// for it until ctx is done. flock(2) cannot be interrupted, so it is tried
// without blocking at intervals rather than left blocked in a goroutine that
// would outlive a cancel. The lock is released when the returned file is
// closed, or when the process dies.
func Lock(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	var tick *time.Ticker
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		if tick == nil {
			tick = time.NewTicker(poll)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, context.Cause(ctx))
		case <-tick.C:
		}
	}
}
