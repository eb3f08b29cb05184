package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Notification is one wake-up of a Subscription. A notification says that
// something changed, not all that did: consumers also poll, and re-read
// what they watch on a resync.
type Notification struct {
	// Topic and Payload are a NOTIFY's channel and payload; both are empty
	// in a resync.
	Topic, Payload string
	// Resync stands for any number of notifications the subscription may
	// have missed: the first one on every subscription (sent once its
	// topics are listened to), one after the notifier reconnected, and one
	// in place of those a full buffer could not take. The consumer re-reads
	// everything it watches.
	Resync bool
}

// subscriptionBuffer is how many notifications a subscription holds for
// its consumer; the last place is kept for a resync.
const subscriptionBuffer = 32

// maxTopicLen is PostgreSQL's longest identifier (NAMEDATALEN-1): a longer
// channel name would be truncated by LISTEN and refused by pg_notify.
const maxTopicLen = 63

// maxPayloadLen is the longest payload NOTIFY takes.
const maxPayloadLen = 7999

// waitTimeout bounds one wait for notifications; the connection is pinged
// between waits, so a dead server is noticed within about this long even
// when TCP is not told.
const waitTimeout = 5 * time.Second

// Reconnection delays: the first retry comes after minBackoff, each next one
// after twice as long, up to maxBackoff, each with up to a fifth of jitter.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// notifierAppName is the application_name of the notifier's connection,
// which tells it apart in pg_stat_activity.
const notifierAppName = "sortie-notifier"

// Notifier receives the NOTIFYs of a database on one connection of its own
// and hands each to the in-process subscriptions of its topic. A process
// makes one per database. It is safe for concurrent use.
//
// While started, the notifier keeps a connection that LISTENs to every
// topic subscribed to. When the connection fails, the notifier reconnects
// with growing delays, listens again, and sends a resync to every
// subscription, since notifications sent meanwhile are lost.
type Notifier struct {
	cfg *pgx.ConnConfig
	log *slog.Logger

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	topics map[string]bool // every topic ever subscribed to
	// dirty is set when a subscription came since the loop last listened:
	// the loop listens to its topics and sends its first resync before
	// it waits again.
	dirty bool
	// wake, set while the loop waits for notifications, interrupts the
	// wait so that the loop serves a new subscription at once.
	wake   context.CancelFunc
	cancel context.CancelCauseFunc // nil unless started
	done   chan struct{}           // closed when the loop has ended
}

// NewNotifier returns a notifier, not started, for the database of s. It
// connects with s's settings, as application_name sortie-notifier. log
// hears of lost connections; nil discards.
func NewNotifier(s *Store, log *slog.Logger) *Notifier {
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = notifierAppName
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{cfg: cfg, log: log, subs: map[*Subscription]struct{}{}, topics: map[string]bool{}}
}

// errStopped is the cause of the loop's cancellation by Stop.
var errStopped = errors.New("notifier stopped")

// Start starts listening, in a goroutine that runs until Stop or until ctx
// is done; it does not wait for a connection. Starting a started notifier
// does nothing. It returns no error for now: a database that is down is
// retried, not refused.
func (n *Notifier) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cancel != nil {
		return nil
	}
	ctx, cancel := context.WithCancelCause(ctx)
	n.cancel, n.done = cancel, make(chan struct{})
	go n.loop(ctx, n.done)
	return nil
}

// Stop stops listening, closes the connection and waits for the goroutine
// to end. It is idempotent, safe before Start, and the notifier may be
// started again. Subscriptions stay; their channels are not closed.
func (n *Notifier) Stop() {
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.cancel, n.done = nil, nil
	n.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel(errStopped)
	<-done
}

// Subscription receives the notifications of some topics, from Subscribe
// until Close.
type Subscription struct {
	n      *Notifier
	topics map[string]bool
	c      chan Notification
}

// Subscribe returns a subscription to topics (NOTIFY channel names, 1 to 63
// bytes, case-sensitive). Its first notification is a resync, sent once
// the notifier listens to topics: a consumer reads what it watches then,
// and misses no change made after that read. Subscribe panics on an
// invalid topic, a programmer's error. The caller closes the subscription.
func (n *Notifier) Subscribe(topics ...string) *Subscription {
	sub := &Subscription{n: n, topics: map[string]bool{}, c: make(chan Notification, subscriptionBuffer)}
	for _, t := range topics {
		if err := checkTopic(t); err != nil {
			panic(err)
		}
		sub.topics[t] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.subs[sub] = struct{}{}
	for t := range sub.topics {
		n.topics[t] = true
	}
	n.dirty = true
	if n.wake != nil {
		n.wake()
	}
	return sub
}

// C returns the channel of the subscription's notifications. It is never
// closed: a consumer selects on it together with its own end.
func (s *Subscription) C() <-chan Notification { return s.c }

// Close ends the subscription: no notification is added to C after it
// returns. Closing twice does nothing.
func (s *Subscription) Close() {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	delete(s.n.subs, s)
}

// Wakeups subscribes to topics and turns their notifications, resyncs
// included, into wake-ups: a value on the channel after each (several may
// come as one, the channel holds one). stop ends the subscription and
// waits for the goroutine that forwards them.
func (n *Notifier) Wakeups(topics ...string) (wakeups <-chan struct{}, stop func()) {
	sub := n.Subscribe(topics...)
	ch := make(chan struct{}, 1)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-sub.C():
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			sub.Close()
			close(quit)
			<-done
		})
	}
}

