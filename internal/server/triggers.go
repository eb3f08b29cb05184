package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger/cron"
	"github.com/sortie-ci/sortie/internal/trigger/poll"
)

// Trigger makes a buildset of a pipeline for rev ("" for the head of
// source.branch) with files (nil: no file list), and wakes the managers. A
// buildset error (SPEC §2.2) still makes a buildset, DONE with
// CONFIG_ERROR; its error is returned with it.
func (s *Server) Trigger(ctx context.Context, pipeline, rev string, files []string, cause string) (*store.Buildset, error) {
	return s.create(ctx, buildset.Event{Pipeline: pipeline, Rev: rev, Files: files, Cause: cause})
}

func (s *Server) create(ctx context.Context, ev buildset.Event) (*store.Buildset, error) {
	bs, err := s.opt.Runner.Create(ctx, s.Config(), ev)
	if bs != nil {
		s.log.Info("buildset created", "buildset", bs.ID, "pipeline", bs.Pipeline, "commit", bs.Commit, "files", len(bs.Files), "cause", bs.Cause)
		if bs.State == store.BuildsetDone {
			s.metrics.buildsetDone(bs.Pipeline, bs.Result)
		}
		s.wake()
	}
	return bs, err
}

// pushResult is what a push to a branch did.
type pushResult struct {
	// Commit is the branch's head in the mirror after fetching: what the
	// push deploys.
	Commit string
	// Buildsets are those made, one per pipeline at most.
	Buildsets []*store.Buildset
	// Current maps each pipeline that got no buildset because its newest
	// is already at Commit (queued, running or successful) to that one.
	Current map[string]string
	// Duplicate is set when the delivery was received before: nothing
	// else was done.
	Duplicate bool
}

// push makes a buildset of every pipeline triggered by pushes to branch.
// A push says only that the branch moved: what it deploys is the branch's
// head as the mirror has it after fetching, never a commit the delivery
// names, so a delivery replayed after later pushes, or one naming a commit
// of another branch, cannot deploy an older or foreign commit.
//
// delivery names the forge's delivery ("" for none). It is recorded once
// the mirror has fetched, so that a delivery that failed there can be sent
// again; one recorded before makes nothing (Duplicate). The changed files
// of each buildset are those between its pipeline's last success and the
// head.
func (s *Server) push(ctx context.Context, branch, delivery, by string) (*pushResult, error) {
	cfg := s.Config()
	var names []string
	for _, name := range cfg.PipelineNames() {
		if p := cfg.Pipelines[name].Trigger.Push; p != nil && p.Branch == branch {
			names = append(names, name)
		}
	}
	res := &pushResult{}
	if len(names) == 0 {
		return res, nil
	}
	if err := s.opt.Mirror.Update(ctx); err != nil {
		return nil, err
	}
	head, err := s.opt.Mirror.Resolve(ctx, "refs/heads/"+branch)
	if err != nil {
		return nil, fmt.Errorf("push to %s: the branch's head: %w", branch, err)
	}
	res.Commit = head
	if delivery != "" {
		now := s.opt.Clock.Now()
		claimed, err := s.st.ClaimDelivery(ctx, store.DeliveryClaim{ID: delivery, At: now, ForgetBefore: now.Add(-deliveryTTL), Keep: deliveryKeep})
		if err != nil {
			return nil, err
		}
		if !claimed {
			s.log.Info("push: delivery received before; ignored", "delivery", delivery)
			return &pushResult{Duplicate: true}, nil
		}
	}
	var errs []error
	for _, name := range names {
		bs, current, err := s.pushOne(ctx, name, head, fmt.Sprintf("push to %s by %s", branch, by))
		if bs != nil {
			res.Buildsets = append(res.Buildsets, bs)
		}
		if current != nil {
			if res.Current == nil {
				res.Current = map[string]string{}
			}
			res.Current[name] = current.ID
		}
		if err != nil && bs == nil {
			errs = append(errs, fmt.Errorf("pipeline %s: %w", name, err))
		}
	}
	return res, errors.Join(errs...)
}

