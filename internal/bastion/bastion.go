// Package bastion defines where builds run: the Bastion interface that the
// scheduler's runner drives. Each kind of bastion is a sub-package (local,
// ssh), and both behave the same way (bastiontest holds them to it): one checkout per buildset made
// atomically from a mirror kept on the bastion, install commands run only
// when their fingerprint changed, and every build in its own process tree
// that timeout and cancel end whole.
package bastion

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Bastion prepares a buildset's source and runs its builds.
// Implementations are safe for concurrent use.
type Bastion interface {
	// Checkout makes <workdir>/src/<buildset> hold commit, fetched
	// incrementally from repo (a git repository Sortie can read, usually its
	// own mirror of source.url) into the bastion's mirror, prepared aside and
	// then renamed into place. An existing checkout of the buildset is
	// reused. It returns the checkout's path on the bastion. Progress goes to
	// log. A failure is an *InfraError.
	Checkout(ctx context.Context, repo, buildset, commit string, log io.Writer) (string, error)
	// Install runs commands (each with /bin/sh -c, in order, stopping at the
	// first failure) unless the fingerprint of commands equals the stamp of
	// the last successful install; installs on one bastion are serialised by
	// a lock there. It writes "installed" or "already up to date" to log. A
	// command's non-zero exit is returned as a plain error (a FAILURE of the
	// bootstrap job); failing to reach the bastion is an *InfraError.
	Install(ctx context.Context, commands []string, env map[string]string, log io.Writer) (installed bool, err error)
	// Run runs one attempt of a build and waits for it. Every process of
	// the build carries RunEnv, set to an id of this Run alone. When
	// spec.Timeout passes (or spec.Expire is closed) or ctx is done,
	// every process the build started is ended (TERM, then KILL after
	// spec.Grace): its process group, and every process carrying its
	// RunEnv wherever it went (setsid, a double fork, nohup); Run returns
	// once they are gone. When the command ends by itself, what it left in
	// its process group is ended the same way, and what left the group is
	// let be (a daemon a job means to start).
	// Output (stdout and stderr merged) goes to log as it comes. A failure
	// to start or reach the bastion is an *InfraError; a command that ran
	// is described by the Outcome with a nil error.
	Run(ctx context.Context, spec Spec, log io.Writer) (Outcome, error)
	// Finish marks the buildset's checkout finished and removes finished
	// checkouts beyond the newest keep. Checkouts not finished are never
	// removed.
	Finish(ctx context.Context, buildset string, keep int) error
	// KillOwner ends (TERM, then KILL after grace) every process tree of a
	// build that a Sortie process with this owner id started on this bastion
	// and that is still alive, with every process carrying OwnerEnv=owner
	// wherever it went, and waits until they are gone. A restarted server
	// calls it with its dead predecessor's owner id before it retries the
	// builds that were lost. An owner with nothing left is not an error.
	KillOwner(ctx context.Context, owner string, grace time.Duration) error
	// SetOwner makes owner (bastion.CheckOwner) the id of the Sortie
	// process using the bastion from now on: a process whose lease was
	// lost goes on as a new owner, and the builds it starts after are the
	// new owner's, which KillOwner of the old id leaves alone. It is
	// called only while no build of this bastion runs.
	SetOwner(owner string) error
}

// CheckOwner rejects an owner id that is not safe as a file name on a
// bastion (the process groups of an owner's builds are recorded under
// <workdir>/run/<owner>/): it is 1 to 100 letters, digits and '-', and
// does not start with '-'. Sortie's own ids are made by
// coordinator.NewOwner ("o-" and 16 hex digits); the kind of an owner is
// the store's, never read from its id.
func CheckOwner(owner string) error {
	bad := owner == "" || len(owner) > 100 || owner[0] == '-'
	for _, c := range owner {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("bad owner id %q: want letters, digits and '-'", owner)
	}
	return nil
}

