// Package coordinator is the one place that decides what runs when, in a
// `sortie serve` and in a `sortie run` alike: the pipelines' managers
// admit, supersede and coalesce buildsets (pipeline.Decide), admitted
// buildsets are launched on the executor's shared slots
// (buildset.Runner.RunWith), a run's own buildset starts when the same
// decision starts it (RunOwn), a dead predecessor's buildsets are adopted
// at start, dead owners are reaped (Reaper), cron and polling make
// buildsets, and cancels reach the runs. Every end of a
// buildset it sees goes through one path (Coordinator.end), which ends it
// in the store and publishes one Ended event to in-process subscribers.
//
// Of the servers sharing a store, one at a time leads (the elector, through
// store.Leadership): only the leader runs the managers, cron, polling and
// the reaper, and what must happen once (a cron tick, a polled move) is
// written under its term, which the store refuses once the term is over.
// Every server runs what it owns. A `sortie run` never campaigns.
//
// It speaks no HTTP: internal/server serves the API and calls it
// (Submit, Push, Cancel, CancelBuild, SetPause, Status). Its long-lived
// parts are services (Start/Stop) that the Coordinator starts and stops,
// waiting for them.
//
// Everything is in the store before it is acted on, so a process killed at
// any moment and started again goes on where it was: the coordinator ends
// what its dead predecessor left running on the bastion, releases that
// process's semaphores, retries the builds that were lost, and runs the
// queue on.
//
// Each incarnation of the process is an owner in the store (store.Owners),
// registered at Start with its kind, node, host and state dir; every write
// of its work carries its fence. When its lease is lost (not renewed in
// time, or fenced by another process, which the store says by refusing a
// write with store.ErrFenced), its runs are cancelled with
// semaphore.ErrLeaseLost and write nothing more; once they have returned
// a server registers again as a new owner, recovers what the old one
// left, as a successor on the state dir would, and goes on. A run (kind
// run) only stops.
package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/pipeline"
	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger"
)

// DefaultGrace is how long a shutdown lets running builds finish before it
// cancels them.
const DefaultGrace = 5 * time.Minute

// Store is what the coordinator keeps and reads: buildsets, semaphores and
// the owners (registration, adoption, reaping), pauses, and the marks of
// triggers.
type Store interface {
	store.Buildsets
	store.Semaphores
	store.Owners
	store.Leadership
	store.Pauses
	store.Triggers
}

// Observer hears what the coordinator does, for metrics. Its methods are
// called from the coordinator's goroutines and must not block.
type Observer interface {
	// Passed is told, after each pass of the managers, how many buildsets
	// each pipeline of cfg has waiting for them.
	Passed(ctx context.Context, cfg *config.Config, queued map[string]int)
	// Launched is told of a run of bs about to start; the RunObserver it
	// returns (nil: none) observes the run, and its Done is called once
	// the run has returned.
	Launched(bs *store.Buildset) RunObserver
	// Leading is told when this process begins to lead for a term
	// (leading set), and when that term is over for it.
	Leading(term int64, leading bool)
}

// RunObserver observes one run (buildset.Observer) and hears when it is
// over.
type RunObserver interface {
	buildset.Observer
	Done()
}

