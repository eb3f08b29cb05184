package buildset

import (
	"context"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// Blocker returns the buildset that bs, made by a `sortie run` (owned and
// QUEUED), must wait for under its pipeline's manager, or nil when it may
// start. active is the store's active buildsets, oldest first.
//
// An independent pipeline never waits. Every other manager runs one
// buildset at a time: bs waits for any other buildset of its pipeline that
// a process is running or about to run (ADMITTED, RUNNING, or QUEUED by
// another `sortie run`, that is, with an owner) and arrived before it. A
// server's QUEUED buildsets are not waited for: the server's managers see
// bs as running and hold them back meanwhile, so either order is one at a
// time. A run does not supersede or coalesce others, as a server would: it
// runs what it was asked to, in its turn.
func Blocker(bs *store.Buildset, manager config.Manager, active []*store.Buildset) *store.Buildset {
	if manager == config.ManagerIndependent {
		return nil
	}
	for _, o := range active {
		if o.ID == bs.ID || o.Pipeline != bs.Pipeline {
			continue
		}
		if o.AwaitsManagers() {
			continue // the server's: held back while bs waits or runs
		}
		if o.State != store.BuildsetQueued || o.Seq < bs.Seq {
			return o
		}
	}
	return nil
}

// WaitTurn waits, reading the store every poll, until Blocker says bs may
// start. say is told once what it waits for. If ctx ends first, the
// buildset is ended CANCELED and ctx's error returned.
func (r *Runner) WaitTurn(ctx context.Context, bs *store.Buildset, manager config.Manager, poll time.Duration, say func(string)) error {
	waitingFor := ""
	for {
		active, err := r.Store.ActiveBuildsets(ctx)
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("wait for the turn of buildset %s: %w", bs.ID, err)
		}
		if err == nil {
			b := Blocker(bs, manager, active)
			if b == nil {
				return nil
			}
			if b.ID != waitingFor {
				waitingFor = b.ID
				say(fmt.Sprintf("waiting for buildset %s of pipeline %s (%s, %s manager) to finish", b.ID, b.Pipeline, b.State, manager))
			}
		}
		select {
		case <-ctx.Done():
			bg := context.WithoutCancel(ctx)
			if _, err := r.End(bg, nil, store.EndBuildsetParams{
				ID: bs.ID, Result: store.Canceled, Error: "cancelled while waiting for its turn",
				BuildResult: store.Canceled, Reason: scheduler.ReasonBuildsetCancelled, At: r.now(), Fence: r.fence(),
			}); err != nil {
				return err
			}
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}