// Spec is one build attempt to run.
type Spec struct {
	// Command is run with /bin/sh -c.
	Command string
	// Dir is the working directory on the bastion (the checkout).
	Dir string
	// Env is the job's environment: it is added to the bastion's own values
	// of BaseEnv, which it may override. Nothing else reaches the process.
	Env map[string]string
	// Timeout ends the process tree after it; 0 means none. It counts from
	// the start of the process.
	Timeout time.Duration
	// Expire, when not nil, ends the process tree as Timeout does once it
	// is closed: a deadline its caller keeps (tests end a build at the
	// moment they choose, rather than racing a timer). With Timeout too,
	// the first to come ends it.
	Expire <-chan struct{}
	// Grace is the time between TERM and KILL; 0 means DefaultGrace.
	Grace time.Duration
	// Events, when set, gets the run's side channel: the bastion names in
	// the job's environment (EventsEnv) a file of this Run alone, which
	// need not exist, and copies to Events what the build's processes
	// append to it, as it grows (within a second or two) and to its end
	// before Run returns; then it removes the file. One goroutine at a
	// time writes to Events; an error from it stops the copying, never
	// the build. A build ended by its timeout or a cancel may lose what
	// it appended last.
	Events io.Writer
}

// EventsEnv names the events file of a Run given Spec.Events (Sortie's
// Ansible callback plugin appends to it).
const EventsEnv = "SORTIE_EVENTS"

// BaseEnv names the variables a build inherits from the bastion it runs on
// (the local machine's for the local bastion, the login environment's over
// SSH): enough to find programs and a home, and nothing that might be a
// secret of Sortie's.
var BaseEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSH_AUTH_SOCK"}

// OwnerEnv is the variable every process of a bastion with an owner id
// carries, set to that id: KillOwner finds by it the processes of a dead
// owner's builds wherever they went.
const OwnerEnv = "SORTIE_OWNER"

// RunEnv is the variable every process of one Run (or one install
// command) carries, set to an id unique to it (NewRunID): a timeout or a
// cancel finds by it the processes that left the build's process group or
// session (setsid, a daemon's double fork). A process that clears its
// environment, or whose environment the bastion's user cannot read (one
// that runs as another user, or made itself undumpable), escapes it.
const RunEnv = "SORTIE_RUN_ID"

// NewRunID returns a fresh value for RunEnv: 32 random hex digits, so that
// no two builds of all the Sortie processes sharing a bastion ever share
// one (a sweep by it kills).
func NewRunID() string {
	b := make([]byte, 16)
	rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// DefaultGrace is the time a process tree gets between TERM and KILL.
const DefaultGrace = 10 * time.Second

// Outcome is how a command that ran ended.
type Outcome struct {
	ExitCode int  // -1 when ended by a signal
	TimedOut bool // ended because Spec.Timeout passed
	Canceled bool // ended because ctx was done
}

// InfraError is a failure to reach or prepare the bastion, as opposed to a
// failure of the job's own command. The scheduler retries it while attempts
// remain.
type InfraError struct {
	Op  string
	Err error
}

func (e *InfraError) Error() string { return fmt.Sprintf("bastion: %s: %v", e.Op, e.Err) }
func (e *InfraError) Unwrap() error { return e.Err }

// IsInfra reports whether err is (or wraps) an *InfraError.
func IsInfra(err error) bool {
	var ie *InfraError
	return errors.As(err, &ie)
}

// Fingerprint is the stamp of a list of install commands.
func Fingerprint(commands []string) string {
	h := sha256.New()
	for _, c := range commands {
		h.Write([]byte(c))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Poller calls a function at every tick of an interval until Stop: how a
// bastion follows a build's events file. It runs on a timer, not a
// goroutine of its own, so that a build shorter than the interval, as
// most no-op builds are, costs a timer set and stopped.
type Poller struct {
	every   time.Duration
	fn      func()
	t       *time.Timer
	mu      sync.Mutex // held through a call of fn
	stopped bool
}

// Poll starts calling fn every interval; calls never overlap.
func Poll(every time.Duration, fn func()) *Poller {
	p := &Poller{every: every, fn: fn}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t = time.AfterFunc(every, p.tick)
	return p
}

func (p *Poller) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.fn()
	p.t.Reset(p.every)
}

// Stop ends the calls and waits for the one in progress, if any. A nil
// Poller (never started) stops at once.
func (p *Poller) Stop() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	p.t.Stop()
}
