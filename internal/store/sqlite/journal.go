package sqlite

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/sortie-ci/sortie/internal/store"
)

// The build writes' journal. A run's per-job path is WriteBuilds: a
// build's end and the next build's start. Committing that as a SQLite
// transaction (BEGIN IMMEDIATE, four statements, the pages written to the
// WAL, COMMIT) cost half of Sortie's CPU per job. So a batch that the store
// can vouch for is appended to a file of this store's instead, with one
// write(2), and WriteBuilds returns: the batch is as durable as a
// committed transaction under synchronous=NORMAL (it survives the process,
// not a power loss). A goroutine of the store's applies the appended
// batches to the tables, many in one transaction, within journalDelay.
//
// What stays as before:
//   - WriteBuilds' errors. A batch is journaled only when the store's copy
//     of its builds' states (model) says that every write of it will apply
//     (the same conditions as the statements'); any other batch is written
//     as before, in a transaction, and gets its error there.
//   - Order. This process's reads and other writes apply what is pending
//     first (settle): it reads what it wrote, and no write of its own
//     overtakes a build write made before it.
//   - The fence, all but a few milliseconds. A batch is journaled only if
//     every fence it carries was seen live in the database within
//     journalDelay (read, or checked by an apply that committed); else it
//     takes the transaction, which refuses it at once if fenced. (The read, made for every batch, cost more than the rest
//     of the journaled path: SQLite drops a reader's page cache after every
//     commit, and the applier commits every few milliseconds.) A fence
//     taken by this store's FenceOwners is seen at once; one taken by
//     another process within journalDelay of the read is seen by the apply,
//     which refuses the batches journaled meanwhile (below).
//
// What changes:
//   - Other processes see a build write up to journalDelay late.
//   - A journaled batch that the database refuses when applied (its owner
//     was fenced between the read and the apply; another process ended the
//     buildset meanwhile) is dropped, and its refusal is the error of the
//     next WriteBuilds of that buildset.
//   - A journal whose process died is applied by the next process that
//     opens the database or fences owners (recoverJournals), before it
//     fences. A process that cannot run (SIGSTOP) past its lease keeps its
//     file locked; it is fenced without it, and its pending batches are
//     refused when it runs again: those builds run again under their new
//     owner.
//
// Every build write only moves a build forward (WAITING, RUNNING, DONE;
// an attempt's number only up; an attempt's result set once), so applying
// a batch a second time, or after what followed it, changes nothing: a
// recovered journal is applied batch by batch, each one that no longer
// applies skipped.
const (
	// journalBatch is how many pending batches start an apply at once.
	journalBatch = 32
	// journalDelay is how long a pending batch waits for others before it
	// is applied.
	journalDelay = 10 * time.Millisecond
	// journalMax is how many batches may wait: beyond it (the database
	// refuses writes for now), WriteBuilds writes in a transaction, and
	// waits as before.
	journalMax = 1024
	// journalSuffix ends a journal's file name; a file still being made
	// ends with journalNew.
	journalSuffix = ".log"
	journalNew    = ".new"
)

// journalDir is the directory of the journals of the database at abs.
func journalDir(abs string) string { return abs + "-writes" }