// changedFiles returns the files changed since the pipeline last succeeded,
// and that commit ("" and nil files when it never did).
func (s *Server) changedFiles(ctx context.Context, pipeline, to string) ([]string, string, error) {
	last, err := s.st.ListBuildsets(ctx, store.Filter{Pipeline: pipeline, Result: store.Success, Limit: 1})
	if err != nil {
		return nil, "", err
	}
	if len(last) == 0 {
		return nil, "", nil
	}
	from := last[0].Commit
	files, err := s.opt.Mirror.ChangedFiles(ctx, from, to)
	if err != nil {
		return nil, "", err
	}
	return files, from, nil
}

// startTriggers starts the cron timers and branch pollers of cfg; they
// run until stopTriggers.
func (s *Server) startTriggers(cfg *config.Config) {
	ctx, cancel := context.WithCancel(context.Background())
	s.trigMu.Lock()
	s.trigCancel = cancel
	s.trigMu.Unlock()
	for _, name := range cfg.PipelineNames() {
		pl := cfg.Pipelines[name]
		if expr := pl.Trigger.Cron; expr != "" {
			sched, err := cron.Parse(expr, time.UTC)
			if err != nil {
				s.log.Error("cron", "pipeline", name, "err", err) // config.Load checked it
				continue
			}
			s.trigWG.Add(1)
			go func() {
				defer s.trigWG.Done()
				s.runCron(ctx, name, sched, pl.Trigger.Jitter)
			}()
		}
		if p := pl.Trigger.Push; p != nil && p.Poll > 0 {
			s.trigWG.Add(1)
			go func() {
				defer s.trigWG.Done()
				s.runPoll(ctx, name, p.Branch, p.Poll)
			}()
		}
	}
}

func (s *Server) stopTriggers() {
	s.trigMu.Lock()
	cancel := s.trigCancel
	s.trigCancel = nil
	s.trigMu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.trigWG.Wait()
}

func cronMark(pipeline string) string { return "cron/" + pipeline }
func pollMark(pipeline string) string { return "poll/" + pipeline }

// runCron fires a pipeline's cron trigger. The last tick fired is kept in
// the store, so that ticks missed while no server ran fire once at start.
func (s *Server) runCron(ctx context.Context, name string, sched *cron.Schedule, jitter time.Duration) {
	var last time.Time
	if v, err := s.st.GetMark(ctx, cronMark(name)); err != nil {
		s.log.Error("cron: read last tick", "pipeline", name, "err", err)
	} else if v != "" {
		last, _ = time.Parse(time.RFC3339Nano, v)
	} else {
		// First start with this pipeline: ticks before now were never
		// due to this server.
		last = s.opt.Clock.Now()
		s.st.SetMark(ctx, cronMark(name), last.UTC().Format(time.RFC3339Nano))
	}
	t := &cron.Timer{Schedule: sched, Clock: s.opt.Clock, Last: last, Jitter: jitter, Key: name}
	t.Run(ctx, func(tick cron.Tick) {
		cause := "cron " + sched.String()
		if tick.Missed {
			cause = fmt.Sprintf("cron %s: tick of %s missed while no server ran; run once now", sched.String(), tick.Time.UTC().Format(time.RFC3339))
			s.log.Warn("cron: missed tick", "pipeline", name, "tick", tick.Time)
		}
		if _, err := s.Trigger(ctx, name, "", nil, cause); err != nil {
			s.log.Error("cron: trigger", "pipeline", name, "err", err)
		}
		// After the buildset exists: a crash in between fires the tick
		// again (a second deploy) rather than losing it.
		if err := s.st.SetMark(context.WithoutCancel(ctx), cronMark(name), tick.Time.UTC().Format(time.RFC3339Nano)); err != nil {
			s.log.Error("cron: record tick", "pipeline", name, "err", err)
		}
	})
}

