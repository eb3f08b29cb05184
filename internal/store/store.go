// Package store defines what Sortie keeps: buildsets, builds, attempts,
// semaphore holders and waiters, job duration history, operators' pauses
// and the marks of triggers. Implementations live in sub-packages (sqlite,
// postgres) and all pass the conformance suite in storetest.
//
// Every process that shares one store (two `sortie run` on one state dir,
// several servers on one database) shares its semaphores: holders and
// waiters are rows, each owned by a process whose lease must be renewed.
// A process registers as an owner (Owners.RegisterOwner) before it writes
// anything of its own, and every write of its work carries its Fence: once
// its lease has run out and another process has fenced it, those writes
// are refused with ErrFenced and change nothing.
//
// The interfaces follow the roles of their users (Buildsets, Semaphores,
// Owners, Leadership, Pauses, Triggers, Outbox, Logs); Store embeds them
// all. A store keeps and locks; it decides nothing: which request a
// semaphore goes to is semaphore.Decide's, applied through
// UpdateSemaphores.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// ErrNotFound is returned when a buildset or build does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a compare-and-swap transition finds the row
// in another state than expected (for example finishing a build twice).
var ErrConflict = errors.New("state conflict")

// ErrUnavailable is wrapped by a write the store refused for now, not for
// what it asked (its disk is full, an I/O error): the same write may
// succeed later. Callers that must not act on a state before it is
// recorded try it again rather than go on without it.
var ErrUnavailable = errors.New("the store cannot be written for now")

// ErrFenced is returned by a write whose Fence is not its owner's live
// one: the owner's lease ran out and another process fenced it (and may
// have taken over its work), or the owner was never registered. The
// write changed nothing. The process that gets it stops writing for that
// owner: it cancels its runs and waits for them (semaphore.ErrLeaseLost),
// then registers again as a new owner, or exits.
var ErrFenced = errors.New("fenced: this owner's lease was taken away, and its work may have been taken over")