// journal is a store's build-write journal and its copy of the states of
// the builds it writes; see above.
type journal struct {
	dir   string
	delay time.Duration // journalDelay; longer in tests that apply by hand

	mu      sync.Mutex
	f       *os.File // nil until the first journaled batch; flock'd
	path    string
	size    int64                // of the file: where the next record goes
	pending [][]store.BuildWrite // appended, not yet applied, in order
	buf     []byte
	// model is the states of the builds of the buildsets this store
	// writes, by buildset then job, read once (loadModel) and kept up
	// to date by every build write it makes.
	model map[string]map[string]*buildModel
	// refused is why a journaled batch of a buildset was refused when
	// applied, for its next WriteBuilds to return.
	refused map[string]error
	// live is when each fence was last seen live: read so, or carried by
	// an apply that committed (its statements check it). A fence seen
	// live within journalDelay is not read again.
	live    map[store.Fence]time.Time
	fenced  int   // FenceOwners calls of this store: an apply begun before one marks nothing live
	broken  error // the file could not be cut back or emptied: no more journaling
	failing bool  // the last apply failed: write in transactions meanwhile
	closed  bool
	off     bool // for the tests of the transaction path

	n        atomic.Int64  // len(pending), read without mu
	oneByOne atomic.Int64  // applies that met a refusal and were made again batch by batch
	applyMu  sync.Mutex    // one apply at a time
	kick     chan struct{} // a first batch is pending
	full     chan struct{} // journalBatch are
	stop     chan struct{}
	done     chan struct{} // closed when the applier has returned; nil if none
}

func newJournal(dir string) *journal {
	return &journal{
		dir: dir, delay: journalDelay, model: map[string]map[string]*buildModel{}, refused: map[string]error{}, live: map[store.Fence]time.Time{},
		kick: make(chan struct{}, 1), full: make(chan struct{}, 1), stop: make(chan struct{}),
	}
}

// buildModel is what a build's writes are checked against: its state, its
// latest attempt, and its attempts without a result.
type buildModel struct {
	state   store.BuildState
	attempt int
	open    []int
}

// allows reports whether w's statement would change its row; w names the
// build m is of.
func (m *buildModel) allows(w store.BuildWrite) bool {
	switch {
	case w.Start != nil:
		return m.state != store.BuildDone && m.attempt < w.Start.Attempt.Number
	case w.FinishAttempt != nil:
		return slices.Contains(m.open, w.FinishAttempt.Number)
	case w.FinishBuild != nil:
		return m.state == store.BuildWaiting || m.state == store.BuildRunning
	}
	return false
}

// apply makes w on m.
func (m *buildModel) apply(w store.BuildWrite) {
	switch {
	case w.Start != nil:
		m.state, m.attempt = store.BuildRunning, w.Start.Attempt.Number
		m.open = append(m.open, m.attempt)
	case w.FinishAttempt != nil:
		m.open = slices.DeleteFunc(m.open, func(n int) bool { return n == w.FinishAttempt.Number })
	case w.FinishBuild != nil:
		m.state = store.BuildDone
	}
}

// writeKey is the buildset and job w writes.
func writeKey(w store.BuildWrite) (buildset, job string) {
	switch {
	case w.Start != nil:
		return w.Start.Attempt.BuildsetID, w.Start.Attempt.Job
	case w.FinishAttempt != nil:
		return w.FinishAttempt.BuildsetID, w.FinishAttempt.Job
	case w.FinishBuild != nil:
		return w.FinishBuild.BuildsetID, w.FinishBuild.Job
	}
	return "", ""
}

// learnLocked makes writes, which the database made, on the model of
// every loaded buildset. j.mu is held.
func (j *journal) learnLocked(writes []store.BuildWrite) {
	for _, w := range writes {
		bs, job := writeKey(w)
		if m := j.model[bs][job]; m != nil {
			m.apply(w)
		}
	}
}

// learn is learnLocked for a write made in a transaction.
func (j *journal) learn(writes ...store.BuildWrite) {
	j.mu.Lock()
	j.learnLocked(writes)
	j.mu.Unlock()
}

// seed sets the model of a buildset just made, all of whose jobs wait.
func (j *journal) seed(buildset string, jobs []string) {
	m := make(map[string]*buildModel, len(jobs))
	for _, job := range jobs {
		m[job] = &buildModel{state: store.BuildWaiting}
	}
	j.mu.Lock()
	j.model[buildset] = m
	j.mu.Unlock()
}

