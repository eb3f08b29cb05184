package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/store"
)

// Defaults of a Worker's Options.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultLease    = 30 * time.Second
	DefaultPoll     = time.Second
	DefaultParallel = 8
	DefaultBase     = 10 * time.Second
	DefaultMax      = 30 * time.Minute
	DefaultGiveUp   = 24 * time.Hour
)

// Store is what a Worker reads and writes: the outbox, and the buildsets
// the deliveries tell of.
type Store interface {
	store.Outbox
	buildset.ReportSource
}

// Subjects finds commits' subjects (source.Mirror).
type Subjects interface {
	Subjects(ctx context.Context, shas ...string) (map[string]string, error)
}

// Outcome is how a try of a delivery went.
type Outcome string

const (
	// Delivered: the receiver took it.
	Delivered Outcome = "delivered"
	// Retry: it failed, and is tried again later.
	Retry Outcome = "retry"
	// GaveUp: it failed, and is not tried again.
	GaveUp Outcome = "failed"
)

// Try is one try of a delivery, for an observer (metrics, tests).
type Try struct {
	Delivery *store.ReportDelivery
	Outcome  Outcome
	// Error is why it failed, redacted; "" when delivered.
	Error string
	// Next is when it is tried again, for a Retry.
	Next time.Time
}

// Backoff says when a delivery that failed is tried again: after about
// Base, then twice as long each time up to Max, each wait drawn at random
// between half and all of it (so that deliveries that failed together do
// not come back together), or when the receiver said (Retry-After), until
// GiveUp after it was recorded.
type Backoff struct {
	Base, Max, GiveUp time.Duration
}

// Delay is the wait after the n-th try failed (n from 1), before jitter.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Base
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Options configure a Worker. Zero fields take the defaults.
type Options struct {
	Store Store
	// Name names the worker in its claims: the process's owner id.
	Name string
	// Getenv reads the reporters' secrets at each try; nil means
	// os.Getenv.
	Getenv func(string) string
	// Subjects, when set, gives the commits' subjects for messages.
	Subjects Subjects
	// Client sends the requests; nil means a client of its own.
	Client *http.Client
	// Timeout bounds each try (DefaultTimeout); Lease is how long a claim
	// holds (DefaultLease), and must exceed it: a worker that dies
	// mid-try leaves the delivery to another once its claim has ended.
	Timeout, Lease time.Duration
	// Poll is how often the outbox is read when nothing woke the worker
	// (DefaultPoll): deliveries recorded by another process, retries that
	// came due.
	Poll time.Duration
	// Parallel is how many deliveries are in flight at once
	// (DefaultParallel).
	Parallel int
	Backoff  Backoff
	// Now is the clock of claims and retries; nil means time.Now.
	Now func() time.Time
	// Jitter draws the wait before a retry from d; nil means a random
	// duration between d/2 and d.
	Jitter func(d time.Duration) time.Duration
	// Log gets what goes wrong; nil means slog.Default().
	Log *slog.Logger
	// OnTry, when set, is told of every try once it is recorded. It is
	// called from the worker's goroutines and must not block.
	OnTry func(Try)
}

// Worker sends the outbox's deliveries: a service with Start and Stop.
// Several workers, in one process or in several sharing the store, share
// the work: each delivery is claimed by one at a time.
type Worker struct {
	opt  Options
	wake chan struct{}

	mu      sync.Mutex
	cancel  context.CancelFunc
	stopped chan struct{}
}