// Persist runs write until it returns anything but ErrUnavailable: a write
// the store refused for now is tried again after delay, doubling up to
// 10 s, until giveUp is closed, when the refusal is returned. waiting, if
// set, hears of the first refusal, and recovered of the write taken after
// one.
func Persist(giveUp <-chan struct{}, delay time.Duration, waiting func(error), recovered func(), write func() error) error {
	refused := false
	for {
		err := write()
		if !errors.Is(err, ErrUnavailable) {
			if refused && err == nil && recovered != nil {
				recovered()
			}
			return err
		}
		if !refused && waiting != nil {
			waiting(err)
		}
		refused = true
		t := time.NewTimer(delay)
		select {
		case <-giveUp:
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// BuildsetState is where a buildset is in its life.
type BuildsetState string

const (
	// BuildsetQueued: created, waiting for its pipeline's manager to
	// release it (`sortie run` starts it directly).
	BuildsetQueued BuildsetState = "QUEUED"
	// BuildsetAdmitted: released by its pipeline's manager, waiting for its
	// pipeline semaphore; no build runs yet.
	BuildsetAdmitted BuildsetState = "ADMITTED"
	// BuildsetRunning: its builds are being scheduled.
	BuildsetRunning BuildsetState = "RUNNING"
	// BuildsetDone: finished; Result is set.
	BuildsetDone BuildsetState = "DONE"
)

// BuildState is where a build is in its life.
type BuildState string

const (
	// BuildWaiting: not started yet (dependencies, slot or semaphore).
	BuildWaiting BuildState = "WAITING"
	// BuildRunning: an attempt is running.
	BuildRunning BuildState = "RUNNING"
	// BuildDone: finished; Result is set.
	BuildDone BuildState = "DONE"
)

// Result is the outcome of a build or buildset (SPEC §2.4).
type Result string

const (
	// Success: the job's command exited 0 (for a buildset: every selected job succeeded).
	Success Result = "SUCCESS"
	// Failure: the job's own command failed; not retried.
	Failure Result = "FAILURE"
	// Skipped: a build never started because a dependency did not
	// succeed; a buildset selected no job (SPEC §2.2) and did nothing.
	Skipped Result = "SKIPPED"
	// TimedOut: the job ran past its timeout and its process tree was ended.
	TimedOut Result = "TIMED_OUT"
	// Canceled: an operator or a signal cancelled it.
	Canceled Result = "CANCELED"
	// RetryLimit: every attempt failed to reach or prepare the bastion.
	RetryLimit Result = "RETRY_LIMIT"
	// Error: Sortie itself could not run it (deadlock, lost build, store failure).
	Error Result = "ERROR"
	// ConfigError: the buildset's graph could not be made (SPEC §2.2).
	ConfigError Result = "CONFIG_ERROR"
	// Lost: an attempt whose process died; set on attempts only.
	Lost Result = "LOST"
	// Retry: an attempt that could not reach or prepare the bastion and was
	// tried again; set on attempts only.
	Retry Result = "RETRY"
)

// Buildset is one run of a pipeline at one commit. Its life is QUEUED ->
// ADMITTED -> RUNNING -> DONE; QUEUED -> RUNNING (`sortie run`) and
// QUEUED or ADMITTED -> DONE (an error or a cancel before it ran) are
// allowed too.
type Buildset struct {
	ID string
	// Seq is the arrival order, assigned by CreateBuildset: strictly
	// increasing across the store, whatever CreatedAt says.
	Seq      int64
	Pipeline string
	Commit   string
	// Files are the changed files; nil when the event had no file list.
	Files  []string
	State  BuildsetState
	Result Result // "" until Done
	Error  string
	// Plan is the frozen job graph (graph.Plan as JSON), kept so a buildset
	// always runs the graph it was created with.
	Plan []byte
	// Spec is an opaque JSON document (the frozen job specs), kept as
	// given; nil when there is none.
	Spec []byte
	// Mode is an opaque JSON document (how the buildset runs its
	// playbooks: check mode, a host limit), kept as given apart from
	// Spec, which also holds it, so that a list of buildsets shows it
	// without reading every spec. nil for a buildset made without one
	// (by a Sortie older than the column): a read that leaves Spec out
	// then gives Spec, for the reader to find the mode there.
	Mode []byte
	// Cause says what made the buildset: "push to main by github",
	// "cron", "manual"...
	Cause string
	// RerunOf is the ID of the buildset this one runs again, or "".
	RerunOf string
	// Owner is the process that runs it; "" while QUEUED, and while
	// ADMITTED or RUNNING with no server to run it (not claimed yet, or
	// its owner released: see ClaimBuildsets).
	Owner string
	// PinnedTo is the `sortie run` that made the buildset to run it
	// itself: only that owner starts it (StartBuildset), in its turn, and
	// a server's managers never start, supersede or merge it. "" for a
	// buildset any server's managers decide for.
	PinnedTo   string
	CreatedAt  time.Time
	StartedAt  *time.Time
	FinishedAt *time.Time
}

// AwaitsManagers reports whether the buildset waits for a server's
// managers to start it: QUEUED and not pinned to a `sortie run`, which
// starts it itself.
func (b *Buildset) AwaitsManagers() bool { return b.State == BuildsetQueued && b.PinnedTo == "" }

// BuildsetCursor marks how far a reader of the buildsets' changes has read
// (Buildsets.ChangedBuildsets). Its value means something only to the
// store that gave it; zero is before any read.
type BuildsetCursor int64

// BuildsetChanges is what one read of the buildsets' changes found.
type BuildsetChanges struct {
	// Buildsets are the buildsets read, without Plan, and without Spec
	// unless Mode is nil; oldest first.
	Buildsets []*Buildset
	// Cursor is where the next read starts.
	Cursor BuildsetCursor
}

// Build is one job of a buildset; its attempts are kept separately.
type Build struct {
	BuildsetID string
	Job        string
	State      BuildState
	Result     Result // "" until Done
	// Attempt is the number of the latest attempt, 0 if it never started.
	Attempt    int
	StartedAt  *time.Time // first attempt's start
	FinishedAt *time.Time
	Log        string // the latest attempt's log
	Reason     string // why it was skipped, cancelled or errored
}

// Attempt is one try at running a build.
type Attempt struct {
	BuildsetID string
	Job        string
	Number     int // from 1
	Owner      string
	StartedAt  time.Time
	FinishedAt *time.Time
	Result     Result // "" while running
	Log        string // its log file; "" for a log kept in the store (Logs)
	Error      string
}

// Filter selects buildsets for ListBuildsets. Zero fields do not filter.
type Filter struct {
	Pipeline string
	// Commit matches the full commit id exactly.
	Commit string
	Result Result
	State  BuildsetState
	// Before returns only buildsets created strictly before this ID's
	// buildset (pagination, newest first).
	Before string
	Limit  int // 0: 50
}

// Holder is a row of a semaphore's holders: a request granted
// (semaphore.Request).
type Holder struct {
	Semaphore  string    `json:"semaphore"`
	Holder     string    `json:"holder"`
	Buildset   string    `json:"buildset"`
	Owner      string    `json:"owner"`
	AcquiredAt time.Time `json:"acquired_at"`
}

// Waiter is a row of a semaphore's waiters: a request not granted yet. Its
// Precedence and Since rank it (semaphore.Decide).
type Waiter struct {
	Semaphore  string    `json:"semaphore"`
	Holder     string    `json:"holder"`
	Buildset   string    `json:"buildset"`
	Owner      string    `json:"owner"`
	Precedence int       `json:"precedence"`
	Since      time.Time `json:"since"`
}

// DeliveryClaim is a webhook delivery to record (Store.ClaimDelivery).
type DeliveryClaim struct {
	// ID names the delivery: its forge and the forge's delivery id,
	// "github/72d3162e-cc78-11e3-81ab-4c9367dc0958".
	ID string
	// At is when it was received.
	At time.Time
	// ForgetBefore: deliveries received before it are forgotten; zero
	// forgets none by age.
	ForgetBefore time.Time
	// Keep is how many deliveries are kept at most, the newest (this one
	// included); 0 keeps any number.
	Keep int
}

// Pause is an operator's pause of one pipeline, or of all when Pipeline is "".
type Pause struct {
	Pipeline string
	By       string
	Reason   string
	At       time.Time
}

// Fence is one owner incarnation's right to write: the owner and the epoch
// RegisterOwner gave it. Writes that a process makes for the work it owns
// carry it, and the store refuses them with ErrFenced, changing nothing,
// unless the owner is live with that epoch (see Owners). A row a fenced
// write inserts is the Fence's owner's.
type Fence struct {
	Owner string
	Epoch int64
}

// FencedCounter counts the writes a store refused with ErrFenced (a
// renewal of a lost lease is not a write, and is not counted). A store
// embeds it and counts each transaction that ends so (CountFenced); its
// FencedWrites feeds the metrics.
type FencedCounter struct{ n atomic.Int64 }

// CountFenced counts err if it is an ErrFenced.
func (c *FencedCounter) CountFenced(err error) {
	if errors.Is(err, ErrFenced) {
		c.n.Add(1)
	}
}

// FencedWrites is how many writes were refused with ErrFenced.
func (c *FencedCounter) FencedWrites() int64 { return c.n.Load() }

// OwnerKind says what kind of process an owner is.
type OwnerKind string

const (
	// OwnerNode is a `sortie serve`: when it dies, its buildsets are
	// adopted and resumed by a successor.
	OwnerNode OwnerKind = "node"
	// OwnerRun is a `sortie run`: it has no successor, so when it dies
	// its buildsets are ended, never resumed.
	OwnerRun OwnerKind = "run"
)

// OwnerState is where an owner is in its life, which only goes forward:
// live -> fenced -> ended -> released, each step a compare-and-swap.
type OwnerState string

const (
	// OwnerLive: it renews its lease, and its fenced writes are taken.
	OwnerLive OwnerState = "live"
	// OwnerFenced: its lease ran out (or a successor proved it dead) and
	// its writes are refused; what it left running on the bastion may
	// still run.
	OwnerFenced OwnerState = "fenced"
	// OwnerEnded: what it left running on the bastion has been ended.
	OwnerEnded OwnerState = "ended"
	// OwnerReleased: its waiters and holders are gone, but those kept
	// for its buildsets' adopters.
	OwnerReleased OwnerState = "released"
)

// Owner is one process incarnation that owns buildsets, holders and
// waiters: a `sortie serve` (node) or a `sortie run`.
type Owner struct {
	// ID names it in the store and on the bastion (bastion.CheckOwner).
	ID   string
	Kind OwnerKind
	// Node is a server's node name, a run's host name.
	Node string
	// Host is the host its local-bastion builds run on.
	Host string
	// StateDir is the state directory it ran on, absolute.
	StateDir string
	// Epoch is its fencing token: given at registration, a new one when
	// it is fenced; every epoch given is above every earlier one.
	Epoch int64
	State OwnerState
	// StartedAt is when it registered, RenewedAt its last renewal,
	// ExpiresAt when its lease runs out (inclusive).
	StartedAt, RenewedAt, ExpiresAt time.Time
	Version                         string
	// ConfigFP is the fingerprint of the config it runs with.
	ConfigFP string
	// SlotsMax and SlotsUsed are its build slots, as it last said.
	SlotsMax, SlotsUsed int
}

// Alive reports whether the owner is live and its lease runs at now.
func (o *Owner) Alive(now time.Time) bool {
	return o.State == OwnerLive && !o.ExpiresAt.Before(now)
}

// Store is what Sortie keeps: every role below, for the wiring of a
// process and for the conformance suite. A part that uses a few roles
// declares the interface it needs instead (buildset.Store,
// semaphore.Store). Implementations are safe for concurrent use by several
// goroutines and several processes sharing the same database.
type Store interface {
	Buildsets
	Semaphores
	Owners
	Leadership
	Pauses
	Triggers
	Outbox
	Logs
	Hosts
	// Close releases the store's resources.
	Close() error
}

// Buildsets keeps buildsets, their builds and attempts, and the history of
// job durations drawn from them.
type Buildsets interface {
	// CreateBuildset inserts a QUEUED buildset, with no Owner, and a
	// WAITING build for each of p.Jobs, and sets p.Buildset.Seq. Its
	// PinnedTo is kept: a process that makes a buildset to run it itself
	// (`sortie run`) names itself, and no other process starts it. With p.ConfigError (or p.Skipped)
	// set, the buildset is made DONE with CONFIG_ERROR (or SKIPPED) in the
	// same transaction (see CreateBuildsetParams).
	CreateBuildset(ctx context.Context, p CreateBuildsetParams) error
	// GetBuildset returns ErrNotFound for an unknown id.
	GetBuildset(ctx context.Context, id string) (*Buildset, error)
	// GetBuildsetLight is GetBuildset for a reader of what the lists
	// show: the buildset as ListBuildsets gives it, without Plan, and
	// without Spec unless Mode is nil.
	GetBuildsetLight(ctx context.Context, id string) (*Buildset, error)
	// ListBuildsets returns buildsets newest first, without Plan, and
	// without Spec unless Mode is nil. A list is for showing buildsets;
	// GetBuildset gives one whole.
	ListBuildsets(ctx context.Context, f Filter) ([]*Buildset, error)
	// ActiveBuildsets returns every buildset not DONE (QUEUED, ADMITTED,
	// RUNNING), oldest first (by Seq).
	ActiveBuildsets(ctx context.Context) ([]*Buildset, error)
	// ChangedBuildsets reads what changed in the buildsets after the read
	// that gave since: the buildsets made, and those whose State, Owner
	// or PinnedTo changed, DONE ones included (for the reader to drop).
	// A zero since reads every buildset not DONE instead. Either way the
	// buildsets come without Plan, and without Spec unless Mode is nil
	// (both never change), oldest
	// first (by Seq), with the cursor of the next read. Every change that
	// a read did not see (its transaction committed after the read) is
	// in the next read from that read's cursor, from any process sharing
	// the store; a read may also return buildsets that earlier reads
	// returned, changed or not. So a reader that reads everything once,
	// then each time from the cursor of its last read, keeps a true view
	// of the active buildsets at the cost of what changed.
	ChangedBuildsets(ctx context.Context, since BuildsetCursor) (*BuildsetChanges, error)
	// AdmitBuildset moves QUEUED -> ADMITTED, with no owner: any server
	// may claim it (ClaimBuildsets). f is the admitting process's, which
	// must be live (ErrFenced). It is ErrConflict for a buildset not
	// QUEUED or pinned to a run. A store that several processes share
	// tells them (TopicClaims).
	AdmitBuildset(ctx context.Context, id string, f Fence, at time.Time) error
	// StartBuildset moves QUEUED or ADMITTED -> RUNNING, its owner
	// p.Fence's, and records p.Reports, in one transaction; or it is
	// ErrConflict (also for a buildset pinned to another owner), or
	// ErrFenced for a fence not live.
	StartBuildset(ctx context.Context, p StartBuildsetParams) error
	// EndBuildset is the only way a buildset becomes DONE after it was
	// made, in one transaction: every running attempt gets
	// p.AttemptResult, every build not DONE its result (see
	// EndBuildsetParams), the buildset p.Result, its semaphore holders
	// and waiters are dropped, and p.Reports are recorded. ended is
	// false, and nothing changes, when
	// the buildset was DONE already; an unknown id is ErrNotFound.
	EndBuildset(ctx context.Context, p EndBuildsetParams) (ended bool, err error)
	// ClaimBuildsets gives p.Fence's owner buildsets that no process
	// runs, to run, up to p.Max (see ClaimParams): RUNNING ones with no
	// owner (a dead server's, released by ReleaseOwner) first, then
	// ADMITTED ones with no owner, each oldest first (by Seq); never one
	// pinned to a run. In the same transaction their semaphore holders
	// and waiters become the claimer's: a pipeline semaphore kept for a
	// running buildset is never free in between. Rows another transaction
	// is claiming are skipped, not waited for, so two servers never claim
	// one buildset. It returns the buildsets claimed, running ones first;
	// ErrFenced for a fence not live.
	ClaimBuildsets(ctx context.Context, p ClaimParams) ([]*Buildset, error)

	// RequestCancel asks the owner of a buildset not DONE to cancel it,
	// for a process that does not run it (another server got the API
	// call): it records by, and a store that several processes share
	// tells them (TopicCancels). A DONE buildset is ErrConflict, an
	// unknown one ErrNotFound.
	RequestCancel(ctx context.Context, id, by string) error
	// CancelRequests returns the cancels asked (RequestCancel) of the
	// buildsets owner runs, not DONE, oldest first.
	CancelRequests(ctx context.Context, owner string) ([]CancelRequest, error)

	// Builds returns the builds of a buildset in creation order.
	Builds(ctx context.Context, buildsetID string) ([]*Build, error)
	// Build returns the build of job in a buildset, or ErrNotFound when
	// the buildset has none (or is unknown): one row, where Builds reads
	// them all.
	Build(ctx context.Context, buildsetID, job string) (*Build, error)
	// StartAttempt moves the build WAITING or RUNNING (a retry) -> RUNNING,
	// sets its Attempt and Log, and inserts the attempt row.
	StartAttempt(ctx context.Context, p StartAttemptParams) error
	// FinishAttempt sets the result of a running attempt, or ErrConflict.
	FinishAttempt(ctx context.Context, p FinishAttemptParams) error
	// FinishBuild moves WAITING or RUNNING -> DONE with its result and
	// reason, or ErrConflict if it is already DONE. A build that never
	// started (SKIPPED, or CANCELED while it waited) keeps null times,
	// whatever p.At says.
	FinishBuild(ctx context.Context, p FinishBuildParams) error
	// FinishAttemptAndBuild is FinishAttempt then FinishBuild, in one
	// transaction: both happen or neither (the end of a build's last
	// attempt is the end of the build). a and b name the same build.
	FinishAttemptAndBuild(ctx context.Context, a FinishAttemptParams, b FinishBuildParams) error
	// WriteBuilds makes writes in order in one transaction: all of them,
	// or none when one fails, whose error (as its own method would return
	// it, StartAttempt, FinishAttempt or FinishBuild) is returned. A run
	// records with it a build's end and the start of the builds that
	// follow in one commit. A store may make the writes durable first and
	// apply them to what it reads from later (SQLite's journal), when it
	// knows they apply: it reads them first itself, and a refusal met
	// when they are applied (a fence taken meanwhile) is the error of the
	// buildset's next WriteBuilds.
	WriteBuilds(ctx context.Context, writes []BuildWrite) error
	// Attempts returns a build's attempts in order.
	Attempts(ctx context.Context, buildsetID, job string) ([]*Attempt, error)
	// RunningAttempts returns the attempts of a buildset that have not
	// finished, by job then number.
	RunningAttempts(ctx context.Context, buildsetID string) ([]*Attempt, error)

	// JobDurations returns, for each named job that has history, the median
	// duration of its last 5 successful attempts (any pipeline).
	JobDurations(ctx context.Context, jobs []string) (map[string]time.Duration, error)
}

// CreateBuildsetParams is a buildset to make.
type CreateBuildsetParams struct {
	// Buildset is kept as given but for its state, result and Seq; its
	// ID and CreatedAt must be set.
	Buildset *Buildset
	// Jobs get one WAITING build each, in this order.
	Jobs []string
	// ConfigError, when set, is why the buildset's graph could not be made
	// (SPEC §2.2): the buildset is made DONE with CONFIG_ERROR and this as
	// its Error, with no builds (Jobs must be empty) and the FinishedAt
	// of Buildset (nil stays nil).
	ConfigError string
	// Skipped, when set, is why the buildset selects no job (SPEC §2.2:
	// "no job matched the changed files"): the buildset is made DONE with
	// SKIPPED and this as its Error, keeping its Plan, with no builds
	// (Jobs must be empty) and the FinishedAt of Buildset. At most one of
	// ConfigError and Skipped is set.
	Skipped string
	// Reports are recorded with the buildset (those of a buildset made
	// DONE at once).
	Reports []NewReportDelivery
	// Cron, when set, claims a cron tick of the buildset's pipeline in the
	// same transaction: a tick claimed already makes no buildset
	// (ErrTickTaken), so that a tick fires once across processes and
	// leader changes.
	Cron *CronTick
	// Poll, when set, swaps a poller's last-seen head in the same
	// transaction: a mark that does not hold Poll.Old any more makes no
	// buildset (ErrMarkChanged).
	Poll *MarkSwap
	// Term, when set, is the leader's term the buildset is made under:
	// unless the leader row still holds it (same owner, same term), the
	// buildset is not made (ErrNotLeader). Its Term is recorded with a
	// Cron tick.
	Term *Term
}

// CronTick is a tick of a pipeline's cron trigger, claimed with the
// buildset it fires (CreateBuildsetParams.Cron).
type CronTick struct {
	// Tick is the tick's scheduled time, without jitter.
	Tick time.Time
}

// MarkSwap is a compare-and-set of a trigger's mark: Key holds Old ("" for
// a mark not set) and becomes New.
type MarkSwap struct {
	Key, Old, New string
}

// ErrTickTaken is CreateBuildset with a cron tick claimed before, by this
// process or another: someone fired it already, and nothing was made.
var ErrTickTaken = errors.New("cron tick fired already")

// ErrMarkChanged is CreateBuildset with a mark swap whose mark no longer
// holds the old value: another process moved it, and nothing was made.
var ErrMarkChanged = errors.New("trigger mark changed meanwhile")

// StartBuildsetParams is a buildset to start.
// EndBuildsetParams say how a buildset ends and what becomes of what it
// left unfinished. Builds and attempts finished already keep their
// results.
type EndBuildsetParams struct {
	ID string
	// Result and Error are the buildset's.
	Result Result
	Error  string
	// BuildResult is given, with Reason, to every build that never
	// started (WAITING), and, unless StartedResult is set, to every build
	// with an attempt started (RUNNING).
	BuildResult   Result
	StartedResult Result
	// AttemptResult is given, with Reason as its error, to every attempt
	// still running (a dead process's); "" means BuildResult.
	AttemptResult Result
	Reason        string
	// At is when it ended: every FinishedAt set here; a zero At leaves
	// them nil. A build that never started keeps null times.
	At time.Time
	// Fence is the right to write of the process that runs the buildset,
	// checked (ErrFenced); nil for one that nobody runs (a queued buildset
	// cancelled, a dead run's buildset reaped).
	Fence *Fence
	// Reports are recorded with the end, if the buildset ends.
	Reports []NewReportDelivery
}

// StartBuildsetParams is a buildset to record as started.
type StartBuildsetParams struct {
	ID string
	// Fence is the right to write of the owner that runs it, which
	// becomes its Owner.
	Fence Fence
	// At is its StartedAt; a zero At leaves it nil.
	At time.Time
	// Reports are recorded with the start.
	Reports []NewReportDelivery
}

// StartAttemptParams is an attempt to record as started.
type StartAttemptParams struct {
	// Attempt is recorded as given but for its result and FinishedAt.
	Attempt *Attempt
	// Fence is the right to write of Attempt.Owner, which must be its
	// owner.
	Fence Fence
}

// BuildWrite is one write of Buildsets.WriteBuilds: exactly one field is
// set.
type BuildWrite struct {
	Start         *StartAttemptParams
	FinishAttempt *FinishAttemptParams
	FinishBuild   *FinishBuildParams
}

// Check refuses a write that no store could make, whatever it holds: a
// start without an attempt, a number or a time, or whose owner is not its
// fence's; an end without a result; a write with no field set. The error
// names the write.
func (w BuildWrite) Check() error {
	switch {
	case w.Start != nil:
		a := w.Start.Attempt
		switch {
		case a == nil:
			return errors.New("start attempt: nil attempt")
		case a.Number < 1:
			return fmt.Errorf("start attempt %s/%s #%d: number must be at least 1", a.BuildsetID, a.Job, a.Number)
		case a.StartedAt.IsZero():
			return fmt.Errorf("start attempt %s/%s #%d: StartedAt is zero", a.BuildsetID, a.Job, a.Number)
		case a.Owner != w.Start.Fence.Owner:
			return fmt.Errorf("start attempt %s/%s #%d: owner %q is not the fence's %q", a.BuildsetID, a.Job, a.Number, a.Owner, w.Start.Fence.Owner)
		}
	case w.FinishAttempt != nil:
		if p := w.FinishAttempt; p.Result == "" {
			return fmt.Errorf("finish attempt %s/%s #%d: empty result", p.BuildsetID, p.Job, p.Number)
		}
	case w.FinishBuild != nil:
		if p := w.FinishBuild; p.Result == "" {
			return fmt.Errorf("finish build %s/%s: empty result", p.BuildsetID, p.Job)
		}
	default:
		return errors.New("write builds: an empty write")
	}
	return nil
}

// Fence is the fence of the write.
func (w BuildWrite) Fence() Fence {
	switch {
	case w.Start != nil:
		return w.Start.Fence
	case w.FinishAttempt != nil:
		return w.FinishAttempt.Fence
	case w.FinishBuild != nil:
		return w.FinishBuild.Fence
	}
	return Fence{}
}

// FinishAttemptParams is the end of one attempt of a build.
type FinishAttemptParams struct {
	BuildsetID string
	Job        string
	Number     int
	Result     Result
	Error      string
	// At is the attempt's FinishedAt; a zero At leaves it nil.
	At time.Time
	// Fence is the writer's right to write.
	Fence Fence
}

// FinishBuildParams is the end of one build.
type FinishBuildParams struct {
	BuildsetID string
	Job        string
	Result     Result
	Reason     string
	// At is the build's FinishedAt; a zero At leaves it nil, and a build
	// that never started keeps null times whatever At says.
	At time.Time
	// Fence is the writer's right to write.
	Fence Fence
}

// Semaphores keeps the holders and waiters of semaphores: rows shared by
// every process on the store, each owned by a process (Owners).
type Semaphores interface {
	// UpdateSemaphores locks the semaphores p.Names against every other
	// UpdateSemaphores of any of them, in any process, reads their holders
	// and waiters (each waiter with whether its owner is alive at p.Now),
	// calls decide with what it read, and applies the change decide
	// returns; all of it or, if decide or any write fails, none of it. A
	// change touching a semaphore not in p.Names is refused. decide runs
	// with the locks held: it must be quick and do no I/O, and it may run
	// again if the store retries the transaction; only the change of the
	// last run is applied.
	//
	// Holder and waiter rows are inserted only here, under their
	// semaphore's lock (deletes happen anywhere): a decision can only find
	// less room than there is, never more.
	UpdateSemaphores(ctx context.Context, p LockSemaphoresParams, decide func(SemaphoreView) (SemaphoreChange, error)) error
	// ReleaseSemaphores drops the holder's holds and waits that are f's
	// owner's, or, f not live, nothing (ErrFenced). Releasing what is not
	// held is not an error.
	ReleaseSemaphores(ctx context.Context, holder string, f Fence) error
	// ReleaseBuildset drops every hold and wait of a buildset that is f's
	// owner's, or, f not live, nothing (ErrFenced).
	ReleaseBuildset(ctx context.Context, buildsetID string, f Fence) error
	// Holders and Waiters list the current rows, by semaphore then time.
	Holders(ctx context.Context) ([]Holder, error)
	Waiters(ctx context.Context) ([]Waiter, error)
}

// LockSemaphoresParams name the semaphores UpdateSemaphores locks and
// reads.
type LockSemaphoresParams struct {
	// Names are the semaphores locked; the change may touch only their
	// rows.
	Names []string
	// Now is when each waiter's owner is judged alive; it must be set.
	Now time.Time
	// Fence is the right to write of the owner of the rows the change
	// inserts: every row added must be its owner's. A Fence given that
	// is not live is refused with ErrFenced, applying nothing, and so is
	// a change that adds rows without one; a change that only drops
	// (dead waiters) needs none.
	Fence Fence
}

// SemaphoreView is what UpdateSemaphores read of the locked semaphores:
// every holder and waiter row of them, by semaphore then time then
// holder.
type SemaphoreView struct {
	Now     time.Time
	Holders []Holder
	Waiters []WaiterView
}

// WaiterView is a waiter row, and whether its owner was alive at the
// view's Now: live, and its lease not ended (Owner.Alive).
type WaiterView struct {
	Waiter
	Alive bool
}

// WaiterKey names a waiter row.
type WaiterKey struct {
	Semaphore string
	Holder    string
}

// SemaphoreChange is what UpdateSemaphores applies, in this order: the
// waiters dropped, then the holders added, then the waiters added.
type SemaphoreChange struct {
	// DropWaiters are deleted; a row that is not there is not an error.
	DropWaiters []WaiterKey
	// AddHolders are inserted; a holder row that exists already fails the
	// whole change.
	AddHolders []Holder
	// AddWaiters are inserted unless the row exists: a waiter keeps its
	// first rank.
	AddWaiters []Waiter
}

// CheckOwner returns an error unless every row the change adds is owner's:
// a change is made under one owner's Fence.
func (ch SemaphoreChange) CheckOwner(owner string) error {
	for _, h := range ch.AddHolders {
		if h.Owner != owner {
			return fmt.Errorf("holder %s of semaphore %s is %q's, not the fence's %q", h.Holder, h.Semaphore, h.Owner, owner)
		}
	}
	for _, w := range ch.AddWaiters {
		if w.Owner != owner {
			return fmt.Errorf("waiter %s of semaphore %s is %q's, not the fence's %q", w.Holder, w.Semaphore, w.Owner, owner)
		}
	}
	return nil
}

// Owners keeps the processes that own buildsets, holders and waiters, and
// their leases. An owner is alive while it is live and renews its lease;
// its life (OwnerState) goes live -> fenced -> ended -> released, each
// step a compare-and-swap, so that two reapers never both take a step.
//
// Every write that carries a Fence first checks, in its own transaction,
// that the fence's owner is live with that epoch (PostgreSQL: SELECT ...
// FOR SHARE of the owner's row; SQLite: the same SELECT under BEGIN
// IMMEDIATE); FenceOwners' UPDATE of the row waits for those in progress.
// So a write of a fenced owner either committed before it was fenced, or
// is refused with ErrFenced and changes nothing.
type Owners interface {
	// RegisterOwner makes p a live owner with a lease until p.Now+p.Lease
	// and an epoch above every one given before, and returns its Fence.
	// An ID registered before is an ErrConflict.
	RegisterOwner(ctx context.Context, p RegisterOwnerParams) (Fence, error)
	// RenewOwner extends the lease of p.Fence's owner to p.Now+p.Lease, and
	// records its slots in use, if it is live with that epoch and its
	// lease has not run out at p.Now: a lease that ran out is never
	// renewed, even before anyone fenced it. Otherwise it is ErrFenced,
	// changing nothing.
	RenewOwner(ctx context.Context, p RenewOwnerParams) (expires time.Time, err error)
	// Owners returns the owners f selects, by StartedAt then ID.
	Owners(ctx context.Context, f OwnerFilter) ([]Owner, error)
	// FenceOwners moves live -> fenced, with a new epoch, every owner
	// whose lease ran out before p.Now, or with p.Force every live owner
	// of p.IDs whatever its lease (a successor holding the state dir's
	// lock knows it is dead); p.IDs, when set, limits it to those. A
	// leader's term held by an owner it fences ends in the same
	// transaction (Leadership). It returns the owners this call fenced,
	// as they are now.
	FenceOwners(ctx context.Context, p FenceOwnersParams) ([]Owner, error)
	// MarkOwnerEnded moves fenced -> ended: what the owner left running
	// on the bastion has been ended (bastion.KillOwner). An owner in
	// another state is an ErrConflict, an unknown one ErrNotFound.
	MarkOwnerEnded(ctx context.Context, id string) error
	// ReleaseOwner moves ended -> released and, in the same transaction,
	// drops every waiter of the owner and every holder but those named in
	// p.Keep: they stay, still the released owner's, until their buildset
	// is claimed (ClaimBuildsets) or ends. Its ADMITTED and RUNNING
	// buildsets not pinned to a run lose their owner: any server may
	// claim them (a store that several processes share tells them,
	// TopicClaims). An owner in another state is an ErrConflict, an
	// unknown one ErrNotFound.
	ReleaseOwner(ctx context.Context, p ReleaseOwnerParams) error
}

// RegisterOwnerParams is an owner to register.
type RegisterOwnerParams struct {
	// ID is new, letters, digits and '-' (bastion.CheckOwner).
	ID       string
	Kind     OwnerKind
	Node     string
	Host     string
	StateDir string
	Version  string
	ConfigFP string
	SlotsMax int
	// Lease is how long the owner lives without a renewal; it must be
	// above zero.
	Lease time.Duration
	// Now is when it registers; zero means the database's clock.
	Now time.Time
}

// RenewOwnerParams is a renewal of an owner's lease.
type RenewOwnerParams struct {
	Fence Fence
	// Lease is how long from Now; it must be above zero.
	Lease     time.Duration
	SlotsUsed int
	// SlotsMax, when above zero, is its build slots now (a reload may
	// change them); 0 keeps the ones recorded.
	SlotsMax int
	// ConfigFP, when set, is the fingerprint of the config it runs with
	// now; "" keeps the one recorded.
	ConfigFP string
	// Now is when it renews; zero means the database's clock.
	Now time.Time
}

// OwnerFilter selects owners. Zero fields do not filter.
type OwnerFilter struct {
	IDs      []string
	Kind     OwnerKind
	Node     string
	Host     string
	StateDir string
	States   []OwnerState
}

// FenceOwnersParams say which owners to fence.
type FenceOwnersParams struct {
	// Now is when leases are judged; zero means the database's clock.
	Now time.Time
	// IDs, when set, are the only owners fenced.
	IDs []string
	// Force fences the live owners of IDs (which must be set) whatever
	// their lease.
	Force bool
}

// ClaimParams ask for buildsets to run (ClaimBuildsets).
type ClaimParams struct {
	// Fence is the claimer's, live.
	Fence Fence
	// Max is how many buildsets it takes at most, running ones first.
	// One running buildset with no owner is taken even when Max is 0: a
	// full server whose runs wait for a semaphore that buildset holds
	// must be able to take it, or nothing would move.
	Max int
}

// CancelRequest is a cancel asked of the owner of a buildset
// (RequestCancel).
type CancelRequest struct {
	Buildset string
	By       string
}

// TopicCancels is the notification that a store shared by several
// processes sends when a cancel is asked of one of them
// (RequestCancel); the owners also look on their own every little while.
const TopicCancels = "sortie_cancels"

// TopicClaims is the notification that a store shared by several
// processes sends when there may be buildsets to claim (an admission, an
// owner released): each server's claims listen to it, and also look on
// their own every little while, so a notification lost costs a delay,
// never work.
const TopicClaims = "sortie_claims"

// ReleaseOwnerParams name an owner to release and the holders it keeps.
type ReleaseOwnerParams struct {
	ID string
	// Keep are holder ids left held: the pipeline semaphores of its
	// RUNNING buildsets, for their adopter.
	Keep []string
}

// ErrNotLeader is a leadership write (Reelect, or a write made under a
// Term) whose term is no longer the leader's: it ran out, was taken by
// another process, resigned, or ended when its owner was fenced.
var ErrNotLeader = errors.New("not the leader for this term")

// Term is one leader's tenure: the owner elected, and a number above every
// term before it. It lasts while its owner renews it (Reelect) before
// ExpiresAt, until it resigns, or until its owner is fenced.
type Term struct {
	Owner string
	// Term is given at election, one above every term before; a renewal
	// keeps it.
	Term int64
	// ElectedAt is when the term began, ExpiresAt when it runs out
	// unless renewed (inclusive, as an owner's lease).
	ElectedAt, ExpiresAt time.Time
}

// Leadership keeps the one leader of the processes sharing the store: at
// most one row, held by a live owner for a term. Times not given (a zero
// Now) are the database's clock (PostgreSQL) or this host's (SQLite).
type Leadership interface {
	// Elect makes p.Fence's owner the leader for a new term, until
	// p.Now+p.TTL, if nobody leads: no row, or one that ran out before
	// p.Now, or one of the same owner (which gave that term up: it gets
	// a new one). Another owner's term running at p.Now returns nil, nil.
	// A fence that is not live is ErrFenced.
	Elect(ctx context.Context, p ElectParams) (*Term, error)
	// Reelect extends p.Term to p.Now+p.TTL, keeping its number, if it is
	// still the leader's and has not run out at p.Now; otherwise it is
	// ErrNotLeader and changes nothing: a term that ran out is never
	// renewed, even before another took it.
	Reelect(ctx context.Context, p ReelectParams) (*Term, error)
	// Resign ends t if it is still the leader's; a term gone already is
	// not an error.
	Resign(ctx context.Context, t Term) error
	// Leader returns the leader's row as it is (its term may have run
	// out), or nil when there is none.
	Leader(ctx context.Context) (*Term, error)
}

// ElectParams ask for leadership.
type ElectParams struct {
	Fence Fence
	// TTL is how long the term lasts without a renewal; above zero.
	TTL time.Duration
	// Now is when it is asked; zero means the store's clock.
	Now time.Time
}

// ReelectParams renew a term.
type ReelectParams struct {
	Term Term
	// TTL is how long from Now; above zero.
	TTL time.Duration
	// Now is when it renews; zero means the store's clock.
	Now time.Time
}

// Pauses keeps operators' pauses.
type Pauses interface {
	// SetPause inserts or replaces the pause of p.Pipeline.
	SetPause(ctx context.Context, p Pause) error
	// ClearPause removes the pause of pipeline ("": the pause of all, not
	// each pipeline's); clearing what is not paused is not an error.
	ClearPause(ctx context.Context, pipeline string) error
	// Pauses returns the pauses by Pipeline ("" first).
	Pauses(ctx context.Context) ([]Pause, error)
}

// Triggers keeps what triggers remember: their marks and the webhook
// deliveries received.
type Triggers interface {
	// LastCronTick returns the latest tick of pipeline's cron trigger
	// claimed with a buildset (CreateBuildsetParams.Cron), and false when
	// none was.
	LastCronTick(ctx context.Context, pipeline string) (time.Time, bool, error)
	// GetMark returns the value of a trigger's mark (the last cron tick of
	// a pipeline, the last head polled...), "" when it is unset.
	GetMark(ctx context.Context, key string) (string, error)
	// SetMark inserts or replaces a mark.
	SetMark(ctx context.Context, key, value string) error
	// ClaimDelivery records a webhook delivery as received, and reports
	// whether this call recorded it: false means it was recorded before
	// and is still kept. Of several concurrent claims of one ID, from any
	// number of processes, exactly one gets true. In the same transaction
	// it forgets the deliveries received before c.ForgetBefore and all but
	// the c.Keep newest, so that the record stays bounded; a delivery
	// forgotten can be claimed again.
	ClaimDelivery(ctx context.Context, c DeliveryClaim) (bool, error)
}

// Logs keeps build logs in chunks, for the processes that write their logs
// to the store rather than to files (logs.Chunks): every process on the
// store reads them, while they are written and after their writer died. A
// log is its chunks put end to end in Seq order; each chunk says where it
// starts in the whole log, so that a reader starts at any byte offset
// without reading what comes before it.
type Logs interface {
	// AppendLog stores one chunk of an attempt's log. Writing again a
	// chunk that is stored already (same Seq, Offset and bytes: a write
	// retried after its connection broke) changes nothing and is not an
	// error; another chunk under a Seq or at an Offset taken is
	// ErrConflict. Empty chunks are refused; so is a chunk whose Fence is
	// not live (ErrFenced).
	AppendLog(ctx context.Context, p AppendLogParams) error
	// ReadLog returns, in order, the chunks of an attempt's log from the
	// one holding byte p.From on: those that start before p.From +
	// p.MaxBytes (at least the first, whatever its size), so that a call
	// reads about MaxBytes however the log was cut. The first chunk may
	// start before p.From. A log with no chunk at or after From (not
	// written yet, or printed nothing) gives none, and no error.
	ReadLog(ctx context.Context, p ReadLogParams) ([]LogChunk, error)
	// LogSize is the size in bytes of an attempt's log: the end of its
	// last chunk, 0 if it has none.
	LogSize(ctx context.Context, k LogKey) (int64, error)
}

// LogKey names the log of one attempt of a build.
type LogKey struct {
	BuildsetID string
	Job        string
	Attempt    int
}

// AppendLogParams is one chunk of a log to store.
type AppendLogParams struct {
	LogKey
	// Seq numbers the chunks of a log from 0, one more each chunk.
	Seq int
	// Offset is where Data starts in the whole log: the previous
	// chunk's Offset plus its length.
	Offset int64
	// Data is whole lines of the log, never empty.
	Data []byte
	// At is when the chunk was written; zero means now (the database's
	// clock on PostgreSQL).
	At time.Time
	// Fence, when set, is the writer's (the owner that runs the
	// attempt): the chunk is refused with ErrFenced, and nothing
	// written, once that owner's lease was lost, so a process that comes
	// back after its work was taken over adds nothing to the log.
	Fence *Fence
}

// ReadLogParams selects what ReadLog returns.
type ReadLogParams struct {
	LogKey
	// From is a byte offset in the whole log.
	From int64
	// MaxBytes bounds what one call reads (see ReadLog); 0 means
	// DefaultReadLog.
	MaxBytes int
}

// DefaultReadLog is what ReadLog reads at most per call when
// ReadLogParams.MaxBytes is 0.
const DefaultReadLog = 1 << 20

// LogChunk is one stored chunk of a log.
type LogChunk struct {
	Seq       int
	Offset    int64
	Data      []byte
	WrittenAt time.Time
}

// End is the offset just after the chunk.
func (c LogChunk) End() int64 { return c.Offset + int64(len(c.Data)) }

// Hosts keeps what Ansible reported of each build: for every host its
// recap counts, and each task's result per host (internal/ansible reads
// them from the callback plugin and bounds them before they get here).
// They belong to the build's latest attempt that reported any, and go
// with the build.
type Hosts interface {
	// UpdateHosts adds p to what is kept of the build's results, in one
	// transaction. When p.Summary.Attempt is above the attempt kept, what
	// the earlier attempt left is dropped first; below it, nothing changes
	// and the error is ErrConflict (a stale writer). Tasks and results
	// whose index is kept already are left as they are, so that a write
	// tried again after a doubtful failure adds nothing twice. An unknown
	// build is ErrNotFound.
	UpdateHosts(ctx context.Context, p HostsUpdate) error
	// BuildHosts returns everything kept of a build's results: tasks in
	// index order, results in arrival order, recaps by host. A build that
	// recorded none has a zero Summary and no rows; an unknown build is
	// ErrNotFound.
	BuildHosts(ctx context.Context, buildsetID, job string) (*BuildHosts, error)
	// BuildsetHosts returns, for each build of the buildset that recorded
	// results, in build order, its summary and recaps (no tasks or
	// results). An unknown buildset is ErrNotFound.
	BuildsetHosts(ctx context.Context, buildsetID string) ([]*BuildHosts, error)
}

// HostStatus is what one task did on one host.
type HostStatus string

const (
	// HostOK: the task ran and changed nothing.
	HostOK HostStatus = "ok"
	// HostChanged: the task changed something (would have, in check mode).
	HostChanged HostStatus = "changed"
	// HostFailed: the task failed (see HostResult.Ignored).
	HostFailed HostStatus = "failed"
	// HostUnreachable: the host could not be reached.
	HostUnreachable HostStatus = "unreachable"
	// HostSkipped: the task's condition left the host out.
	HostSkipped HostStatus = "skipped"
)

// HostCounts are one host's recap, as Ansible's PLAY RECAP line counts.
type HostCounts struct {
	OK          int `json:"ok"`
	Changed     int `json:"changed"`
	Failed      int `json:"failed"`
	Unreachable int `json:"unreachable"`
	Skipped     int `json:"skipped"`
	Rescued     int `json:"rescued"`
	Ignored     int `json:"ignored"`
}

// Add returns the sum of two recaps.
func (c HostCounts) Add(o HostCounts) HostCounts {
	return HostCounts{c.OK + o.OK, c.Changed + o.Changed, c.Failed + o.Failed, c.Unreachable + o.Unreachable,
		c.Skipped + o.Skipped, c.Rescued + o.Rescued, c.Ignored + o.Ignored}
}

// HostRecap is one host's recap in one build.
type HostRecap struct {
	Host string
	HostCounts
}

// HostTask is a task of a build's plays, numbered in the order of its
// first result.
type HostTask struct {
	Index int
	// Play is the name of the play the task belongs to.
	Play string
	Name string
}

// HostResult is what one task did on one host.
type HostResult struct {
	// Seq numbers the build's results in arrival order, from 0.
	Seq int
	// Task is the HostTask's Index.
	Task   int
	Host   string
	Status HostStatus
	// Ignored: a failure the task ignores (ignore_errors).
	Ignored  bool
	Duration time.Duration
	// Message says why a task failed or a host was unreachable.
	Message string
	// Diff is what the task changed or would change (--diff, check mode).
	Diff string
}

// HostsSummary is what a build's results are as a whole.
type HostsSummary struct {
	// Attempt is the attempt the results are of; 0 when none was kept.
	Attempt int
	// Runs counts the ansible-playbook processes that reported, Plays
	// their plays.
	Runs  int
	Plays int
	// Dropped counts the results not kept (the bounds of
	// internal/ansible); the recaps count them all the same.
	Dropped int
	// Note says what went wrong reading them, for people: "" when nothing
	// did.
	Note string
}

// BuildHosts is what is kept of one build's results.
type BuildHosts struct {
	Job     string
	Summary HostsSummary
	Recaps  []HostRecap
	Tasks   []HostTask
	Results []HostResult
}

// HostsUpdate is what UpdateHosts adds to a build's results.
type HostsUpdate struct {
	BuildsetID string
	Job        string
	// Summary replaces the one kept.
	Summary HostsSummary
	// Tasks and Results are added.
	Tasks   []HostTask
	Results []HostResult
	// Recaps replace the recaps of their hosts.
	Recaps []HostRecap
	// Fence is the writer's right to write: the owner that runs the
	// attempt. Once its lease was lost, the update is refused with
	// ErrFenced and changes nothing. A zero Fence is not checked.
	Fence Fence
}