// Options configure a Coordinator. The parts are made by the caller, which
// closes them after Stop returns.
type Options struct {
	Store Store
	// Runner is the template of every run: its Store, Bastion, Mirror,
	// Semaphores and LogDir are set; the coordinator copies it per
	// buildset. Its Semaphores client, with its Owner set, must not be
	// started: New sets its Identity from these options, Start starts it
	// (registering the owner), and Stop stops it, after the runs. A
	// process whose lease was lost goes on with a new Owner, set on the
	// client and on the Bastion (SetOwner).
	Runner *buildset.Runner
	// Kind is what this process is: store.OwnerNode ("" too), a `sortie
	// serve`, which runs the managers, cron and polling, recovers its
	// predecessors and goes on as a new owner when its lease is lost; or
	// store.OwnerRun, a `sortie run`, which runs its own buildset in its
	// turn (RunOwn) and the reaper, nothing else.
	Kind store.OwnerKind
	// StateDir is the state dir, absolute. The caller holds its lock
	// (serve.lock) from before Start until after Stop: holding it is what
	// proves dead the earlier servers registered with this node name,
	// host and state dir, which Start recovers at once.
	StateDir string
	// Node names this server; "" means the host name.
	Node string
	// Host is this host's name; "" means os.Hostname.
	Host string
	// Version is recorded with the owner.
	Version string
	// AnyHost says the bastion reaches the builds of every owner,
	// whatever host it ran on (an SSH bastion): the reaper ends what a
	// dead owner of any host left. Otherwise (the local bastion) only the
	// owners of this host are ended here.
	AnyHost bool
	// Reap is how often the reaper looks for dead owners; 0 means a third
	// of the semaphore lease.
	Reap time.Duration
	// Say, when set, is told which buildsets of dead `sortie run`s the
	// reaper ended, in a line for people (Reaper.Say).
	Say io.Writer
	// Config returns the config in force; it is read at every decision.
	// After a reload, call ConfigChanged.
	Config func() *config.Config
	// Clock drives cron and polling; nil means the system clock.
	Clock trigger.Clock
	// Log gets the coordinator's log; nil means slog.Default().
	Log *slog.Logger
	// Grace is how long Stop lets running builds finish; 0 means
	// DefaultGrace.
	Grace time.Duration
	// Tick is how often the managers look at the queue even when nothing
	// woke them; 0 means one second.
	Tick time.Duration
	// Observer, when set, hears of passes and runs (metrics).
	Observer Observer
	// LeaderTTL is how long a leader's term lasts without a renewal; 0
	// means DefaultLeaderTTL. LeaderRetry is how often a follower asks to
	// lead; 0 means DefaultLeaderRetry. Tests shorten them.
	LeaderTTL, LeaderRetry time.Duration
	// LeaderClock, when set, is the elector's clock, also handed to the
	// store as the time of its elections and renewals (tests); nil means
	// the system's monotonic clock, and the store's own clock for the
	// row.
	LeaderClock trigger.Clock
	// Notices, when set, tells the claims that another process sharing
	// the store made work to claim (a PostgreSQL store's notifications);
	// they also look every ClaimPoll, 0 meaning DefaultClaimPoll.
	Notices   Notices
	ClaimPoll time.Duration
	// Reports, when set, sends the report deliveries of the store's outbox,
	// this process's and any other's: a service the coordinator starts
	// last and stops after the runs, and wakes whenever a run records
	// deliveries (it sets Runner.Reported).
	Reports Service
}

// Coordinator decides what runs when, for one `sortie serve` or `sortie
// run` (Options.Kind). Make it with
// New, Start it, and Stop it.
type Coordinator struct {
	// TestSignals let tests wait for what it did; a test calls their
	// Init before Start.
	TestSignals TestSignals

	opt    Options
	log    *slog.Logger
	st     Store
	reaper *Reaper
	ended  broker
	// slots are the executor's build slots, limits.max_parallel, shared by
	// every buildset this process runs; ConfigChanged resizes them.
	slots  *scheduler.Pool
	pauses atomic.Pointer[map[string]store.Pause]
	kick   chan struct{}
	// claimKick wakes the claims; claimMu makes claims one at a time.
	claimKick chan struct{}
	claimMu   sync.Mutex

	admission *loop
	triggers  *loop
	reaping   *loop
	// claiming is the claims service: every server's, while it has a
	// live lease.
	claiming *loop
	// elector campaigns for leadership (a server's); while this process
	// leads, term is the term it writes under, and the leader's work runs:
	// the managers, cron and polling, the reaper. leadMu orders their
	// starts and stops (elected, lost, ConfigChanged).
	elector *elector
	leadMu  sync.Mutex
	term    atomic.Pointer[store.Term]
	// lease watches the lease of each incarnation, and when it is lost
	// goes on as a new owner.
	lease *loop
	runs  *runs

	// lifeMu orders Start, the first step of Stop, and ConfigChanged's
	// restart of the triggers.
	lifeMu   sync.Mutex
	started  bool
	stopping atomic.Bool
	stopOnce sync.Once
	stopped  chan struct{} // closed once Stop has finished

	// passMu makes the managers' passes one at a time, including those
	// run by hand (Pass), so that decisions never race each other.
	passMu sync.Mutex
	// queue is the managers' view of the active buildsets (passMu).
	queue  queue
	planMu sync.Mutex
	// driftMu guards drift, the nodes CheckDrift last found running
	// another config than this one's, as it logged them.
	driftMu sync.Mutex
	drift   string
	// fpMu guards fpOf and fp: the fingerprint of the config last asked
	// for (ConfigFingerprint), computed once per config loaded.
	fpMu     sync.Mutex
	fpOf     *config.Config
	fp       string
	lastPlan pipeline.Plan
}