// runPoll polls a pipeline's branch, for setups without webhooks.
func (s *Server) runPoll(ctx context.Context, name, branch string, every time.Duration) {
	last, err := s.st.GetMark(ctx, pollMark(name))
	if err != nil {
		s.log.Error("poll: read last head", "pipeline", name, "err", err)
	}
	p := &poll.Poller{
		Resolver: s.opt.Mirror, Rev: "refs/heads/" + branch, Interval: every, Clock: s.opt.Clock, Last: last,
		OnError: func(err error) { s.log.Warn("poll", "pipeline", name, "err", err) },
	}
	p.Run(ctx, func(old, head string) {
		if old != "" {
			if _, _, err := s.pushOne(ctx, name, head, fmt.Sprintf("branch %s moved (polling)", branch)); err != nil {
				s.log.Error("poll: trigger", "pipeline", name, "err", err)
			}
		}
		if err := s.st.SetMark(context.WithoutCancel(ctx), pollMark(name), head); err != nil {
			s.log.Error("poll: record head", "pipeline", name, "err", err)
		}
	})
}

// pushOne makes the buildset of one pipeline for a branch that moved to
// head (the mirror already fetched), with the files changed since the
// pipeline's last success. When the pipeline's newest buildset is already
// at head and queued, running or successful, the branch has not moved
// since: it makes none and returns that one as current. A head whose
// newest buildset failed or was cancelled is deployed again.
func (s *Server) pushOne(ctx context.Context, name, head, cause string) (bs, current *store.Buildset, err error) {
	newest, err := s.st.ListBuildsets(ctx, store.Filter{Pipeline: name, Limit: 1})
	if err != nil {
		return nil, nil, err
	}
	if len(newest) == 1 && newest[0].Commit == head && (newest[0].State != store.BuildsetDone || newest[0].Result == store.Success) {
		s.log.Info("push: the pipeline's newest buildset is at the head already", "pipeline", name, "buildset", newest[0].ID, "commit", head)
		return nil, newest[0], nil
	}
	files, from, err := s.changedFiles(ctx, name, head)
	if err != nil {
		return nil, nil, err
	}
	if from == "" {
		cause += " (no earlier success: every job)"
	}
	bs, err = s.create(ctx, buildset.Event{Pipeline: name, Rev: head, Files: files, Cause: cause})
	return bs, nil, err
}

// Reload loads the config again. A config with errors is refused: the
// server keeps the one it has, and the errors are kept for the API (and
// returned). Buildsets keep the graph and spec they were made with.
func (s *Server) Reload() error {
	// One reload at a time (SIGHUP and the API may race): each restarts
	// the triggers, and two interleaved restarts would leave a set running
	// that nothing stops.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg, err := config.Load(s.opt.ConfigPath)
	now := time.Now().UTC()
	if err != nil {
		re := &ReloadError{At: now}
		var list config.Errors
		if errors.As(err, &list) {
			for _, e := range list {
				re.Errors = append(re.Errors, e.Error())
			}
		} else {
			re.Errors = []string{err.Error()}
		}
		s.cfgMu.Lock()
		s.reloadErr = re
		s.cfgMu.Unlock()
		s.metrics.reload(false)
		s.log.Error("reload refused; keeping the config in force", "errors", re.Errors)
		return re
	}
	old := s.Config()
	s.cfgMu.Lock()
	s.cfg, s.loadedAt, s.reloadErr = cfg, now, nil
	s.cfgMu.Unlock()
	s.slots.SetMax(cfg.Limits.MaxParallel)
	s.tokens.Store(readTokens(cfg, s.opt.Getenv))
	s.metrics.reload(true)
	if old.Source.URL != cfg.Source.URL || old.Bastion != cfg.Bastion {
		s.log.Warn("reload: source.url and bastion changes apply after a restart")
	}
	s.log.Info("config reloaded", "path", s.opt.ConfigPath)
	if s.ready.Load() {
		s.stopTriggers()
		s.startTriggers(cfg)
	}
	s.wake()
	return nil
}
