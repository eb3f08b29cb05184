package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store"
)

// progress shows a running buildset. On a terminal it redraws one line per
// running job with its elapsed time and the counts of done, failed and
// waiting jobs; otherwise it prints one timestamped line per state change.
// Quiet, it prints only the buildset's first line, a line per build that
// did not succeed, and the result, as quiet as `make -s`. It is the
// buildset.Runner's Observer.
//
// Between Start and Stop, lines that are not redrawn go through a buffer
// flushed every flushEvery: a write per line cost about 60 µs a job on a
// run of short jobs.
type progress struct {
	out   io.Writer // where everything goes
	w     io.Writer // out, or buf between Start and Stop when not live
	buf   *bufio.Writer
	live  bool
	quiet bool

	mu    sync.Mutex
	plan  *graph.Plan
	began time.Time
	// remaining is each job's longest remaining path from history (nil:
	// no estimate).
	remaining    map[string]time.Duration
	finishedJobs map[string]bool
	running      map[string]time.Time // job -> attempt start
	attempt      map[string]int
	done         int
	failed       int
	drawn        int // lines of the live block on screen
	stop         chan struct{}
	finished     chan struct{}
}

func newProgress(w io.Writer, quiet bool) *progress {
	live := false
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !quiet {
		live = true
	}
	return &progress{out: w, w: w, live: live, quiet: quiet, running: map[string]time.Time{}, attempt: map[string]int{}, finishedJobs: map[string]bool{}}
}

// flushEvery is how long a line may wait in the buffer.
const flushEvery = 200 * time.Millisecond

// Start begins redrawing (on a terminal), or buffering lines. Stop ends
// it, flushes and waits. Start is not to be called twice.
func (p *progress) Start() {
	p.stop, p.finished = make(chan struct{}), make(chan struct{})
	if !p.live {
		p.mu.Lock()
		p.buf = bufio.NewWriterSize(p.out, 64<<10)
		p.w = p.buf
		p.mu.Unlock()
		go p.flushing()
		return
	}
	go func() {
		defer close(p.finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				p.mu.Lock()
				p.clear()
				p.mu.Unlock()
				return
			case <-t.C:
				p.mu.Lock()
				p.redraw()
				p.mu.Unlock()
			}
		}
	}()
}

// flushing flushes the buffer every flushEvery, and at Stop, after which
// lines go straight out again.
func (p *progress) flushing() {
	defer close(p.finished)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			p.mu.Lock()
			defer p.mu.Unlock()
			p.buf.Flush()
			p.w, p.buf = p.out, nil
			return
		case <-t.C:
			p.mu.Lock()
			p.buf.Flush()
			p.mu.Unlock()
		}
	}
}

// Stop is safe before Start and twice.
func (p *progress) Stop() {
	if p.stop == nil {
		return
	}
	close(p.stop)
	<-p.finished
	p.stop = nil
}

