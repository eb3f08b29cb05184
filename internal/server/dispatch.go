package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/pipeline"
	"github.com/sortie-ci/sortie/internal/store"
)

// dispatch is the managers' loop: whenever woken (a buildset was made or
// ended, a pause changed) and at every tick, it reads the queue from the
// store, asks pipeline.Decide what to do, and does it. It is the only
// goroutine that admits, supersedes or coalesces buildsets, so decisions
// never race each other.
func (s *Server) dispatch(ctx context.Context) {
	t := time.NewTicker(s.opt.Tick)
	defer t.Stop()
	for {
		if err := s.pass(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("managers", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-t.C:
		}
	}
}

// pass makes one decision and applies it.
func (s *Server) pass(ctx context.Context) error {
	cfg := s.Config()
	// A `sortie run` that died on this store would otherwise count as
	// running for its pipeline for ever.
	// Failing to (say, the bastion is unreachable, so their builds cannot
	// be ended) holds up only their pipelines: the rest is decided anyway.
	reaped, err := s.opt.Runner.ReapDeadRuns(ctx, time.Now().UTC())
	if len(reaped) > 0 {
		s.log.Warn("ended the buildsets of sortie run processes that died", "buildsets", reaped)
	}
	if err != nil && ctx.Err() == nil {
		s.log.Error("end the buildsets of dead sortie run processes", "err", err)
	}
	active, err := s.st.ActiveBuildsets(ctx)
	if err != nil {
		return err
	}
	snap := pipeline.Snapshot{}
	if p := s.paused(""); p != nil {
		snap.PauseAll = &pipeline.Pause{By: p.By, Reason: p.Reason, At: p.At}
	}
	byName := map[string]int{}
	for _, name := range cfg.PipelineNames() {
		pl := cfg.Pipelines[name]
		p := pipeline.Pipeline{Name: name, Manager: pl.Manager, Precedence: pl.Precedence}
		if pz, ok := (*s.pauses.Load())[name]; ok {
			p.Paused = &pipeline.Pause{By: pz.By, Reason: pz.Reason, At: pz.At}
		}
		byName[name] = len(snap.Pipelines)
		snap.Pipelines = append(snap.Pipelines, p)
	}
	queued := map[string]int{}
	for _, bs := range active {
		i, ok := byName[bs.Pipeline]
		if !ok {
			if bs.AwaitsManagers() {
				// Its pipeline is gone from the config: nothing can decide
				// when it would run.
				if err := s.finishQueued(ctx, bs.ID, store.Canceled, fmt.Sprintf("pipeline %s is no longer in the config", bs.Pipeline), ""); err != nil {
					return err
				}
			}
			continue
		}
		b := pipeline.Buildset{ID: bs.ID, Commit: bs.Commit, Files: bs.Files, CreatedAt: bs.CreatedAt, Seq: bs.Seq}
		// One that does not await them (a sortie run's, about to start
		// it) counts as running.
		if bs.AwaitsManagers() {
			snap.Pipelines[i].Queued = append(snap.Pipelines[i].Queued, b)
			queued[bs.Pipeline]++
		} else {
			snap.Pipelines[i].Running = append(snap.Pipelines[i].Running, b)
		}
	}
	s.metrics.queues(cfg, queued)
	s.metrics.semaphores(ctx, s.st)
	plan := pipeline.Decide(snap)
	s.planMu.Lock()
	s.lastPlan = plan
	s.planMu.Unlock()
	for _, act := range plan.Actions {
		if ctx.Err() != nil {
			return nil
		}
		if err := s.apply(ctx, cfg, act, active); err != nil {
			return fmt.Errorf("%s: %w", act, err)
		}
	}
	if !plan.Empty() {
		// What was just applied may let more happen (a coalesced
		// buildset's members are gone): look again soon.
		s.wake()
	}
	return nil
}

func (s *Server) apply(ctx context.Context, cfg *config.Config, act pipeline.Action, active []*store.Buildset) error {
	s.log.Info("manager", "action", act.String())
	switch a := act.(type) {
	case pipeline.Supersede:
		return ignoreConflict(s.finishQueued(ctx, a.Buildset, store.Canceled, a.Reason, ""))
	case pipeline.Start:
		return s.admit(ctx, a.Buildset, active)
	case pipeline.Coalesce:
		bs, err := s.opt.Runner.Create(ctx, cfg, buildset.Event{
			Pipeline: a.Pipeline, Rev: a.Commit, Files: a.Files, CreatedAt: a.Since,
			Cause: fmt.Sprintf("coalesced from %d queued buildsets", len(a.Merge)),
		})
		if err != nil {
			if bs == nil {
				return err
			}
			// A CONFIG_ERROR buildset stands for the members.
		}
		for _, id := range a.Merge {
			if err := ignoreConflict(s.finishQueued(ctx, id, store.Canceled, a.MemberReason(bs.ID), "")); err != nil {
				return err
			}
		}
		if bs.State == store.BuildsetDone {
			return nil
		}
		return s.admit(ctx, bs.ID, append(active, bs))
	}
	return fmt.Errorf("unknown action %T", act)
}

// admit lets a queued buildset go: it waits for its pipeline semaphore and
// runs, in this process.
func (s *Server) admit(ctx context.Context, id string, active []*store.Buildset) error {
	if err := s.st.AdmitBuildset(ctx, id, s.owner, time.Now().UTC()); err != nil {
		return ignoreConflict(err)
	}
	var bs *store.Buildset
	for _, b := range active {
		if b.ID == id {
			bs = b
		}
	}
	if bs == nil {
		var err error
		if bs, err = s.st.GetBuildset(ctx, id); err != nil {
			return err
		}
	}
	bs.State, bs.Owner = store.BuildsetAdmitted, s.owner
	s.launch(bs)
	return nil
}

// ignoreConflict: the row changed under the decision (an operator
// cancelled it meanwhile); the next pass sees the new state.
func ignoreConflict(err error) error {
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}