// made updates the model after a build write made in a transaction of
// its own: learnt when it was made, forgotten when it was refused (the
// model said otherwise, or did not know).
func (j *journal) made(err error, buildset string, writes ...store.BuildWrite) {
	if err != nil {
		// Its model only: a refusal of a journaled batch of it, not
		// returned yet, still is.
		j.mu.Lock()
		delete(j.model, buildset)
		j.mu.Unlock()
		return
	}
	j.learn(writes...)
}

// forget drops what the store knows of a buildset that ended: its model,
// and a refusal no batch of it will be told.
func (j *journal) forget(buildset string) {
	j.mu.Lock()
	delete(j.model, buildset)
	delete(j.refused, buildset)
	j.mu.Unlock()
}

// tryLocked makes writes on the model if it allows every one of them, in
// order, and reports whether it did; else it leaves the model as it was.
// j.mu is held.
func (j *journal) tryLocked(writes []store.BuildWrite) bool {
	type saved struct {
		m    *buildModel
		prev buildModel
	}
	var undo []saved
	for _, w := range writes {
		bs, job := writeKey(w)
		m := j.model[bs][job]
		if m == nil || !m.allows(w) {
			for i := len(undo) - 1; i >= 0; i-- {
				*undo[i].m = undo[i].prev
			}
			return false
		}
		undo = append(undo, saved{m, buildModel{m.state, m.attempt, slices.Clone(m.open)}})
		m.apply(w)
	}
	return true
}

// refusedFor returns the refusal of a journaled batch of a buildset that
// writes touch, if any.
func (j *journal) refusedFor(writes []store.BuildWrite) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.refused) == 0 {
		return nil
	}
	for _, w := range writes {
		bs, _ := writeKey(w)
		if err := j.refused[bs]; err != nil {
			return err
		}
	}
	return nil
}

// journalWrites appends writes to the journal, and reports whether it
// did, when the model says that every one of them applies and every fence
// they carry is live now. Otherwise (or when the journal cannot be
// written) the caller writes them in a transaction.
func (s *Store) journalWrites(ctx context.Context, writes []store.BuildWrite) bool {
	j := s.j
	if err := s.loadModels(ctx, writes); err != nil {
		return false
	}
	if !s.fencesLive(ctx, writes) {
		return false // the transaction says why
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.off || j.closed || j.broken != nil || j.failing || len(j.pending) >= journalMax || !j.tryLocked(writes) {
		return false
	}
	if err := s.appendLocked(writes); err != nil {
		// The model has the writes: it is forgotten, to be read again.
		for _, w := range writes {
			bs, _ := writeKey(w)
			delete(j.model, bs)
		}
		return false
	}
	j.pending = append(j.pending, writes)
	switch j.n.Add(1) {
	case 1:
		signal(j.kick)
	case journalBatch:
		signal(j.full)
	}
	return true
}

// forgetFences has every fence read again before a batch is journaled.
func (j *journal) forgetFences() {
	j.mu.Lock()
	clear(j.live)
	j.fenced++
	j.mu.Unlock()
}

// fencesLive reports whether every fence writes carry is live: seen live
// within journalDelay (read, or by an apply), or read so now.
func (s *Store) fencesLive(ctx context.Context, writes []store.BuildWrite) bool {
	j := s.j
	var seen store.Fence
	for i, w := range writes {
		f := w.Fence()
		if i > 0 && f == seen {
			continue
		}
		seen = f
		now := time.Now()
		j.mu.Lock()
		at, ok := j.live[f]
		fenced := j.fenced
		j.mu.Unlock()
		if ok && now.Sub(at) < journalDelay {
			continue
		}
		var live bool
		if err := s.rowNow(ctx, fenceLiveSQL, f.Owner, f.Epoch, store.OwnerLive).Scan(&live); err != nil || !live {
			return false
		}
		j.mu.Lock()
		if j.fenced == fenced {
			j.live[f] = now
		}
		j.mu.Unlock()
	}
	return true
}

// signal wakes whoever waits on c, or will.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// fenceLiveSQL reads whether an owner is live with an epoch.
const fenceLiveSQL = `SELECT EXISTS (SELECT 1 FROM owners WHERE id = ? AND epoch = ? AND state = ?)`

// loadModels reads the model of each buildset writes touch that the store
// has not read yet: its builds' states and its attempts without a result.
func (s *Store) loadModels(ctx context.Context, writes []store.BuildWrite) error {
	j := s.j
	var missing []string
	j.mu.Lock()
	for _, w := range writes {
		bs, _ := writeKey(w)
		if _, ok := j.model[bs]; !ok && !slices.Contains(missing, bs) {
			missing = append(missing, bs)
		}
	}
	j.mu.Unlock()
	for _, bs := range missing {
		m, err := s.readModel(ctx, bs)
		if err != nil {
			return err
		}
		j.mu.Lock()
		if _, ok := j.model[bs]; !ok {
			j.model[bs] = m
		}
		j.mu.Unlock()
	}
	return nil
}

// readModel reads a buildset's model from the tables, once what this
// store still has to apply is there: none of the buildset's, as a rule,
// since its batches are journaled only once it has a model.
func (s *Store) readModel(ctx context.Context, buildset string) (map[string]*buildModel, error) {
	if err := s.settle(ctx); err != nil {
		return nil, err
	}
	m := map[string]*buildModel{}
	rows, err := s.rowsNow(ctx, `SELECT job, state, attempt FROM builds WHERE buildset_id = ?`, buildset)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			job, state string
			attempt    int
		)
		if err := rows.Scan(&job, &state, &attempt); err != nil {
			return nil, err
		}
		m[job] = &buildModel{state: store.BuildState(state), attempt: attempt}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	open, err := s.rowsNow(ctx, `SELECT job, number FROM attempts WHERE buildset_id = ? AND result = ''`, buildset)
	if err != nil {
		return nil, err
	}
	defer open.Close()
	for open.Next() {
		var (
			job string
			n   int
		)
		if err := open.Scan(&job, &n); err != nil {
			return nil, err
		}
		if b := m[job]; b != nil {
			b.open = append(b.open, n)
		}
	}
	return m, errors.Join(open.Err(), open.Close())
}