// New checks the options and makes a worker; it starts nothing.
func New(opt Options) (*Worker, error) {
	if opt.Store == nil || opt.Name == "" {
		return nil, errors.New("report: a worker needs a Store and a Name")
	}
	if opt.Getenv == nil {
		opt.Getenv = os.Getenv
	}
	opt.Timeout = cmpOr(opt.Timeout, DefaultTimeout)
	opt.Lease = cmpOr(opt.Lease, DefaultLease)
	if opt.Lease <= opt.Timeout {
		return nil, fmt.Errorf("report: the lease (%v) must exceed the timeout of a try (%v)", opt.Lease, opt.Timeout)
	}
	opt.Poll = cmpOr(opt.Poll, DefaultPoll)
	if opt.Parallel <= 0 {
		opt.Parallel = DefaultParallel
	}
	opt.Backoff.Base = cmpOr(opt.Backoff.Base, DefaultBase)
	opt.Backoff.Max = cmpOr(opt.Backoff.Max, DefaultMax)
	opt.Backoff.GiveUp = cmpOr(opt.Backoff.GiveUp, DefaultGiveUp)
	if opt.Client == nil {
		opt.Client = &http.Client{}
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Jitter == nil {
		opt.Jitter = func(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	return &Worker{opt: opt, wake: make(chan struct{}, 1)}, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func (w *Worker) now() time.Time { return w.opt.Now().UTC() }

// Wake asks the worker to read the outbox now: deliveries were recorded.
// It never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Start runs the worker in a goroutine of its own, under a context that
// keeps ctx's values but not its cancellation: only Stop ends it. Starting
// a worker that runs is an error; a stopped worker may start again.
func (w *Worker) Start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		return errors.New("report: worker started already")
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopped := make(chan struct{})
	w.cancel, w.stopped = cancel, stopped
	go func() {
		defer close(stopped)
		w.run(ctx)
	}()
	return nil
}

// Stop stops the worker and waits for it: tries in flight are cut short
// and their deliveries left pending, due at once, for the next worker.
// It is safe to call twice, concurrently, and before Start.
func (w *Worker) Stop(context.Context) {
	w.mu.Lock()
	if w.cancel != nil {
		w.cancel()
		w.cancel = nil
	}
	stopped := w.stopped
	w.mu.Unlock()
	if stopped != nil {
		<-stopped
	}
}

// run claims what it has room for whenever woken (a delivery recorded, a
// try over) and every Poll, and tries each claimed delivery in a goroutine
// of its own, waited for before it returns.
func (w *Worker) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, w.opt.Parallel)
	t := time.NewTicker(w.opt.Poll)
	defer t.Stop()
	failing := false
	for {
		if free := cap(slots) - len(slots); free > 0 {
			now := w.now()
			ds, err := w.opt.Store.ClaimReportDeliveries(ctx, store.ClaimReportDeliveriesParams{
				Worker: w.opt.Name, Now: now, Until: now.Add(w.opt.Lease), Limit: free,
			})
			switch {
			case err != nil && ctx.Err() == nil && !failing:
				failing = true
				w.opt.Log.Error("reports: cannot read the outbox; trying again", "err", err)
			case err == nil && failing:
				failing = false
				w.opt.Log.Info("reports: the outbox can be read again")
			}
			for _, d := range ds {
				slots <- struct{}{}
				wg.Go(func() {
					defer func() {
						<-slots
						w.Wake()
					}()
					w.try(ctx, d)
				})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

// try sends one claimed delivery and records how it went.
func (w *Worker) try(ctx context.Context, d *store.ReportDelivery) {
	err, retryAfter, permanent := w.send(ctx, d)
	now := w.now()
	p := store.FinishReportDeliveryParams{ID: d.ID, Worker: w.opt.Name, Try: d.Tries, At: now}
	tr := Try{Delivery: d}
	switch {
	case err == "":
		p.State, tr.Outcome = store.DeliveryDelivered, Delivered
	case ctx.Err() != nil:
		// Stopped mid-try: the next worker tries again at once.
		p.State, p.NextAt, p.Error = store.DeliveryPending, now, "interrupted: sortie stopped during the try"
		tr.Outcome, tr.Next = Retry, now
	case permanent:
		p.State, p.Error, tr.Outcome = store.DeliveryFailed, err, GaveUp
	default:
		wait := retryAfter
		if wait <= 0 {
			wait = w.opt.Jitter(w.opt.Backoff.Delay(d.Tries))
		}
		next := now.Add(wait)
		if deadline := d.CreatedAt.Add(w.opt.Backoff.GiveUp); next.After(deadline) {
			p.State, tr.Outcome = store.DeliveryFailed, GaveUp
			p.Error = fmt.Sprintf("gave up after %d tries in %v: %s", d.Tries, now.Sub(d.CreatedAt).Round(time.Second), err)
		} else {
			p.State, p.NextAt, p.Error = store.DeliveryPending, next, err
			tr.Outcome, tr.Next = Retry, next
		}
	}
	tr.Error = p.Error
	log := w.opt.Log.With("delivery", d.ID, "buildset", d.Buildset, "reporter", d.Reporter, "event", d.Event, "try", d.Tries)
	if ferr := w.opt.Store.FinishReportDelivery(context.WithoutCancel(ctx), p); ferr != nil {
		// Its claim runs out and it is tried again: at least once.
		log.Error("reports: could not record a try", "outcome", tr.Outcome, "err", ferr)
		return
	}
	switch tr.Outcome {
	case Retry:
		if ctx.Err() == nil {
			log.Warn("reports: delivery failed; trying again", "err", p.Error, "next", p.NextAt)
		}
	case GaveUp:
		log.Error("reports: delivery given up", "err", p.Error)
	}
	if w.opt.OnTry != nil {
		w.opt.OnTry(tr)
	}
}

// send makes one try of a delivery. It returns why it failed, redacted ("":
// delivered), when the receiver asked to be tried again, and whether no
// other try could do better.
func (w *Worker) send(ctx context.Context, d *store.ReportDelivery) (errMsg string, retryAfter time.Duration, permanent bool) {
	var target buildset.ReporterSpec
	if err := json.Unmarshal(d.Target, &target); err != nil {
		return "its reporter cannot be read: " + err.Error(), 0, true
	}
	snd, ok := senders[target.Type]
	if !ok {
		return fmt.Sprintf("unknown reporter type %q", target.Type), 0, true
	}
	rep, err := buildset.MakeReport(ctx, w.opt.Store, d.Buildset)
	if errors.Is(err, store.ErrNotFound) {
		return err.Error(), 0, true
	}
	if err != nil {
		return err.Error(), 0, false
	}
	ev := buildset.ReportEvent(d.Event)
	del := &Delivery{ID: d.ID, Event: ev, Target: target, Report: View(rep, ev, target.PublicURL), Link: pageLink(target.PublicURL, d.Buildset)}
	if w.opt.Subjects != nil {
		if subj, err := w.opt.Subjects.Subjects(ctx, rep.Commit); err == nil {
			del.Subject = subj[rep.Commit]
		}
	}
	var secrets []string
	secret := func(name string) (string, error) {
		v := w.opt.Getenv(name)
		if v == "" {
			return "", fmt.Errorf("$%s is not set in the environment of this sortie (%s)", name, w.opt.Name)
		}
		secrets = append(secrets, v)
		if u, err := url.Parse(v); err == nil && len(u.Path) > 1 {
			secrets = append(secrets, u.Path) // a URL's key, however it is quoted
		}
		return v, nil
	}
	tctx, cancel := context.WithTimeout(ctx, w.opt.Timeout)
	defer cancel()
	err = snd(tctx, w.opt.Client, del, secret)
	if err == nil {
		return "", 0, false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		retryAfter = he.RetryAfter
	}
	msg := err.Error()
	if ctx.Err() == nil && errors.Is(tctx.Err(), context.DeadlineExceeded) {
		msg = fmt.Sprintf("no answer within %v", w.opt.Timeout)
	}
	return redact(msg, secrets), retryAfter, false
}