// Note prints a line of its own among the progress.
func (p *progress) Note(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.print(line)
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (p *progress) BuildsetStarted(bs *store.Buildset, plan *graph.Plan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.plan, p.began = plan, time.Now()
	p.print(fmt.Sprintf("%s buildset %s: pipeline %s at %.12s, %d jobs", stamp(time.Now()), bs.ID, bs.Pipeline, bs.Commit, len(plan.Jobs)))
}

// Estimated keeps each job's longest remaining path from history
// (buildset.EstimateObserver), for the time left.
func (p *progress) Estimated(remaining map[string]time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.remaining = remaining
}

// left estimates the time the buildset still needs: the longest remaining
// path from a job not finished, less what a running one has run. ok is
// false without history.
func (p *progress) left(now time.Time) (time.Duration, bool) {
	if p.remaining == nil || p.plan == nil {
		return 0, false
	}
	var most time.Duration
	for _, j := range p.plan.Jobs {
		if p.finishedJobs[j.Name] {
			continue
		}
		d := p.remaining[j.Name]
		if start, ok := p.running[j.Name]; ok {
			d -= now.Sub(start)
		}
		most = max(most, d)
	}
	return most, true
}

func (p *progress) AttemptStarted(job string, n int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running[job], p.attempt[job] = at, n
	if !p.live && !p.quiet {
		fmt.Fprintf(p.w, "%s start   %s (attempt %d)\n", stamp(at), job, n)
	}
}

// BastionPrepared says what the bootstrap job did on the bastion
// (buildset.BastionObserver).
func (p *progress) BastionPrepared(job string, checkout time.Duration, hasInstall, installed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.quiet {
		return
	}
	line := fmt.Sprintf("%s bastion %s: checkout made in %s", stamp(time.Now()), job, checkout.Round(time.Millisecond))
	switch {
	case installed:
		line += "; tools installed"
	case hasInstall:
		line += "; tools already up to date"
	}
	p.print(line)
}

func (p *progress) BuildFinished(job string, res store.Result, reason string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	start, started := p.running[job]
	delete(p.running, job)
	p.finishedJobs[job] = true
	p.done++
	if res != store.Success {
		p.failed++
	} else if p.quiet {
		return // no line to make
	}
	line := fmt.Sprintf("%s %-7s %s", stamp(at), strings.ToLower(string(res)), job)
	if started {
		line += " in " + at.Sub(start).Round(10*time.Millisecond).String()
	}
	if reason != "" {
		line += ": " + reason
	}
	p.print(line)
}

// print writes a permanent line above the live block.
func (p *progress) print(line string) {
	if p.live {
		p.clear()
	}
	fmt.Fprintln(p.w, line)
	if p.live {
		p.redraw()
	}
}

func (p *progress) clear() {
	if p.drawn > 0 {
		fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
		p.drawn = 0
	}
}

func (p *progress) redraw() {
	p.clear()
	total := 0
	if p.plan != nil {
		total = len(p.plan.Jobs)
	}
	names := make([]string, 0, len(p.running))
	for j := range p.running {
		names = append(names, j)
	}
	slices.Sort(names)
	now := time.Now()
	for _, j := range names {
		fmt.Fprintf(p.w, "  ▶ %-40s %8s\n", j, now.Sub(p.running[j]).Round(100*time.Millisecond))
	}
	status := fmt.Sprintf("  %d/%d done, %d failed, %d running, %d waiting", p.done, total, p.failed, len(names), total-p.done-len(names))
	if !p.began.IsZero() {
		status += ", " + now.Sub(p.began).Round(100*time.Millisecond).String() + " elapsed"
		if left, ok := p.left(now); ok {
			status += ", about " + left.Round(100*time.Millisecond).String() + " left"
		}
	}
	fmt.Fprintln(p.w, status)
	p.drawn = len(names) + 1
}

// Summary prints each job's result and duration, and the critical path as
// it actually ran: from the last build to end, back through the dependency
// that ended last before it started.
func (p *progress) Summary(r *buildset.Report) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.quiet {
		p.table(r)
	}
	dur := ""
	if s, f := r.StartedAt.Get(), r.FinishedAt.Get(); s != nil && f != nil {
		dur = " in " + f.Sub(*s).Round(10*time.Millisecond).String()
	}
	mode := ""
	if m := (buildset.Mode{Check: r.Check, Limit: r.Limit}).String(); m != "" {
		mode = " (" + m + ")"
	}
	fmt.Fprintf(p.w, "buildset %s: %s%s%s\n", r.ID, r.Result, dur, mode)
}