// appendLocked writes one record of writes at the end of the journal,
// making the journal's file and starting its applier on the first call.
// s.j.mu is held.
func (s *Store) appendLocked(writes []store.BuildWrite) error {
	j := s.j
	if j.f == nil {
		if err := j.create(); err != nil {
			return err
		}
		j.done = make(chan struct{})
		go s.applyLoop()
	}
	j.buf = appendRecord(j.buf[:0], writes)
	if _, err := j.f.Write(j.buf); err != nil {
		// A full disk, as a rule: what was written of the record goes,
		// so that the next record follows the last whole one. If it
		// cannot go, nothing more is journaled.
		if terr := j.f.Truncate(j.size); terr != nil {
			j.broken = errors.Join(err, terr)
		}
		return err
	}
	j.size += int64(len(j.buf))
	return nil
}

// create makes this store's journal file, locked for as long as the store
// is open: a journal whose lock can be taken is a dead process's. It is
// made under another name and renamed once locked, so that no one finds
// it unlocked.
func (j *journal) create() error {
	if err := os.MkdirAll(j.dir, 0o755); err != nil {
		return err
	}
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	base := filepath.Join(j.dir, fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(id[:])))
	f, err := os.OpenFile(base+journalNew, os.O_RDWR|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		os.Remove(base + journalNew)
		return fmt.Errorf("lock %s: %w", base+journalNew, err)
	}
	if err := os.Rename(base+journalNew, base+journalSuffix); err != nil {
		f.Close()
		os.Remove(base + journalNew)
		return err
	}
	j.f, j.path = f, base+journalSuffix
	return nil
}

