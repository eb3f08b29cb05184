package ansible

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/sortie-ci/sortie/internal/store"
)

// The bounds of what is kept of one build (docs/ansible.md). The recaps
// count every result whatever is kept.
const (
	// MaxResults is how many task results a build keeps, of
	// which at most MaxRoutine ok or skipped ones: past those, only
	// changed, failed and unreachable results are kept, up to MaxResults.
	MaxResults = 10000
	MaxRoutine = 5000
	// MaxTasks is how many tasks a build keeps (columns of its grid).
	MaxTasks = 2000
	// MaxHosts is how many hosts a build keeps recaps of.
	MaxHosts = 10000
	// MaxMessage and MaxDiff bound one result's failure message and diff;
	// MaxText bounds the messages and diffs of a build together, past
	// which each is cut to MaxTextOver.
	MaxMessage  = 2 << 10
	MaxDiff     = 16 << 10
	MaxText     = 1 << 20
	MaxTextOver = 200
	// MaxName bounds task, play and host names.
	MaxName = 200
	// MaxLine is the longest event line read; a longer one is skipped.
	MaxLine = 1 << 20
)

// DefaultFlush is how often a Recorder writes what it read to the store.
const DefaultFlush = time.Second

// Sink is where a Recorder keeps what it read: the store's Hosts role.
type Sink interface {
	UpdateHosts(ctx context.Context, p store.HostsUpdate) error
}

// Target names the attempt whose events a Recorder reads.
type Target struct {
	Buildset string
	Job      string
	Attempt  int
	// Fence is the right to write of the process that runs the attempt.
	Fence store.Fence
}

// Recorder reads the callback plugin's events of one attempt (it is the
// io.Writer the bastion copies the events file to) and keeps them in a
// Sink: the tasks as they get results, each result, and each host's recap,
// counted from the results until the play's own recap (its stats) replaces
// the counts. It writes to the sink every Flush while it runs (Start), and
// once more when closed.
//
// Make it with NewRecorder, set its fields, call Start, and Close it once
// the attempt is over. It is safe for concurrent use.
type Recorder struct {
	// Flush is how often it writes to the sink; 0 means DefaultFlush.
	Flush time.Duration
	// Redact, when set, is applied to every text kept (names, messages,
	// diffs): the secrets of the build's log.
	Redact func(string) string

	sink   Sink
	target Target

	mu       sync.Mutex
	partial  []byte // an incomplete line
	overlong bool   // partial is the rest of a line over MaxLine: skipped
	bad      int    // lines that could not be read
	runs     map[string]*run
	runList  []*run
	plays    map[string]string // name by id
	tasks    map[string]*task
	nTasks   int
	hosts    map[string]bool
	// hostsOver counts the hosts past MaxHosts, dropped their results
	// not kept.
	hostsOver, dropped int
	kept, routine      int // results kept, of which ok or skipped
	textUsed           int // bytes of messages and diffs kept

	// What the next write to the sink carries.
	newTasks   []store.HostTask
	newResults []store.HostResult
	dirty      map[string]bool // hosts whose recap changed
	changed    bool            // anything at all since the last write
	note       string          // the note written last

	flushMu sync.Mutex      // one write to the sink at a time
	ctx     context.Context // Start's, once called
	closed  bool            // Close was called
	stop    chan struct{}   // the goroutine of Start, once launched
	done    chan struct{}
}

// run is one ansible-playbook process: its own recap.
type run struct {
	id       string
	playbook string
	results  int
	// counted are each host's counts from the results; stats, once the
	// run's recap came, replace them.
	counted map[string]*store.HostCounts
	stats   map[string]store.HostCounts
}

// task is a task the events named.
type task struct {
	name, play string
	index      int // -1 until its first result is kept
}

// NewRecorder returns a Recorder of the attempt t writing to sink.
func NewRecorder(sink Sink, t Target) *Recorder {
	// The maps are made with the first line read: most attempts run no
	// Ansible.
	return &Recorder{sink: sink, target: t}
}

// Start writes what was read to the sink every Flush until Close. The
// goroutine that does starts with the first event written, so that an
// attempt that runs no Ansible, most of them, costs none. Calling it twice
// starts nothing more; after Close it starts nothing.
func (r *Recorder) Start(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx != nil || r.closed {
		return
	}
	r.ctx = ctx
}

