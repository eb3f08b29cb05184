package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/pipeline"
	"github.com/sortie-ci/sortie/internal/store"
)

// RunOwnOptions are how RunOwn waits for its turn and runs.
type RunOwnOptions struct {
	// Hold holds new builds back while it says so (a pause); nil never.
	Hold func() bool
	// Say, when set, is told once what the buildset waits for, each time
	// that changes.
	Say func(string)
	// Poll is how often the turn is looked at again; 0 means 500 ms.
	Poll time.Duration
}

// RunOwn runs bs, a buildset pinned to this process (a `sortie run`
// makes its buildset with buildset.Event.PinnedTo set to its Owner), in
// its turn, and returns its result. Its turn is decided as a server's
// managers decide (pipeline.Decide), over the pipeline's active buildsets
// in the store: it starts once the managers would start it, and a server
// sharing the store, seeing it pinned, never starts it itself. QUEUED
// buildsets not pinned are a server's to decide; they are counted only
// while a server is alive to start them, else a run would wait for them
// for ever. If ctx ends while it waits, the buildset ends CANCELED; an
// error reading the store ends it ERROR. Either way it ends through the
// single end path (Ended).
func (c *Coordinator) RunOwn(ctx context.Context, bs *store.Buildset, opt RunOwnOptions) (store.Result, error) {
	fence := c.opt.Runner.Semaphores.Fence()
	if bs.PinnedTo == "" || bs.PinnedTo != fence.Owner {
		return "", fmt.Errorf("coordinator: buildset %s is pinned to %q, not to this process %s", bs.ID, bs.PinnedTo, fence.Owner)
	}
	end := func(ctx context.Context, giveUp <-chan struct{}, p store.EndBuildsetParams) (bool, error) {
		return c.end(ctx, ending{Pipeline: bs.Pipeline, Params: p, GiveUp: giveUp})
	}
	poll := cmp.Or(opt.Poll, 500*time.Millisecond)
	waitingFor := ""
	for {
		blocker, err := c.turn(ctx, bs)
		if err != nil && ctx.Err() == nil {
			why := fmt.Sprintf("wait for its turn: %v", err)
			if _, eerr := end(context.WithoutCancel(ctx), nil, store.EndBuildsetParams{
				ID: bs.ID, Result: store.Error, Error: why, BuildResult: store.Error, Reason: "sortie error: " + why,
				At: time.Now().UTC(), Fence: &fence,
			}); eerr != nil {
				return store.Error, errors.Join(err, eerr)
			}
			return store.Error, fmt.Errorf("buildset %s: %s", bs.ID, why)
		}
		if err == nil && blocker == nil {
			break
		}
		if blocker != nil && blocker.ID != waitingFor && opt.Say != nil {
			waitingFor = blocker.ID
			opt.Say(fmt.Sprintf("waiting for buildset %s of pipeline %s (%s, %s manager) to finish",
				blocker.ID, blocker.Pipeline, blocker.State, c.opt.Config().Pipelines[bs.Pipeline].Manager))
		}
		select {
		case <-ctx.Done():
			if _, err := end(context.WithoutCancel(ctx), nil, store.EndBuildsetParams{
				ID: bs.ID, Result: store.Canceled, Error: "cancelled while waiting for its turn",
				BuildResult: store.Canceled, Reason: "buildset cancelled", At: time.Now().UTC(), Fence: &fence,
			}); err != nil {
				return store.Canceled, err
			}
			return store.Canceled, context.Cause(ctx)
		case <-time.After(poll):
		}
	}
	c.TestSignals.Admitted.Signal(bs.ID)
	runner := *c.opt.Runner
	c.TestSignals.Launched.Signal(bs.ID)
	return runner.RunWith(ctx, bs, buildset.RunOptions{Hold: opt.Hold, End: end})
}