// send queues nt on the subscription without blocking, keeping the last
// place of the buffer for a resync: a notification that finds only that
// place free becomes a resync, and one that finds the buffer full is
// dropped, as a resync is queued already (only a resync fills the last
// place). Callers hold n.mu; the loop is the only sender.
func (s *Subscription) send(nt Notification) {
	switch free := cap(s.c) - len(s.c); {
	case free > 1:
		s.c <- nt
	case free == 1:
		s.c <- Notification{Resync: true}
	}
}

// loop keeps a listening connection and delivers what it receives, until
// ctx is done. It owns conn.
func (n *Notifier) loop(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	var (
		conn     *pgx.Conn
		listened map[string]bool
		welcomed = map[*Subscription]bool{} // had their resync since the last connect
		failures int                        // since the last connection that listened
	)
	defer func() {
		if conn != nil {
			closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			conn.Close(closeCtx)
			cancel()
		}
	}()
	// lost closes a failed connection, so that the next round connects
	// again after a delay.
	lost := func(err error) {
		if ctx.Err() != nil {
			return // stopping, not lost: the deferred Close closes conn
		}
		n.log.Warn("notifier: connection lost", "err", err)
		closeCtx, cancel := context.WithTimeout(ctx, time.Second)
		conn.Close(closeCtx)
		cancel()
		conn = nil
		failures++
	}
	for ctx.Err() == nil {
		if conn == nil {
			if failures > 0 && !sleep(ctx, backoff(failures)) {
				return
			}
			c, err := pgx.ConnectConfig(ctx, n.cfg)
			if err != nil {
				if ctx.Err() == nil {
					failures++
					n.log.Warn("notifier: connect", "err", err, "failures", failures)
				}
				continue
			}
			conn, listened = c, map[string]bool{}
			// Every subscription may have missed notifications while
			// there was no connection.
			clear(welcomed)
		}
		if err := n.listen(ctx, conn, listened, welcomed); err != nil {
			lost(err)
			continue
		}
		if failures > 0 {
			n.log.Info("notifier: listening again", "failures", failures)
			failures = 0
		}
		waitCtx, cancel := context.WithTimeout(ctx, waitTimeout)
		n.mu.Lock()
		if n.dirty {
			n.mu.Unlock()
			cancel()
			continue
		}
		n.wake = cancel
		n.mu.Unlock()
		nt, err := conn.WaitForNotification(waitCtx)
		n.mu.Lock()
		n.wake = nil
		n.mu.Unlock()
		interrupted := waitCtx.Err() != nil // timed out, woken or stopping
		cancel()
		switch {
		case err == nil:
			if nt != nil {
				n.deliver(Notification{Topic: nt.Channel, Payload: nt.Payload})
			}
		case ctx.Err() != nil:
			return
		case interrupted && !conn.IsClosed():
			// The connection is idle again; check that the server is
			// still there, as a dead host may never close it.
			pingCtx, cancel := context.WithTimeout(ctx, waitTimeout)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				lost(fmt.Errorf("ping: %w", err))
			}
		default:
			lost(err)
		}
	}
}

// backoff is the delay before the next connection attempt after failures
// in a row: minBackoff doubled each time up to maxBackoff, plus up to a
// fifth of jitter so that nodes do not reconnect in step.
func backoff(failures int) time.Duration {
	d := maxBackoff
	if failures < 10 {
		d = min(minBackoff<<(failures-1), maxBackoff)
	}
	return d + rand.N(d/5+1)
}

// listen issues LISTEN for the topics not yet in listened, then sends
// their first resync to the subscriptions not in welcomed.
func (n *Notifier) listen(ctx context.Context, conn *pgx.Conn, listened map[string]bool, welcomed map[*Subscription]bool) error {
	n.mu.Lock()
	var todo []string
	for t := range n.topics {
		if !listened[t] {
			todo = append(todo, t)
		}
	}
	n.dirty = false
	n.mu.Unlock()
	for _, t := range todo {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{t}.Sanitize()); err != nil {
			return fmt.Errorf("listen %s: %w", t, err)
		}
		listened[t] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for sub := range n.subs {
		if !welcomed[sub] && listensAll(listened, sub.topics) {
			welcomed[sub] = true
			sub.send(Notification{Resync: true})
		}
	}
	for sub := range welcomed {
		if _, ok := n.subs[sub]; !ok {
			delete(welcomed, sub) // closed
		}
	}
	return nil
}

func listensAll(listened, topics map[string]bool) bool {
	for t := range topics {
		if !listened[t] {
			return false
		}
	}
	return true
}

// deliver hands nt to the subscriptions of its topic.
func (n *Notifier) deliver(nt Notification) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for sub := range n.subs {
		if sub.topics[nt.Topic] {
			sub.send(nt)
		}
	}
}

// sleep waits d, or less if ctx is done first; it reports whether it
// waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Execer is what Notify sends through: a transaction (pgx.Tx), a pool or a
// connection.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Notify sends payload to the subscribers of topic, in every process
// listening to the database. Sent within a transaction it is delivered
// when the transaction commits, and never if it rolls back; notifications
// of one transaction arrive in order, once each (identical ones may be
// folded into one by PostgreSQL).
func Notify(ctx context.Context, q Execer, topic, payload string) error {
	if err := checkTopic(topic); err != nil {
		return err
	}
	if len(payload) > maxPayloadLen {
		return fmt.Errorf("notify %s: payload of %d bytes, at most %d", topic, len(payload), maxPayloadLen)
	}
	if _, err := q.Exec(ctx, `SELECT pg_notify($1, $2)`, topic, payload); err != nil {
		return fmt.Errorf("notify %s: %w", topic, mapErr(ctx, err))
	}
	return nil
}

func checkTopic(t string) error {
	if t == "" || len(t) > maxTopicLen {
		return fmt.Errorf("postgres: notification topic %q: want 1 to %d bytes", t, maxTopicLen)
	}
	return nil
}