// table prints the summary's table of builds and the critical path.
func (p *progress) table(r *buildset.Report) {
	fmt.Fprintln(p.w)
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tRESULT\tDURATION\tATTEMPT\tREASON")
	for _, b := range r.Builds {
		dur := "-"
		if s, f := b.StartedAt.Get(), b.FinishedAt.Get(); s != nil && f != nil {
			dur = f.Sub(*s).Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", b.Job, b.Result, dur, b.Attempt, b.Reason)
	}
	tw.Flush()
	if p.plan != nil {
		if path := p.plan.RunPath(buildset.Spans(r.Builds)); len(path) > 0 {
			fmt.Fprintf(p.w, "critical path as run: %s\n", strings.Join(path, " -> "))
		}
	}
}

// failureLines is how many of a failed build's last log lines a summary
// shows.
const failureLines = 20

// failed reports whether a build's result is a failure whose log says why
// (a skipped or cancelled build has nothing of its own to show).
func failed(res string) bool {
	switch store.Result(res) {
	case store.Failure, store.TimedOut, store.Error, store.RetryLimit:
		return true
	}
	return false
}

// logTail reads the last lines of a build's log and says where the whole
// log is (a path, or a URL on a server).
type logTail func(b buildset.BuildReport) (lines []string, where string, err error)

// Failures prints, for each build that failed, the last lines of its log
// (their text, without the timestamps; colours kept on a terminal only)
// and where the whole log is, so that a failed deploy says why where it is
// reported.
func (p *progress) Failures(r *buildset.Report, tail logTail) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range r.Builds {
		if !failed(b.Result) {
			continue
		}
		lines, where, err := tail(b)
		head := fmt.Sprintf("\n── %s %s", b.Job, b.Result)
		if b.Reason != "" {
			head += ": " + b.Reason
		}
		fmt.Fprintln(p.w, head)
		switch {
		case err != nil:
			fmt.Fprintf(p.w, "   (its log cannot be read: %v)\n", err)
		case len(lines) == 0:
			fmt.Fprintln(p.w, "   (its log is empty)")
		}
		for _, l := range lines {
			text := logs.Text(l)
			if !p.live {
				text = logs.StripANSI(text)
			}
			fmt.Fprintf(p.w, "   %s\n", text)
		}
		if where != "" {
			fmt.Fprintf(p.w, "   the whole log: %s\n", where)
		}
	}
}

// storeTail reads a build's log through the store: its latest attempt's,
// from the file it names or from the store's chunks.
func storeTail(ctx context.Context, st store.Store, id string) logTail {
	return func(b buildset.BuildReport) ([]string, string, error) {
		if b.Attempt == 0 {
			return nil, "", nil
		}
		atts, err := st.Attempts(context.WithoutCancel(ctx), id, b.Job)
		if err != nil || len(atts) == 0 {
			return nil, b.Log, err
		}
		a := atts[len(atts)-1]
		where := a.Log
		if where == "" {
			where = fmt.Sprintf("sortie logs %s %s --attempt %d (from any server on this database)", id, b.Job, a.Number)
		}
		log, err := logs.Open(context.WithoutCancel(ctx), st, a)
		if err != nil {
			return nil, where, err
		}
		defer log.Close()
		lines, err := logs.TailLines(log, failureLines)
		return lines, where, err
	}
}

// Hosts prints what Ansible reported of the buildset's hosts: for each job
// whose hosts failed or could not be reached, which; nothing when no job
// ran Ansible.
func (p *progress) Hosts(h *buildset.Hosts) {
	if h == nil || len(h.Builds) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	mode := ""
	if m := (buildset.Mode{Check: h.Check, Limit: h.Limit}).String(); m != "" {
		mode = " (" + m + ")"
	}
	trouble := h.Trouble()
	if len(trouble) == 0 {
		fmt.Fprintf(p.w, "hosts%s: %d reported by Ansible, none failed or unreachable\n", mode, len(h.Hosts))
	} else {
		fmt.Fprintf(p.w, "hosts%s: %d reported by Ansible; failed or unreachable, by job:\n", mode, len(h.Hosts))
		for _, t := range trouble {
			var parts []string
			if len(t.Failed) > 0 {
				parts = append(parts, "failed "+strings.Join(t.Failed, ", "))
			}
			if len(t.Unreachable) > 0 {
				parts = append(parts, "unreachable "+strings.Join(t.Unreachable, ", "))
			}
			fmt.Fprintf(p.w, "  %s: %s\n", t.Job, strings.Join(parts, "; "))
		}
	}
	for _, b := range h.Builds {
		if b.Note != "" {
			fmt.Fprintf(p.w, "  %s: %s\n", b.Job, b.Note)
		}
	}
}