// launch starts the goroutine of Start; r.mu is held.
func (r *Recorder) launch() {
	ctx := r.ctx
	every := r.Flush
	if every <= 0 {
		every = DefaultFlush
	}
	stop, done := make(chan struct{}), make(chan struct{})
	r.stop, r.done = stop, done
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				r.flush(ctx)
			}
		}
	}()
}

// Write reads events; it never fails, whatever p holds.
func (r *Recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	if n > 0 && r.ctx != nil && r.stop == nil && !r.closed {
		r.launch()
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.hold(p)
			break
		}
		if r.overlong {
			r.overlong = false
		} else if len(r.partial) > 0 {
			r.line(append(r.partial, p[:i]...))
		} else {
			r.line(p[:i])
		}
		r.partial = r.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

// hold keeps the start of a line until its end comes; past MaxLine it is
// counted bad and the rest of it skipped.
func (r *Recorder) hold(p []byte) {
	if r.overlong {
		return
	}
	if len(r.partial)+len(p) > MaxLine {
		r.bad++
		r.changed = true
		r.overlong = true
		r.partial = r.partial[:0]
		return
	}
	r.partial = append(r.partial, p...)
}

// event is any line of the plugin's (plugin/sortie.py says which fields
// each event has).
type event struct {
	Ev  string `json:"ev"`
	Run string `json:"run"`

	Playbook string `json:"playbook"`

	ID      string `json:"id"`
	Name    string `json:"name"`
	Play    string `json:"play"`
	Handler bool   `json:"handler"`

	Task    string `json:"task"`
	Host    string `json:"host"`
	Status  string `json:"status"`
	Ignored bool   `json:"ignored"`
	MS      int64  `json:"ms"`
	Msg     string `json:"msg"`
	Diff    string `json:"diff"`

	Hosts map[string]stats `json:"hosts"`
}

// stats is one host's recap as the plugin writes it (Ansible's
// AggregateStats.summarize).
type stats struct {
	OK          int `json:"ok"`
	Changed     int `json:"changed"`
	Failures    int `json:"failures"`
	Unreachable int `json:"unreachable"`
	Skipped     int `json:"skipped"`
	Rescued     int `json:"rescued"`
	Ignored     int `json:"ignored"`
}

// line reads one event; r.mu is held.
func (r *Recorder) line(b []byte) {
	if r.runs == nil {
		r.runs, r.plays, r.tasks = map[string]*run{}, map[string]string{}, map[string]*task{}
		r.hosts, r.dirty = map[string]bool{}, map[string]bool{}
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return
	}
	var ev event
	if err := json.Unmarshal(b, &ev); err != nil || ev.Run == "" {
		r.bad++
		r.changed = true
		return
	}
	rn := r.runs[ev.Run]
	if rn == nil {
		rn = &run{id: ev.Run, counted: map[string]*store.HostCounts{}}
		r.runs[ev.Run] = rn
		r.runList = append(r.runList, rn)
		r.changed = true
	}
	switch ev.Ev {
	case "start":
		rn.playbook = ev.Playbook
	case "play":
		if _, ok := r.plays[ev.ID]; ev.ID != "" && !ok {
			r.plays[ev.ID] = r.clean(ev.Name, MaxName)
			r.changed = true
		}
	case "task":
		if ev.ID != "" && r.tasks[ev.ID] == nil {
			r.tasks[ev.ID] = &task{name: r.clean(ev.Name, MaxName), play: r.plays[ev.Play], index: -1}
		}
	case "result":
		r.result(rn, ev)
	case "stats":
		rn.stats = map[string]store.HostCounts{}
		for h, s := range ev.Hosts {
			h = r.clean(h, MaxName)
			if !r.host(h) {
				continue
			}
			rn.stats[h] = store.HostCounts{OK: s.OK, Changed: s.Changed, Failed: s.Failures, Unreachable: s.Unreachable,
				Skipped: s.Skipped, Rescued: s.Rescued, Ignored: s.Ignored}
			r.dirty[h] = true
		}
		// A host the results named but the recap does not keeps its counts.
		for h := range rn.counted {
			r.dirty[h] = true
		}
		r.changed = true
	}
}

// host reports whether h is kept, keeping it if there is room.
func (r *Recorder) host(h string) bool {
	if r.hosts[h] {
		return true
	}
	if len(r.hosts) >= MaxHosts {
		r.hostsOver++
		return false
	}
	r.hosts[h] = true
	return true
}

// result counts one result and keeps it if the bounds allow.
func (r *Recorder) result(rn *run, ev event) {
	status := store.HostStatus(ev.Status)
	switch status {
	case store.HostOK, store.HostChanged, store.HostFailed, store.HostUnreachable, store.HostSkipped:
	default:
		r.bad++
		r.changed = true
		return
	}
	host := r.clean(ev.Host, MaxName)
	r.changed = true
	rn.results++
	if !r.host(host) {
		r.dropped++
		return
	}
	c := rn.counted[host]
	if c == nil {
		c = &store.HostCounts{}
		rn.counted[host] = c
	}
	// As Ansible's strategy counts them, but for rescues, which the
	// callback cannot tell: the recap corrects them.
	switch {
	case status == store.HostOK || status == store.HostChanged:
		c.OK++
		if status == store.HostChanged {
			c.Changed++
		}
	case status == store.HostFailed && ev.Ignored:
		c.OK++
		c.Ignored++
	case status == store.HostFailed:
		c.Failed++
	case status == store.HostUnreachable:
		c.Unreachable++
	case status == store.HostSkipped:
		c.Skipped++
	}
	if rn.stats == nil {
		r.dirty[host] = true
	}

	routine := status == store.HostOK || status == store.HostSkipped
	if r.kept >= MaxResults || routine && r.routine >= MaxRoutine {
		r.dropped++
		return
	}
	t := r.tasks[ev.Task]
	if t == nil {
		t = &task{name: "(a task the events did not name)", index: -1}
		r.tasks[ev.Task] = t
	}
	if t.index < 0 {
		if r.nTasks >= MaxTasks {
			r.dropped++
			return
		}
		t.index = r.nTasks
		r.nTasks++
		r.newTasks = append(r.newTasks, store.HostTask{Index: t.index, Play: t.play, Name: t.name})
	}
	res := store.HostResult{
		Seq: r.kept, Task: t.index, Host: host, Status: status, Ignored: ev.Ignored,
		Duration: time.Duration(max(ev.MS, 0)) * time.Millisecond, Diff: r.text(ev.Diff, MaxDiff),
	}
	if status == store.HostFailed || status == store.HostUnreachable {
		res.Message = r.text(ev.Msg, MaxMessage)
	}
	r.kept++
	if routine {
		r.routine++
	}
	r.newResults = append(r.newResults, res)
}

// text redacts and bounds a message or a diff.
func (r *Recorder) text(s string, limit int) string {
	if s == "" {
		return ""
	}
	if r.textUsed >= MaxText {
		limit = MaxTextOver
	}
	s = r.clean(s, limit)
	r.textUsed += len(s)
	return s
}

// clean makes s valid UTF-8 without NULs (PostgreSQL's text takes
// neither), redacts it and cuts it to limit bytes, saying so.
func (r *Recorder) clean(s string, limit int) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "\uFFFD")
	if r.Redact != nil {
		s = r.Redact(s)
	}
	if len(s) <= limit {
		return s
	}
	const cut = " […]"
	n := max(limit-len(cut), 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + cut
}

