package main

import (
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
	"github.com/sortie-ci/sortie/internal/store"
)

// progress shows a running buildset. On a terminal it redraws one line per
// running job with its elapsed time and the counts of done, failed and
// waiting jobs; otherwise it prints one timestamped line per state change.
// It is the buildset.Runner's Observer.
type progress struct {
	w    io.Writer
	live bool

	mu       sync.Mutex
	plan     *graph.Plan
	running  map[string]time.Time // job -> attempt start
	attempt  map[string]int
	done     int
	failed   int
	drawn    int // lines of the live block on screen
	stop     chan struct{}
	finished chan struct{}
}

func newProgress(w io.Writer) *progress {
	live := false
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		live = true
	}
	return &progress{w: w, live: live, running: map[string]time.Time{}, attempt: map[string]int{}}
}

// Start begins redrawing (on a terminal). Stop ends it and waits.
func (p *progress) Start() {
	if !p.live {
		return
	}
	p.stop, p.finished = make(chan struct{}), make(chan struct{})
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
	p.plan = plan
	p.print(fmt.Sprintf("%s buildset %s: pipeline %s at %.12s, %d jobs", stamp(time.Now()), bs.ID, bs.Pipeline, bs.Commit, len(plan.Jobs)))
}

func (p *progress) AttemptStarted(job string, n int, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.running[job], p.attempt[job] = at, n
	if !p.live {
		fmt.Fprintf(p.w, "%s start   %s (attempt %d)\n", stamp(at), job, n)
	}
}

func (p *progress) BuildFinished(job string, res store.Result, reason string, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	line := fmt.Sprintf("%s %-7s %s", stamp(at), strings.ToLower(string(res)), job)
	if start, ok := p.running[job]; ok {
		line += " in " + at.Sub(start).Round(10*time.Millisecond).String()
	}
	if reason != "" {
		line += ": " + reason
	}
	delete(p.running, job)
	p.done++
	if res != store.Success {
		p.failed++
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
	fmt.Fprintf(p.w, "  %d/%d done, %d failed, %d running, %d waiting\n", p.done, total, p.failed, len(names), total-p.done-len(names))
	p.drawn = len(names) + 1
}

// Summary prints each job's result and duration, and the critical path as
// it actually ran: from the last build to end, back through the dependency
// that ended last before it started.
func (p *progress) Summary(r *buildset.Report) {
	p.mu.Lock()
	defer p.mu.Unlock()
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
	dur := ""
	if s, f := r.StartedAt.Get(), r.FinishedAt.Get(); s != nil && f != nil {
		dur = " in " + f.Sub(*s).Round(10*time.Millisecond).String()
	}
	fmt.Fprintf(p.w, "buildset %s: %s%s\n", r.ID, r.Result, dur)
}