// applyLoop applies pending batches journalDelay after the first of them,
// or at once when journalBatch are waiting, until the store closes. An
// apply the database refuses for now is tried again, later and later.
func (s *Store) applyLoop() {
	j := s.j
	defer close(j.done)
	retry := time.Duration(0)
	for {
		if j.n.Load() == 0 {
			select {
			case <-j.stop:
				return
			case <-j.kick:
			}
		}
		wait, full := j.delay, j.full
		if retry > 0 {
			wait, full = retry, nil // a database that refused is not hurried
		}
		if retry > 0 || j.n.Load() < journalBatch {
			t := time.NewTimer(wait)
			select {
			case <-j.stop:
				t.Stop()
				return
			case <-full:
			case <-t.C:
			}
			t.Stop()
		}
		if err := s.flush(context.Background()); err != nil {
			retry = min(max(2*retry, journalDelay), time.Second)
		} else {
			retry = 0
		}
	}
}

// settle applies what this store has journaled and not applied yet, before
// a read or another write of its own.
func (s *Store) settle(ctx context.Context) error {
	if s.j.n.Load() == 0 {
		return nil
	}
	return s.flush(ctx)
}

// flush applies the pending batches in one transaction, in order. A batch
// the database refuses (store.ErrFenced, ErrConflict, ErrNotFound, or any
// failure of its own) is dropped, and its refusal kept for the next
// WriteBuilds of its buildset; the database failing for now (transient)
// leaves them all pending. Once none is pending, the journal's file is
// emptied.
func (s *Store) flush(ctx context.Context) error {
	j := s.j
	j.applyMu.Lock()
	defer j.applyMu.Unlock()
	j.mu.Lock()
	batches, fenced := j.pending, j.fenced
	j.mu.Unlock()
	if len(batches) == 0 {
		return nil
	}
	began := time.Now()
	refused, err := s.applyBatches(ctx, batches)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.failing = err != nil
	if err != nil {
		return fmt.Errorf("sqlite: apply the journal: %w", err)
	}
	for i, err := range refused {
		if err == nil {
			if j.fenced != fenced {
				continue // seen live before a fence of this store's: read again
			}
			// Its statements found its fences live, after began.
			for _, w := range batches[i] {
				if f := w.Fence(); j.live[f].Before(began) {
					j.live[f] = began
				}
			}
			continue
		}
		s.CountFenced(err)
		for _, w := range batches[i] {
			bs, _ := writeKey(w)
			if j.refused[bs] == nil {
				j.refused[bs] = fmt.Errorf("a write made earlier, applied late: %w", err)
			}
			delete(j.model, bs)
		}
	}
	j.pending = j.pending[len(batches):]
	if len(j.pending) == 0 {
		j.pending = nil
		if j.f != nil {
			if err := j.f.Truncate(0); err != nil && j.broken == nil {
				j.broken = err
			}
			j.size = 0
		}
	}
	j.n.Store(int64(len(j.pending)))
	return nil
}

// applyBatches applies batches in one transaction and returns the refusal
// of each batch that was refused (nil for the others), or the error that
// stopped the transaction. The batches are first applied together, as few
// statements (applyMerged); only when that meets a refusal are they
// applied again, each with its own statements in a savepoint.
func (s *Store) applyBatches(ctx context.Context, batches [][]store.BuildWrite) ([]error, error) {
	refused := make([]error, len(batches))
	err := s.rawTxNow(ctx, func(x wtx) error { return applyMerged(ctx, x, batches) })
	if !errors.Is(err, errRefused) {
		return refused, err
	}
	s.j.oneByOne.Add(1)
	err = s.rawTxNow(ctx, func(x wtx) error {
		clear(refused)
		return applyEach(ctx, x, batches, func(i int, err error) { refused[i] = err })
	})
	return refused, err
}

// errRefused is applyMerged finding a write that would be refused.
var errRefused = errors.New("a journaled batch was refused")