// recap is a host's recap: the sum over the runs of each one's recap, or
// its counts from the results while it has none. r.mu is held.
func (r *Recorder) recap(h string) store.HostCounts {
	var sum store.HostCounts
	for _, rn := range r.runList {
		if rn.stats != nil {
			sum = sum.Add(rn.stats[h])
		} else if c := rn.counted[h]; c != nil {
			sum = sum.Add(*c)
		}
	}
	return sum
}

// summary is what the results are as a whole, with a note for people when
// something went wrong; final says the attempt is over, when a run without
// its recap was cut short. r.mu is held.
func (r *Recorder) summary(final bool) store.HostsSummary {
	s := store.HostsSummary{Attempt: r.target.Attempt, Runs: len(r.runList), Plays: len(r.plays), Dropped: r.dropped}
	var notes []string
	if final {
		for _, rn := range r.runList {
			if rn.stats != nil {
				continue
			}
			what := "an ansible-playbook"
			if rn.playbook != "" {
				what = "ansible-playbook " + rn.playbook
			}
			notes = append(notes, fmt.Sprintf("%s ended before its recap (killed, or its output cut short): its hosts' counts come from the %d results received", what, rn.results))
		}
	}
	if r.bad > 0 {
		notes = append(notes, fmt.Sprintf("%d %s of the Ansible callback's output could not be read and %s left out", r.bad, plural(r.bad, "line", "lines"), plural(r.bad, "was", "were")))
	}
	if r.hostsOver > 0 {
		notes = append(notes, fmt.Sprintf("%d %s past the first %d %s not kept", r.hostsOver, plural(r.hostsOver, "host", "hosts"), MaxHosts, plural(r.hostsOver, "is", "are")))
	}
	s.Note = strings.Join(notes, "; ")
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// take returns the update of what changed since the last one, and
// forgets it; ok is false when nothing did. r.mu is held.
func (r *Recorder) take(final bool) (up store.HostsUpdate, ok bool) {
	sm := r.summary(final)
	if !r.changed && sm.Note == r.note {
		return up, false
	}
	if len(r.runList) == 0 && r.bad == 0 {
		return up, false // no event: not an Ansible build
	}
	up = store.HostsUpdate{BuildsetID: r.target.Buildset, Job: r.target.Job, Summary: sm, Tasks: r.newTasks, Results: r.newResults, Fence: r.target.Fence}
	hosts := make([]string, 0, len(r.dirty))
	for h := range r.dirty {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		up.Recaps = append(up.Recaps, store.HostRecap{Host: h, HostCounts: r.recap(h)})
	}
	r.newTasks, r.newResults, r.dirty, r.changed, r.note = nil, nil, map[string]bool{}, false, sm.Note
	return up, true
}

// giveBack puts an update that could not be written back in front of
// what came since, for the next write.
func (r *Recorder) giveBack(up store.HostsUpdate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.newTasks = append(up.Tasks, r.newTasks...)
	r.newResults = append(up.Results, r.newResults...)
	for _, rc := range up.Recaps {
		r.dirty[rc.Host] = true
	}
	r.changed = true
}

// flush writes what changed to the sink.
func (r *Recorder) flush(ctx context.Context) {
	r.flushOnce(ctx, false)
}

func (r *Recorder) flushOnce(ctx context.Context, final bool) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	up, ok := r.take(final)
	r.mu.Unlock()
	if !ok {
		return nil
	}
	err := r.sink.UpdateHosts(ctx, up)
	if err != nil {
		r.giveBack(up)
	}
	return err
}