// New checks the options and makes a coordinator; it starts nothing.
func New(opt Options) (*Coordinator, error) {
	if opt.Store == nil || opt.Runner == nil || opt.Runner.Semaphores == nil || opt.Runner.Bastion == nil || opt.Runner.Mirror == nil || opt.Config == nil {
		return nil, errors.New("coordinator: Store, Runner (with its Semaphores, Bastion and Mirror) and Config are required")
	}
	if opt.Runner.Semaphores.Owner == "" {
		return nil, errors.New("coordinator: the Runner's Semaphores client has no Owner")
	}
	if opt.Clock == nil {
		opt.Clock = trigger.SystemClock()
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.Grace <= 0 {
		opt.Grace = DefaultGrace
	}
	if opt.Tick <= 0 {
		opt.Tick = time.Second
	}
	if opt.ClaimPoll <= 0 {
		opt.ClaimPoll = DefaultClaimPoll
	}
	sems := opt.Runner.Semaphores
	if opt.Reap <= 0 {
		opt.Reap = cmp.Or(sems.Lease, semaphore.DefaultLease) / 3
	}
	opt.Host = cmp.Or(opt.Host, hostname())
	opt.Node = cmp.Or(opt.Node, opt.Host)
	opt.Kind = cmp.Or(opt.Kind, store.OwnerNode)
	c := &Coordinator{
		opt: opt, log: opt.Log, st: opt.Store,
		kick: make(chan struct{}, 1), claimKick: make(chan struct{}, 1), stopped: make(chan struct{}),
		slots: scheduler.NewPool(opt.Config().Limits.MaxParallel),
	}
	sems.Identity = store.RegisterOwnerParams{
		Kind: opt.Kind, Node: opt.Node, Host: opt.Host, StateDir: opt.StateDir, Version: opt.Version,
		SlotsMax: c.slots.Max(),
	}
	sems.SlotsUsed = c.slots.InUse
	sems.SlotsMax = c.slots.Max
	if opt.Kind == store.OwnerNode {
		// A server's config is compared with the others' (CheckDrift);
		// a run's is its own business, and costs nothing to record.
		sems.Identity.ConfigFP = c.ConfigFingerprint()
		sems.ConfigFP = c.ConfigFingerprint
	}
	c.ended.signal = &c.TestSignals.Ended
	if w, ok := opt.Reports.(interface{ Wake() }); ok {
		opt.Runner.Reported = w.Wake
	}
	c.reaper = &Reaper{
		Store: opt.Store, Runner: opt.Runner, Self: c.Owner, Host: opt.Host, AnyHost: opt.AnyHost, End: c.endReaped, Say: opt.Say,
	}
	c.runs = &runs{c: c, m: map[string]*run{}}
	c.admission = &loop{name: "managers", run: c.dispatch}
	c.triggers = &loop{name: "triggers", run: c.runTriggers}
	c.reaping = &loop{name: "reaper", run: c.reapLoop}
	c.claiming = &loop{name: "claims", run: c.claimLoop}
	c.lease = &loop{name: "lease", run: c.watchLease}
	c.elector = &elector{
		st: opt.Store, fence: sems.Fence, fenced: sems.Fenced, elected: c.elected, lost: c.lostLead, log: opt.Log,
		ttl: cmp.Or(opt.LeaderTTL, DefaultLeaderTTL), retry: cmp.Or(opt.LeaderRetry, DefaultLeaderRetry),
		clock: cmp.Or(opt.LeaderClock, trigger.SystemClock()), storeClock: opt.LeaderClock != nil,
		signals: &c.TestSignals,
	}
	// The margin keeps a leader's own end of its term ahead of the row's
	// in the database: clock drift and a slow step-down fit in it.
	c.elector.margin = min(time.Second, c.elector.ttl/5)
	empty := map[string]store.Pause{}
	c.pauses.Store(&empty)
	return c, nil
}

// Owner is this process's owner id: this incarnation's.
func (c *Coordinator) Owner() string { return c.opt.Runner.Semaphores.Fence().Owner }

// Start registers this process as an owner (its semaphore client's
// Start), recovers what earlier processes on the state dir left
// (Options.StateDir), and starts the runs, the reaper, cron and polling,
// and the managers. A store that cannot be written for now (a full disk)
// is waited for until ctx is done. It fails, having stopped what it
// started, if the owner cannot be registered or the recovery fails; a
// Coordinator started once is not started again.
func (c *Coordinator) Start(ctx context.Context) error {
	c.lifeMu.Lock()
	if c.started {
		c.lifeMu.Unlock()
		return errors.New("coordinator: " + errStarted.Error())
	}
	c.started = true
	err := c.start(ctx)
	c.lifeMu.Unlock()
	if err != nil {
		c.Stop(context.WithoutCancel(ctx))
	}
	return err
}

// persist runs write until the store takes it (store.Persist), or ctx is
// done; what waits is said in the log.
func (c *Coordinator) persist(ctx context.Context, what string, write func() error) error {
	return store.Persist(ctx.Done(), time.Second,
		func(err error) { c.log.Error(what+" waits until the state can be written", "err", err) },
		func() { c.log.Info("the state can be written again: " + what + " goes on") },
		write)
}

func (c *Coordinator) start(ctx context.Context) error {
	sems := c.opt.Runner.Semaphores
	if c.opt.Kind != store.OwnerRun {
		if err := c.checkNodeName(ctx); err != nil {
			return err
		}
	}
	if err := c.persist(ctx, "registration", func() error { return sems.Start(ctx) }); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	c.TestSignals.Registered.Signal(sems.Owner)
	if c.opt.Kind == store.OwnerRun {
		// A run has no predecessor to recover, and does not go on after
		// its lease is lost: its runs stop, and the reapers end them.
		return c.reaping.Start(ctx)
	}
	if err := c.lease.Start(ctx); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if err := c.runs.Start(ctx); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if err := c.persist(ctx, "recovery", func() error { return c.recover(ctx) }); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := c.loadPauses(ctx); err != nil {
		return fmt.Errorf("coordinator: read pauses: %w", err)
	}
	if err := c.startServices(ctx); err != nil {
		return err
	}
	// Once, for the process: the worker sends any owner's deliveries, so
	// it goes on across a change of owner (reincarnate).
	if c.opt.Reports != nil {
		if err := c.opt.Reports.Start(ctx); err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
	}
	return nil
}

// startServices starts the claims, then the campaign for leadership: the
// managers, cron and polling, and the reaper run while this process leads
// (elected); a server alone on its store leads before it returns. The
// caller holds lifeMu.
func (c *Coordinator) startServices(ctx context.Context) error {
	if err := c.claiming.Start(ctx); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if err := c.elector.Start(ctx); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	return nil
}

// stopServices stops the claims and ends the campaign, which stops the
// leader's work and resigns a term held. The caller holds lifeMu.
func (c *Coordinator) stopServices(ctx context.Context) {
	c.claiming.Stop(ctx)
	c.elector.Stop(ctx)
	c.leadMu.Lock()
	defer c.leadMu.Unlock()
	for _, l := range c.leaderLoops() {
		l.Stop(ctx)
	}
}

// leaderLoops are the leader's work, in the order they start.
func (c *Coordinator) leaderLoops() []*loop { return []*loop{c.reaping, c.triggers, c.admission} }

// elected starts the leader's work for term (the elector's).
func (c *Coordinator) elected(ctx context.Context, term store.Term) {
	c.leadMu.Lock()
	defer c.leadMu.Unlock()
	c.term.Store(&term)
	if c.opt.Observer != nil {
		c.opt.Observer.Leading(term.Term, true)
	}
	for _, l := range c.leaderLoops() {
		if err := l.Start(ctx); err != nil {
			c.log.Error("leadership: start the leader's work", "err", err)
		}
	}
	c.wake()
}

// lostLead stops the leader's work once term is over for this process
// (the elector's): its contexts are cancelled, and it is waited for.
func (c *Coordinator) lostLead(term store.Term, why error) {
	c.leadMu.Lock()
	defer c.leadMu.Unlock()
	c.term.Store(nil)
	for _, l := range slices.Backward(c.leaderLoops()) {
		l.Stop(context.Background())
	}
	if c.opt.Observer != nil {
		c.opt.Observer.Leading(term.Term, false)
	}
}

// Leading returns the term this process leads for, or nil when it does
// not lead.
func (c *Coordinator) Leading() *store.Term { return c.term.Load() }

// reapLoop is the reaper service: a round at once, then one every
// Options.Reap.
func (c *Coordinator) reapLoop(ctx context.Context) {
	t := time.NewTicker(c.opt.Reap)
	defer t.Stop()
	for {
		if err := c.Reap(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("reap dead owners", "err", err)
		}
		if _, err := c.CheckDrift(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("compare the nodes' configs", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Reap makes one round of the reaper (Reaper.Reap): the owners whose lease
// ran out are fenced, and those this process can reach are ended and
// released, a dead `sortie run`'s buildsets ended through the single end
// path. The reaper service calls it; tests call it by hand.
func (c *Coordinator) Reap(ctx context.Context) error {
	_, err := c.reaper.Reap(ctx)
	return err
}

// watchLease waits for the lease of this incarnation to be lost, then goes
// on as a new owner (reincarnate), for as long as the coordinator runs.
func (c *Coordinator) watchLease(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.opt.Runner.Semaphores.Lost():
		}
		c.log.Error("this process's lease is lost: its runs stop, writing nothing more, and it goes on as a new owner",
			"owner", c.Owner(), "err", c.opt.Runner.Semaphores.Err())
		for {
			err := c.reincarnate(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			c.log.Error("go on as a new owner", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// reincarnate goes on after the lease was lost: the managers, cron,
// polling and the reaper stop, the runs (cancelled with
// semaphore.ErrLeaseLost by the loss) are waited for, then the process
// registers as a new owner, on the semaphore client and the bastion, and
// recovers what the old one left, as a successor on the state dir would:
// the old owner is one of its predecessors. The services start again. A
// shutdown that begins meanwhile stops it.
func (c *Coordinator) reincarnate(ctx context.Context) error {
	sems := c.opt.Runner.Semaphores
	c.lifeMu.Lock()
	if c.stopping.Load() {
		c.lifeMu.Unlock()
		return nil
	}
	c.stopServices(ctx)
	c.lifeMu.Unlock()
	// A retry after a failed recovery finds the new owner registered.
	if c.lostNow() {
		c.runs.halt(semaphore.ErrLeaseLost)
		sems.Stop()
		owner := NewOwner()
		if err := c.opt.Runner.Bastion.SetOwner(owner); err != nil {
			return err
		}
		old := sems.Owner
		sems.Owner = owner
		if err := c.persist(ctx, "registration", func() error { return sems.Start(ctx) }); err != nil {
			return err
		}
		c.log.Info("registered as a new owner", "owner", owner, "was", old)
		c.TestSignals.Registered.Signal(owner)
		c.runs.reopen(ctx)
	}
	if err := c.persist(ctx, "recovery", func() error { return c.recover(ctx) }); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopping.Load() {
		return nil
	}
	return c.startServices(ctx)
}

// lostNow reports whether this incarnation's lease is lost.
func (c *Coordinator) lostNow() bool {
	select {
	case <-c.opt.Runner.Semaphores.Lost():
		return true
	default:
		return false
	}
}

// errShutdown is the cause of the cancel of the builds still running when
// the grace period of a shutdown is over.
var errShutdown = errors.New("sortie serve shut down")

// Stop shuts down in two steps. First it takes no more work: cron,
// polling and the managers stop, and running buildsets start no new
// attempt (Loop.Drain) while the ones running finish, until the grace
// period is over or ctx is done. Then it cancels what still runs, with
// errShutdown as the cause, and always waits for it: those builds, and
// their buildsets, end CANCELED. A buildset drained (its running builds
// done, the next not started) is left RUNNING in the store for the next
// start, or another server, to resume. Then it stops the report worker
// and the semaphore lease, and last, a server's, hands its owner over
// (handOver): the other servers claim its buildsets at once instead of
// once its lease has run out. Stop is safe to call twice (the second
// call waits for the first) and before Start (it does nothing).
func (c *Coordinator) Stop(ctx context.Context) {
	c.lifeMu.Lock()
	if !c.started {
		c.lifeMu.Unlock()
		return
	}
	first := false
	c.stopOnce.Do(func() { first = true })
	if !first {
		c.lifeMu.Unlock()
		<-c.stopped
		return
	}
	c.stopping.Store(true)
	c.log.Info("shutting down: no new builds start; waiting for running ones", "grace", c.opt.Grace)
	c.lifeMu.Unlock()
	// The lease's watcher first: once it has returned, nothing starts
	// the services again.
	c.lease.Stop(ctx)
	c.lifeMu.Lock()
	c.stopServices(ctx)
	c.lifeMu.Unlock()
	c.runs.Stop(ctx)
	if c.opt.Reports != nil {
		// After the runs: what their last ends recorded may go out.
		c.opt.Reports.Stop(ctx)
	}
	c.opt.Runner.Semaphores.Stop()
	c.handOver(ctx)
	close(c.stopped)
}

// Stopping reports whether a shutdown has begun: buildsets made from now
// on wait, unseen, for the next start.
func (c *Coordinator) Stopping() bool { return c.stopping.Load() }

// ConfigChanged applies a config newly in force (Options.Config returns
// it): the slots take its limits.max_parallel, cron and polling restart
// from it, and the managers look at the queue again. Buildsets keep the
// graph and spec they were made with.
func (c *Coordinator) ConfigChanged() {
	c.slots.SetMax(c.opt.Config().Limits.MaxParallel)
	c.wakeClaims()
	c.leadMu.Lock()
	if c.triggers.running() {
		// One restart at a time (lifeMu): two interleaved would leave a
		// set of triggers running that nothing stops.
		ctx := context.Background()
		c.triggers.Stop(ctx)
		if err := c.triggers.Start(ctx); err != nil {
			c.log.Error("restart cron and polling", "err", err)
		}
	}
	c.leadMu.Unlock()
	c.wake()
}

// Status is what the coordinator says of itself, for the API.
type Status struct {
	// SlotsInUse and SlotsMax are the executor's build slots.
	SlotsInUse, SlotsMax int
	// Plan is the managers' latest decision.
	Plan pipeline.Plan
	// Stopping is set once a shutdown has begun.
	Stopping bool
	// Leader is set while this process leads, for Term.
	Leader bool
	Term   int64
}

// Status returns the coordinator's status now.
func (c *Coordinator) Status() Status {
	c.planMu.Lock()
	plan := c.lastPlan
	c.planMu.Unlock()
	st := Status{SlotsInUse: c.slots.InUse(), SlotsMax: c.slots.Max(), Plan: plan, Stopping: c.Stopping()}
	if t := c.Leading(); t != nil {
		st.Leader, st.Term = true, t.Term
	}
	return st
}

// ConfigFingerprint is the fingerprint of the config in force, computed once
// per config loaded: a large config takes longer to fingerprint than to
// load, and every lease renewal records it.
func (c *Coordinator) ConfigFingerprint() string {
	cfg := c.opt.Config()
	c.fpMu.Lock()
	defer c.fpMu.Unlock()
	if c.fpOf != cfg {
		c.fpOf, c.fp = cfg, cfg.Fingerprint()
	}
	return c.fp
}

// wake asks the managers to look at the queue now.
func (c *Coordinator) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}
