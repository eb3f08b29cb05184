package server

import (
	"context"
	"errors"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/store"
)

// Trigger makes a buildset of a pipeline for rev ("" for the head of
// source.branch) with files (nil: no file list), through the coordinator
// (Submit). A buildset error (SPEC §2.2) still makes a buildset, DONE
// with CONFIG_ERROR; its error is returned with it.
func (s *Server) Trigger(ctx context.Context, pipeline, rev string, files []string, cause string) (*store.Buildset, error) {
	return s.coord.Submit(ctx, buildset.Event{Pipeline: pipeline, Rev: rev, Files: files, Cause: cause})
}

// Reload loads the config again. A config with errors is refused: the
// server keeps the one it has, and the errors are kept for the API (and
// returned). Buildsets keep the graph and spec they were made with.
func (s *Server) Reload() error {
	// One reload at a time (SIGHUP and the API may race), so that the
	// config in force is the last one loaded.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	cfg, err := config.Load(s.opt.ConfigPath)
	if err == nil {
		// A reporter whose secret is not set would fail at every try.
		err = cfg.CheckEnv(s.opt.Getenv)
	}
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
	s.tokens.Store(readTokens(cfg, s.opt.Getenv))
	s.metrics.reload(true)
	if old.Source.URL != cfg.Source.URL || old.Bastion != cfg.Bastion {
		s.log.Warn("reload: source.url and bastion changes apply after a restart")
	}
	s.log.Info("config reloaded", "path", s.opt.ConfigPath)
	s.coord.ConfigChanged()
	return nil
}