// Statements of applyMerged: an attempt started and finished in the same
// apply is inserted finished, and a build started and finished in it is
// updated once, with the conditions of the statements they stand for
// (startBuild; a build just started is RUNNING with a start time, as
// finishBuildSQL wants it).
const (
	insertAttempt         = `INSERT INTO attempts (buildset_id, job, number, owner, started_at, log) VALUES (?, ?, ?, ?, ?, ?)`
	insertFinishedAttempt = `INSERT INTO attempts (buildset_id, job, number, owner, started_at, log, result, error, finished_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	startAndFinishBuild = `UPDATE builds SET state = '` + string(store.BuildDone) + `', attempt = ?, log = ?,
			started_at = COALESCE(started_at, ?), result = ?, reason = ?, finished_at = ?
		WHERE buildset_id = ? AND job = ? AND state <> '` + string(store.BuildDone) + `' AND attempt < ?`
)

// applyMerged applies batches in the transaction x: every fence they carry
// checked once, then each build's writes in order, a start merged with
// the end of its attempt and its build that follow it. A no-op job's
// start and end are then two statements instead of four. It returns
// errRefused if a fence or a write would be refused: one statement that
// changes no row, or fails but for the database being unavailable.
func applyMerged(ctx context.Context, x wtx, batches [][]store.BuildWrite) error {
	type key struct{ buildset, job string }
	var (
		order  []key
		fences []store.Fence
	)
	writes := map[key][]store.BuildWrite{}
	for _, b := range batches {
		for _, w := range b {
			if f := w.Fence(); !slices.Contains(fences, f) {
				fences = append(fences, f)
			}
			bs, job := writeKey(w)
			k := key{bs, job}
			if _, ok := writes[k]; !ok {
				order = append(order, k)
			}
			writes[k] = append(writes[k], w)
		}
	}
	for _, f := range fences {
		if err := checkFence(ctx, x, f); err != nil {
			return refusal(err)
		}
	}
	one := func(n int64, err error) error {
		if err != nil {
			return refusal(err)
		}
		if n != 1 {
			return errRefused
		}
		return nil
	}
	for _, k := range order {
		ws := writes[k]
		for i := 0; i < len(ws); i++ {
			var err error
			switch w := ws[i]; {
			case w.Start != nil:
				a := w.Start.Attempt
				var fin *store.FinishAttemptParams
				var end *store.FinishBuildParams
				if i+1 < len(ws) && ws[i+1].FinishAttempt != nil && ws[i+1].FinishAttempt.Number == a.Number {
					fin = ws[i+1].FinishAttempt
					i++
					if i+1 < len(ws) && ws[i+1].FinishBuild != nil {
						end = ws[i+1].FinishBuild
						i++
					}
				}
				if end != nil {
					err = one(x.exec(ctx, startAndFinishBuild, a.Number, a.Log, nanos(a.StartedAt),
						string(end.Result), end.Reason, optNanos(end.At), a.BuildsetID, a.Job, a.Number))
				} else {
					err = one(x.exec(ctx, startBuild, a.Number, a.Log, nanos(a.StartedAt), a.BuildsetID, a.Job, a.Number))
				}
				if err == nil && fin != nil {
					err = one(x.exec(ctx, insertFinishedAttempt, a.BuildsetID, a.Job, a.Number, a.Owner, nanos(a.StartedAt), a.Log,
						string(fin.Result), fin.Error, optNanos(fin.At)))
				} else if err == nil {
					err = one(x.exec(ctx, insertAttempt, a.BuildsetID, a.Job, a.Number, a.Owner, nanos(a.StartedAt), a.Log))
				}
			case w.FinishAttempt != nil:
				p := w.FinishAttempt
				err = one(x.exec(ctx, finishAttemptSQL, string(p.Result), p.Error, optNanos(p.At), p.BuildsetID, p.Job, p.Number))
			case w.FinishBuild != nil:
				p := w.FinishBuild
				err = one(x.exec(ctx, finishBuildSQL, string(p.Result), p.Reason, optNanos(p.At), p.BuildsetID, p.Job))
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// refusal is err as applyMerged returns it: errRefused, unless the
// database is unavailable for now.
func refusal(err error) error {
	if transient(err) {
		return err
	}
	return errRefused
}

// applyEach applies batches in order in the transaction x, each in a
// savepoint: a batch refused is rolled back alone and told to refuse.
// Whatever fails a batch's writes but the database being unavailable is
// its refusal: a batch that can never be applied must not hold up the
// others, nor every write of the process after them.
func applyEach(ctx context.Context, x wtx, batches [][]store.BuildWrite, refuse func(i int, err error)) error {
	for i, b := range batches {
		if _, err := x.exec(ctx, `SAVEPOINT journal_batch`); err != nil {
			return err
		}
		if err := writeBuilds(ctx, x, b); err != nil {
			if transient(err) {
				return err
			}
			if _, err := x.exec(ctx, `ROLLBACK TO journal_batch`); err != nil {
				return err
			}
			refuse(i, err)
		}
		if _, err := x.exec(ctx, `RELEASE journal_batch`); err != nil {
			return err
		}
	}
	return nil
}

// transient reports whether err is the database failing for now (a full
// disk, an I/O error, a lock held too long, a context ended) rather than
// refusing a write.
func transient(err error) bool {
	if errors.Is(unavailable(err), store.ErrUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_INTERRUPT:
			return true
		}
	}
	return false
}

// closeJournal stops the applier, applies what is pending and removes the
// journal's file; a file whose batches could not all be applied is left,
// unlocked, for the next process to apply (recoverJournals).
func (s *Store) closeJournal() error {
	j := s.j
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	done := j.done
	j.mu.Unlock()
	close(j.stop)
	if done != nil {
		<-done
	}
	err := s.flush(context.Background())
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return err
	}
	if err == nil && len(j.pending) == 0 {
		err = os.Remove(j.path)
	}
	return errors.Join(err, j.f.Close())
}

// recoverJournals applies the journals of dead processes: those whose lock
// can be taken. Each batch is applied in a savepoint, and skipped if it no
// longer applies (applied already, or its owner fenced since); the file is
// removed once applied. Journals are not merged (applyMerged): most of a
// dead process's batches may be applied already.
func (s *Store) recoverJournals(ctx context.Context) error {
	entries, err := os.ReadDir(s.j.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sqlite: journals: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, journalSuffix) && !strings.HasSuffix(name, journalNew) {
			continue
		}
		if err := s.recoverJournal(ctx, filepath.Join(s.j.dir, name)); err != nil {
			return fmt.Errorf("sqlite: journal %s: %w", name, err)
		}
	}
	return nil
}

func (s *Store) recoverJournal(ctx context.Context, path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // applied by another process meanwhile
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // a live process's
		}
		return err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	batches := readRecords(data)
	if len(batches) > 0 {
		err := s.rawTxNow(ctx, func(x wtx) error {
			return applyEach(ctx, x, batches, func(int, error) {})
		})
		if err != nil {
			return err
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// A record is a batch of build writes: its length and the CRC-32C of its
// body, four bytes each (little-endian), then the body. A record cut short
// or damaged ends the journal (a crash in its write).

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const (
	recStart byte = iota + 1
	recFinishAttempt
	recFinishBuild
)

func appendRecord(buf []byte, writes []store.BuildWrite) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, 8)...)
	buf = binary.AppendUvarint(buf, uint64(len(writes)))
	for _, w := range writes {
		switch {
		case w.Start != nil:
			a := w.Start.Attempt
			buf = append(buf, recStart)
			buf = appendStrings(buf, a.BuildsetID, a.Job, a.Owner, a.Log, w.Start.Fence.Owner)
			buf = binary.AppendVarint(buf, int64(a.Number))
			buf = appendTime(buf, a.StartedAt)
			buf = binary.AppendVarint(buf, w.Start.Fence.Epoch)
		case w.FinishAttempt != nil:
			p := w.FinishAttempt
			buf = append(buf, recFinishAttempt)
			buf = appendStrings(buf, p.BuildsetID, p.Job, string(p.Result), p.Error, p.Fence.Owner)
			buf = binary.AppendVarint(buf, int64(p.Number))
			buf = appendTime(buf, p.At)
			buf = binary.AppendVarint(buf, p.Fence.Epoch)
		case w.FinishBuild != nil:
			p := w.FinishBuild
			buf = append(buf, recFinishBuild)
			buf = appendStrings(buf, p.BuildsetID, p.Job, string(p.Result), p.Reason, p.Fence.Owner)
			buf = appendTime(buf, p.At)
			buf = binary.AppendVarint(buf, p.Fence.Epoch)
		}
	}
	head, body := buf[start:start+8], buf[start+8:]
	binary.LittleEndian.PutUint32(head[0:4], uint32(len(body)))
	binary.LittleEndian.PutUint32(head[4:8], crc32.Checksum(body, crcTable))
	return buf
}

func appendStrings(buf []byte, ss ...string) []byte {
	for _, s := range ss {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	return buf
}

// appendTime writes t as Unix nanoseconds, 0 for the zero time.
func appendTime(buf []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(buf, 0)
	}
	return binary.AppendVarint(buf, t.UnixNano())
}

// readRecords decodes the records of a journal, up to the first that is
// cut short or damaged.
func readRecords(data []byte) [][]store.BuildWrite {
	var out [][]store.BuildWrite
	for len(data) >= 8 {
		n := int(binary.LittleEndian.Uint32(data[0:4]))
		if n > len(data)-8 {
			break
		}
		body := data[8 : 8+n]
		if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(data[4:8]) {
			break
		}
		writes, ok := decodeRecord(body)
		if !ok {
			break
		}
		out = append(out, writes)
		data = data[8+n:]
	}
	return out
}

// decoder reads a record's body; a read past its end sets bad.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.bad || n > uint64(len(d.b)) {
		d.bad = true
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) time() time.Time {
	if v := d.varint(); v != 0 {
		return time.Unix(0, v).UTC()
	}
	return time.Time{}
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func decodeRecord(body []byte) ([]store.BuildWrite, bool) {
	d := &decoder{b: body}
	n := d.uvarint()
	if d.bad || n > uint64(len(body)) {
		return nil, false
	}
	writes := make([]store.BuildWrite, 0, n)
	for range n {
		switch d.byte() {
		case recStart:
			a := &store.Attempt{}
			var f store.Fence
			a.BuildsetID, a.Job, a.Owner, a.Log, f.Owner = d.str(), d.str(), d.str(), d.str(), d.str()
			a.Number, a.StartedAt, f.Epoch = int(d.varint()), d.time(), d.varint()
			writes = append(writes, store.BuildWrite{Start: &store.StartAttemptParams{Attempt: a, Fence: f}})
		case recFinishAttempt:
			p := &store.FinishAttemptParams{}
			p.BuildsetID, p.Job, p.Result, p.Error, p.Fence.Owner = d.str(), d.str(), store.Result(d.str()), d.str(), d.str()
			p.Number, p.At, p.Fence.Epoch = int(d.varint()), d.time(), d.varint()
			writes = append(writes, store.BuildWrite{FinishAttempt: p})
		case recFinishBuild:
			p := &store.FinishBuildParams{}
			p.BuildsetID, p.Job, p.Result, p.Reason, p.Fence.Owner = d.str(), d.str(), store.Result(d.str()), d.str(), d.str()
			p.At, p.Fence.Epoch = d.time(), d.varint()
			writes = append(writes, store.BuildWrite{FinishBuild: p})
		default:
			return nil, false
		}
		if d.bad {
			return nil, false
		}
	}
	return writes, len(d.b) == 0
}