// Outcome is what a Recorder read of an attempt, once closed.
type Outcome struct {
	// Recorded says the attempt reported results (it ran Ansible).
	Recorded bool
	// Hosts counts the hosts with results; Changed, Failed and
	// Unreachable those whose recap counts such results.
	Hosts, Changed, Failed, Unreachable int
	// Note says what went wrong reading the events, for the build's log
	// and page ("" when nothing did).
	Note string
	// Err is why the results could not be written to the store.
	Err error
}

// Close stops the writes of Start, reads a last line left without its
// newline, and writes everything to the sink (trying a few times, within
// ctx). It returns what was read. Calling it twice is harmless.
func (r *Recorder) Close(ctx context.Context) Outcome {
	r.mu.Lock()
	stop, done := r.stop, r.done
	r.stop, r.closed = nil, true
	if len(r.partial) > 0 && !r.overlong {
		r.line(r.partial)
	}
	r.partial, r.overlong = nil, false
	r.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	var err error
	for try := range 3 {
		if err = r.flushOnce(ctx, true); err == nil || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(time.Duration(try+1) * 200 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Outcome{Recorded: len(r.runList) > 0, Hosts: len(r.hosts), Note: r.note, Err: err}
	for h := range r.hosts {
		c := r.recap(h)
		if c.Changed > 0 {
			out.Changed++
		}
		if c.Failed > 0 {
			out.Failed++
		}
		if c.Unreachable > 0 {
			out.Unreachable++
		}
	}
	return out
}