// turn decides whether it is bs's turn to start: nil when the managers
// start it, else the buildset it waits behind.
func (c *Coordinator) turn(ctx context.Context, bs *store.Buildset) (*store.Buildset, error) {
	cfg := c.opt.Config()
	if _, ok := cfg.Pipelines[bs.Pipeline]; !ok {
		return nil, fmt.Errorf("pipeline %s is not in the config", bs.Pipeline)
	}
	// Every active buildset, without the plans and specs that the
	// managers' decision does not read: a run's own plan and spec are
	// most of what ActiveBuildsets would read, every poll.
	ch, err := c.st.ChangedBuildsets(ctx, 0)
	if err != nil {
		return nil, err
	}
	active := ch.Buildsets
	servers, err := c.serverAlive(ctx)
	if err != nil {
		return nil, err
	}
	mine := active[:0:0]
	for _, o := range active {
		if o.Pipeline != bs.Pipeline {
			continue
		}
		if o.ID != bs.ID && o.State == store.BuildsetQueued && o.PinnedTo == "" && !servers {
			continue // nobody decides for it now
		}
		mine = append(mine, o)
	}
	if !slices.ContainsFunc(mine, func(o *store.Buildset) bool { return o.ID == bs.ID }) {
		return nil, fmt.Errorf("buildset %s is no longer active", bs.ID)
	}
	// No pause here: a pause holds the run's builds (Hold), as it holds a
	// server's, and the run says so.
	snap, _, _ := snapshot(cfg, []string{bs.Pipeline}, nil, nil, mine)
	for _, act := range pipeline.Decide(snap).Actions {
		if a, ok := act.(pipeline.Start); ok && a.Buildset == bs.ID {
			return nil, nil
		}
	}
	// What it waits behind: what runs, else the oldest before it.
	var ahead *store.Buildset
	for _, o := range mine {
		switch {
		case o.ID == bs.ID:
		case o.State != store.BuildsetQueued:
			return o, nil
		case ahead == nil && o.Seq < bs.Seq:
			ahead = o
		}
	}
	if ahead == nil {
		ahead = bs // nothing in the way it can name: its manager holds it
	}
	return ahead, nil
}

// serverAlive reports whether a server (an owner of kind node, not this
// process) is alive on the store to decide for the buildsets queued for
// the managers.
func (c *Coordinator) serverAlive(ctx context.Context) (bool, error) {
	owners, err := c.st.Owners(ctx, store.OwnerFilter{Kind: store.OwnerNode, States: []store.OwnerState{store.OwnerLive}})
	if err != nil {
		return false, err
	}
	now := time.Now()
	self := c.Owner()
	return slices.ContainsFunc(owners, func(o store.Owner) bool { return o.ID != self && o.Alive(now) }), nil
}

// snapshot is what the managers decide over: the pipelines named (in that
// order), their pauses (pauseAll, pauses; nil for none), and the active
// buildsets of those pipelines, a QUEUED one as queued (pinned or not) and
// the others as running. It returns also the active buildsets whose
// pipeline is not in cfg, and how many queued each pipeline has for the
// managers (not pinned).
func snapshot(cfg *config.Config, names []string, pauseAll *store.Pause, pauses map[string]store.Pause, active []*store.Buildset) (pipeline.Snapshot, []*store.Buildset, map[string]int) {
	snap := pipeline.Snapshot{}
	if pauseAll != nil {
		snap.PauseAll = &pipeline.Pause{By: pauseAll.By, Reason: pauseAll.Reason, At: pauseAll.At}
	}
	byName := map[string]int{}
	for _, name := range names {
		pl, ok := cfg.Pipelines[name]
		if !ok {
			continue
		}
		p := pipeline.Pipeline{Name: name, Manager: pl.Manager, Precedence: pl.Precedence}
		if pz, ok := pauses[name]; ok {
			p.Paused = &pipeline.Pause{By: pz.By, Reason: pz.Reason, At: pz.At}
		}
		byName[name] = len(snap.Pipelines)
		snap.Pipelines = append(snap.Pipelines, p)
	}
	var gone []*store.Buildset
	queued := map[string]int{}
	for _, bs := range active {
		i, ok := byName[bs.Pipeline]
		if !ok {
			if _, known := cfg.Pipelines[bs.Pipeline]; !known {
				gone = append(gone, bs)
			}
			continue
		}
		b := pipeline.Buildset{ID: bs.ID, Commit: bs.Commit, Files: bs.Files, CreatedAt: bs.CreatedAt, Seq: bs.Seq, Pinned: bs.PinnedTo != ""}
		switch {
		case bs.State != store.BuildsetQueued:
			snap.Pipelines[i].Running = append(snap.Pipelines[i].Running, b)
		default:
			// A run's (pinned) takes its turn too; only its run starts it.
			snap.Pipelines[i].Queued = append(snap.Pipelines[i].Queued, b)
			if bs.AwaitsManagers() {
				queued[bs.Pipeline]++
			}
		}
	}
	return snap, gone, queued
}
