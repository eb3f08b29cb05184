package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/web"
)

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "--config PATH [--listen ADDR] [--database URL] [--state-dir DIR] [--node NAME] [--grace D]", stderr)
	path := fs.String("config", "", "config file, or directory of *.yaml files")
	listen := fs.String("listen", "", "address of the API (default: server.listen, else 127.0.0.1:8080)")
	dbFlag := fs.String("database", "", databaseUsage)
	stateDir := fs.String("state-dir", defaultStateDir, "where the database (SQLite), mirror, logs, lock and local bastion live")
	node := fs.String("node", "", "this server's name among those sharing the database (default: the host name)")
	grace := fs.Duration("grace", server.DefaultGrace, "on SIGTERM, how long running builds may finish before they are cancelled")
	// For tests only (hidden): shorter time constants, so that a test of
	// node loss and failover does not wait out the real ones.
	lease := fs.Duration("lease", semaphore.DefaultLease, "this node's lease (its owner's and semaphores'); the reaper looks every third of it")
	leaderTTL := fs.Duration("leader-ttl", coordinator.DefaultLeaderTTL, "how long a leader's term lasts unrenewed")
	leaderRetry := fs.Duration("leader-retry", coordinator.DefaultLeaderRetry, "how often a follower asks to lead")
	hide(fs, "lease", "leader-ttl", "leader-retry")
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := checkTimings(*lease, *leaderTTL, *leaderRetry); err != nil {
		return err
	}
	db, err := database("serve", *dbFlag)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return err
	}
	if cfg.Source.URL == "" {
		return usageError("serve: %s: source.url is not set; say which repository to deploy", *path)
	}
	// A reporter whose secret is not set would fail every delivery:
	// refuse to start, naming where the variable is named.
	if err := cfg.CheckEnv(os.Getenv); err != nil {
		io.WriteString(stderr, err.Error()+"\n")
		return &exitError{code: 2, msg: "serve: a reporter's secret is not set in the environment"}
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	owner := coordinator.NewOwner()
	// A state dir that cannot be written for now (a full disk) is waited
	// for, not a reason to exit: what the store holds goes on once space
	// is freed.
	var env *runEnv
	err = store.Persist(ctx.Done(), time.Second,
		func(err error) {
			log.Error("waiting until the store can be opened and written", "state_dir", *stateDir, "err", err)
		},
		func() { log.Info("the store can be written again") },
		func() (err error) { env, err = openEnv(ctx, *stateDir, db, cfg, owner, true, nil); return err })
	if err != nil {
		return err
	}
	defer env.Close()
	env.sems.Lease = *lease
	// On PostgreSQL, another server's admission (or its death) wakes this
	// one's claims at once, not at its next look.
	var notices coordinator.Notices
	if pg, ok := env.store.(*postgres.Store); ok {
		n := postgres.NewNotifier(pg, log)
		if err := n.Start(ctx); err != nil {
			return err
		}
		defer n.Stop()
		notices = n
	}
	abs, _ := filepath.Abs(*stateDir)
	ver, _ := buildVersion()
	srv, err := server.New(server.Options{
		ConfigPath: *path, Config: cfg, StateDir: abs, Listen: *listen, Node: *node, Version: ver,
		Store: env.store, Semaphores: env.sems, Bastion: env.runner.Bastion, Mirror: env.runner.Mirror,
		Runner: env.runner, Log: log, Grace: *grace, LeaderTTL: *leaderTTL, LeaderRetry: *leaderRetry,
		Notices: notices,
	})
	if err != nil {
		return err
	}
	ui := web.New(srv)
	ui.Log = log
	srv.SetUI(ui)
	// SIGHUP reloads the config; a bad one is refused and logged.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-hup:
				srv.Reload()
			case <-done:
				return
			}
		}
	}()
	start := time.Now()
	err = srv.Run(ctx)
	log.Info("serve ended", "uptime", time.Since(start).Round(time.Second))
	return err
}

// checkTimings checks the hidden time constants of `sortie serve`: a
// lease and a term of at least a second (a renewal is a round trip to
// the store, and a leader steps down up to a second before its term
// ends), and a follower that asks to lead more often than a term lasts.
func checkTimings(lease, leaderTTL, leaderRetry time.Duration) error {
	switch {
	case lease < time.Second:
		return usageError("serve: --lease %s: must be at least 1s", lease)
	case leaderTTL < time.Second:
		return usageError("serve: --leader-ttl %s: must be at least 1s", leaderTTL)
	case leaderRetry <= 0:
		return usageError("serve: --leader-retry %s: must be positive", leaderRetry)
	case leaderRetry >= leaderTTL:
		return usageError("serve: --leader-retry %s: must be shorter than --leader-ttl %s", leaderRetry, leaderTTL)
	}
	return nil
}
