package web

import (
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/server"
)

// The SVG drawings are written directly rather than through html/template:
// a 500-job graph is thousands of elements, and every value written goes
// through attr or text, which escape it.

// States a build is drawn in: its result when it has one, else RUNNING
// once an attempt started, else WAITING.
const (
	stateRunning = "RUNNING"
	stateWaiting = "WAITING"
)

// stateFills are the fill colours of the states. Text on them is #111,
// which keeps a contrast above 9:1 on each.
var stateFills = map[string]string{
	"SUCCESS":     "#a6e3b5",
	"FAILURE":     "#f4a6a6",
	"RUNNING":     "#9ec9f4",
	"WAITING":     "#e2e5ea",
	"SKIPPED":     "#f4f5f7",
	"TIMED_OUT":   "#f6c58d",
	"CANCELED":    "#d5c8ef",
	"RETRY_LIMIT": "#f3b8d8",
	"ERROR":       "#eab49c",
	"LOST":        "#eab49c",
	"RETRY":       "#f6e08d",
}

func stateFill(s string) string {
	if f, ok := stateFills[s]; ok {
		return f
	}
	return "#e2e5ea"
}

// stateColoursJSON hands the colours to the scripts.
func stateColoursJSON() string {
	b, _ := json.Marshal(stateFills)
	return string(b)
}

// buildState is the state a build is drawn in.
func buildState(b *buildset.BuildReport) string {
	switch {
	case b == nil:
		return stateWaiting
	case b.Result != "":
		return b.Result
	case b.Attempt > 0:
		return stateRunning
	}
	return stateWaiting
}

type svgWriter struct{ strings.Builder }

func (w *svgWriter) attr(name, value string) {
	w.WriteByte(' ')
	w.WriteString(name)
	w.WriteString(`="`)
	w.WriteString(html.EscapeString(value))
	w.WriteByte('"')
}

func (w *svgWriter) num(name string, v float64) {
	w.WriteByte(' ')
	w.WriteString(name)
	w.WriteString(`="`)
	w.WriteString(strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64))
	w.WriteByte('"')
}

func (w *svgWriter) text(s string) { w.WriteString(html.EscapeString(s)) }

// truncate shortens s to n runes with an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func buildURL(id, job string) string {
	return "/buildsets/" + pathEscape(id) + "/builds/" + pathEscape(job)
}

// Graph geometry: nodes are columns by wave; a wave of more than maxRows
// jobs is split into side-by-side sub-columns, so a 500-job wave stays as
// tall as a screen and scrolls sideways.
const (
	nodeW   = 188
	nodeH   = 40
	colGap  = 72
	subGap  = 20
	rowGap  = 10
	pad     = 12
	maxRows = 20
)

type point struct{ x, y float64 }

// drawGraph draws a buildset's plan, each job a node in its state; the
// nodes and edges of the critical path have the class critical.
func drawGraph(id string, p *graph.Plan, builds map[string]*buildset.BuildReport, path []string) template.HTML {
	n := len(p.Jobs)
	index := make(map[string]int, n)
	for i, j := range p.Jobs {
		index[j.Name] = i
	}
	// Group by wave, in plan order, then order each wave by the mean
	// position of its dependencies in theirs (fewer crossings).
	var waves [][]int
	for i, j := range p.Jobs {
		for len(waves) <= j.Wave {
			waves = append(waves, nil)
		}
		waves[j.Wave] = append(waves[j.Wave], i)
	}
	rank := make([]float64, n)
	for w, list := range waves {
		if w > 0 {
			key := make(map[int]float64, len(list))
			for _, i := range list {
				sum, k := 0.0, 0
				for _, d := range p.Jobs[i].Dependencies {
					if di, ok := index[d]; ok {
						sum += rank[di]
						k++
					}
				}
				if k > 0 {
					key[i] = sum / float64(k)
				}
			}
			slices.SortStableFunc(list, func(a, b int) int {
				switch {
				case key[a] < key[b]:
					return -1
				case key[a] > key[b]:
					return 1
				}
				return 0
			})
		}
		for pos, i := range list {
			rank[i] = (float64(pos) + 0.5) / float64(len(list))
		}
	}
	// Place the nodes.
	maxPer := 1
	for _, list := range waves {
		sub := (len(list) + maxRows - 1) / maxRows
		maxPer = max(maxPer, (len(list)+sub-1)/max(sub, 1))
	}
	height := float64(2*pad + maxPer*(nodeH+rowGap) - rowGap)
	at := make([]point, n)
	x := float64(pad)
	for _, list := range waves {
		if len(list) == 0 {
			continue
		}
		sub := (len(list) + maxRows - 1) / maxRows
		per := (len(list) + sub - 1) / sub
		for k, i := range list {
			sc, row := k/per, k%per
			rows := min(per, len(list)-sc*per)
			y0 := float64(pad) + float64((maxPer-rows)*(nodeH+rowGap))/2
			at[i] = point{x + float64(sc*(nodeW+subGap)), y0 + float64(row*(nodeH+rowGap))}
		}
		x += float64(sub*(nodeW+subGap)-subGap) + colGap
	}
	width := x - colGap + pad
	if n == 0 {
		width = 2 * pad
	}

	critical := map[string]bool{}
	criticalEdge := map[[2]string]bool{}
	for k, name := range path {
		critical[name] = true
		if k > 0 {
			criticalEdge[[2]string{path[k-1], name}] = true
		}
	}

	var w svgWriter
	w.Grow(n * 700)
	w.WriteString(`<svg id="graph" xmlns="http://www.w3.org/2000/svg"`)
	w.num("width", width)
	w.num("height", height)
	w.attr("viewBox", fmt.Sprintf("0 0 %g %g", width, height))
	w.attr("aria-labelledby", "graph-title")
	w.attr("data-colours", stateColoursJSON())
	w.WriteString(`><title id="graph-title">`)
	w.text(fmt.Sprintf("Job graph: %d jobs in %d waves, each job a box with its state; arrows run from a job to the jobs that depend on it", n, len(waves)))
	w.WriteString(`</title><g class="edges">`)
	// Edges, without those implied by others (every job depends on the
	// bootstrap job; drawing each of those says nothing).
	edges := reducedEdges(p, index)
	var crit []string
	for _, e := range edges {
		from, to := p.Jobs[e[0]].Name, p.Jobs[e[1]].Name
		a, b := at[e[0]], at[e[1]]
		x1, y1 := a.x+nodeW, a.y+nodeH/2
		x2, y2 := b.x, b.y+nodeH/2
		dx := max(24, (x2-x1)/2)
		var pw svgWriter
		pw.WriteString(`<path class="edge`)
		if criticalEdge[[2]string{from, to}] {
			pw.WriteString(` critical`)
		}
		pw.WriteByte('"')
		pw.attr("data-from", from)
		pw.attr("data-to", to)
		pw.attr("d", fmt.Sprintf("M%g %gC%g %g %g %g %g %g", x1, y1, x1+dx, y1, x2-dx, y2, x2, y2))
		pw.WriteString(`/>`)
		if criticalEdge[[2]string{from, to}] {
			crit = append(crit, pw.String()) // drawn last, on top
		} else {
			w.WriteString(pw.String())
		}
	}
	for _, s := range crit {
		w.WriteString(s)
	}
	w.WriteString(`</g><g class="nodes">`)
	for i, j := range p.Jobs {
		st := buildState(builds[j.Name])
		w.WriteString(`<g class="node`)
		if critical[j.Name] {
			w.WriteString(` critical`)
		}
		w.WriteByte('"')
		w.attr("data-job", j.Name)
		w.attr("data-state", st)
		w.attr("transform", fmt.Sprintf("translate(%g %g)", at[i].x, at[i].y))
		w.WriteString(`><a`)
		w.attr("href", buildURL(id, j.Name))
		w.WriteString(`><title>`)
		w.text(nodeTitle(j, st, critical[j.Name]))
		w.WriteString(`</title><rect`)
		w.num("width", nodeW)
		w.num("height", nodeH)
		w.attr("rx", "5")
		w.attr("fill", stateFill(st))
		w.WriteString(`/><text class="name" x="9" y="16">`)
		w.text(truncate(j.Name, 25))
		w.WriteString(`</text><text class="state" x="9" y="32">`)
		w.text(st)
		w.WriteString(`</text></a></g>`)
	}
	w.WriteString(`</g></svg>`)
	return template.HTML(w.String())
}

func nodeTitle(j graph.Job, state string, critical bool) string {
	s := j.Name + ": " + state + " (" + whyText(j) + ")"
	if critical {
		s += "; on the critical path"
	}
	return s
}

// reducedEdges returns the dependency edges (dependency, dependent) that
// no longer path implies: the transitive reduction of the plan.
func reducedEdges(p *graph.Plan, index map[string]int) [][2]int {
	n := len(p.Jobs)
	words := (n + 63) / 64
	anc := make([][]uint64, n) // every job above each, as a bit set
	has := func(set []uint64, i int) bool { return set[i/64]&(1<<(i%64)) != 0 }
	var out [][2]int
	for i, j := range p.Jobs {
		set := make([]uint64, words)
		var deps []int
		for _, d := range j.Dependencies {
			di, ok := index[d]
			if !ok || di >= i {
				continue // plan order is topological; be safe anyway
			}
			deps = append(deps, di)
			set[di/64] |= 1 << (di % 64)
			for k, v := range anc[di] {
				set[k] |= v
			}
		}
		anc[i] = set
		for _, d := range deps {
			implied := false
			for _, o := range deps {
				if o != d && has(anc[o], d) {
					implied = true
					break
				}
			}
			if !implied {
				out = append(out, [2]int{d, i})
			}
		}
	}
	return out
}

// Timeline geometry.
const (
	tlLabel = 220 // the job names' column
	tlBars  = 720 // the time axis
	tlRow   = 20
	tlTop   = 28
	tlBar   = 14
)

// timeSpan is the window a timeline shows.
type timeSpan struct {
	t0, t1 time.Time
}

func (s timeSpan) x(t time.Time) float64 {
	d := s.t1.Sub(s.t0)
	if d <= 0 {
		d = time.Second
	}
	return tlLabel + float64(t.Sub(s.t0))/float64(d)*tlBars
}

// timelineSpan is from the first start to the last end (now while the
// buildset runs).
func timelineSpan(bs *server.BuildsetJSON, now time.Time, done bool) (timeSpan, bool) {
	var s timeSpan
	found := false
	consider := func(t *time.Time) {
		if t == nil {
			return
		}
		if !found || t.Before(s.t0) {
			s.t0 = *t
		}
		found = true
	}
	consider(bs.StartedAt.Get())
	for i := range bs.Builds {
		consider(bs.Builds[i].StartedAt.Get())
	}
	if !found {
		return s, false
	}
	s.t1 = s.t0
	if !done {
		s.t1 = now
	}
	if f := bs.FinishedAt.Get(); f != nil && f.After(s.t1) {
		s.t1 = *f
	}
	for i := range bs.Builds {
		if f := bs.Builds[i].FinishedAt.Get(); f != nil && f.After(s.t1) {
			s.t1 = *f
		}
	}
	if s.t1.Sub(s.t0) < time.Second {
		s.t1 = s.t0.Add(time.Second)
	}
	return s, true
}

// tickStep picks the axis step: about six ticks.
func tickStep(d time.Duration) time.Duration {
	steps := []time.Duration{
		100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
		time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	}
	for _, s := range steps {
		if d/s <= 6 {
			return s
		}
	}
	return 48 * time.Hour
}

// drawTimeline draws a Gantt chart of the builds in plan order; the bars
// of the critical path have the class critical.
func drawTimeline(bs *server.BuildsetJSON, p *graph.Plan, builds map[string]*buildset.BuildReport, path []string, now time.Time, done bool) template.HTML {
	ts, started := timelineSpan(bs, now, done)
	critical := map[string]bool{}
	for _, name := range path {
		critical[name] = true
	}
	n := len(p.Jobs)
	width := float64(tlLabel + tlBars + 16)
	height := float64(tlTop + n*tlRow + 6)
	var w svgWriter
	w.Grow(n * 500)
	w.WriteString(`<svg id="timeline" xmlns="http://www.w3.org/2000/svg"`)
	w.num("width", width)
	w.num("height", height)
	w.attr("viewBox", fmt.Sprintf("0 0 %g %g", width, height))
	w.attr("aria-labelledby", "timeline-title")
	if started {
		w.attr("data-t0", strconv.FormatInt(ts.t0.UnixMilli(), 10))
	}
	if done {
		w.attr("data-done", "true")
	}
	w.attr("data-label", strconv.Itoa(tlLabel))
	w.attr("data-width", strconv.Itoa(tlBars))
	w.WriteString(`><title id="timeline-title">Timeline: when each build ran, one row per job; the bars of the critical path have a thick outline and the job's name is marked ◆</title>`)
	// The axis: ticks of elapsed time since the first start.
	w.WriteString(`<g class="ticks">`)
	if started {
		writeTicks(&w, ts, height)
	}
	w.WriteString(`</g><g class="rows">`)
	for i, j := range p.Jobs {
		b := builds[j.Name]
		st := buildState(b)
		y := float64(tlTop + i*tlRow)
		label := truncate(j.Name, 28)
		if critical[j.Name] {
			label = "◆ " + truncate(j.Name, 26)
		}
		w.WriteString(`<a`)
		w.attr("href", buildURL(bs.ID, j.Name))
		w.WriteString(`><text class="label" x="4"`)
		w.num("y", y+tlRow-6)
		w.WriteByte('>')
		w.text(label)
		w.WriteString(`</text></a><rect class="bar`)
		if critical[j.Name] {
			w.WriteString(` critical`)
		}
		w.WriteByte('"')
		w.attr("data-job", j.Name)
		w.attr("data-state", st)
		x, bw := float64(tlLabel), 0.0
		var from, to *time.Time
		if b != nil {
			from, to = b.StartedAt.Get(), b.FinishedAt.Get()
		}
		if from != nil && started {
			end := now
			if to != nil {
				end = *to
			}
			x = ts.x(*from)
			bw = max(ts.x(end)-x, 2)
		}
		w.num("x", x)
		w.num("y", y+(tlRow-tlBar)/2)
		w.num("width", bw)
		w.num("height", tlBar)
		w.attr("rx", "2")
		w.attr("fill", stateFill(st))
		w.WriteString(`><title>`)
		w.text(barTitle(j.Name, st, b, now, critical[j.Name]))
		w.WriteString(`</title></rect>`)
	}
	w.WriteString(`</g></svg>`)
	return template.HTML(w.String())
}

func writeTicks(w *svgWriter, ts timeSpan, height float64) {
	d := ts.t1.Sub(ts.t0)
	step := tickStep(d)
	for k := time.Duration(0); k <= d; k += step {
		x := ts.x(ts.t0.Add(k))
		w.WriteString(`<line class="tick"`)
		w.num("x1", x)
		w.num("x2", x)
		w.num("y1", tlTop-6)
		w.num("y2", height)
		w.WriteString(`/><text class="tick"`)
		w.num("x", x)
		w.num("y", tlTop-10)
		w.WriteByte('>')
		w.text("+" + fmtDuration(k))
		w.WriteString(`</text>`)
	}
}

func barTitle(job, state string, b *buildset.BuildReport, now time.Time, critical bool) string {
	s := job + ": " + state
	if b != nil {
		if d, ok := span(b.StartedAt.Get(), b.FinishedAt.Get(), now); ok {
			s += ", " + fmtDuration(d)
		}
		if b.Reason != "" {
			s += " (" + b.Reason + ")"
		}
	}
	if critical {
		s += "; critical path"
	}
	return s
}

// drawDurations draws a job's recent durations, oldest on the left, with
// the median of its recent successes as a dashed line.
func drawDurations(job string, rows []server.HistoryRow, median time.Duration, hasMedian bool) template.HTML {
	type bar struct {
		row server.HistoryRow
		d   time.Duration
	}
	var bars []bar
	for i := len(rows) - 1; i >= 0; i-- {
		b := rows[i].Build
		if b == nil {
			continue
		}
		if d, ok := span(b.StartedAt.Get(), b.FinishedAt.Get(), time.Time{}); ok && b.FinishedAt.Get() != nil {
			bars = append(bars, bar{rows[i], d})
		}
	}
	const left, top, chartH, gap = 64, 12, 120, 4
	// Bars as wide as 600 px allow, from 6 to 28 px each.
	barW := min(28, max(6, 600/max(len(bars), 1)-gap))
	var top2 time.Duration
	for _, b := range bars {
		top2 = max(top2, b.d)
	}
	if hasMedian {
		top2 = max(top2, median)
	}
	if top2 <= 0 {
		top2 = time.Second
	}
	width := float64(left + max(len(bars)*(barW+gap), 160) + 12)
	height := float64(top + chartH + 24)
	y := func(d time.Duration) float64 { return top + chartH - float64(d)/float64(top2)*chartH }
	var w svgWriter
	w.WriteString(`<svg id="durations" xmlns="http://www.w3.org/2000/svg"`)
	w.num("width", width)
	w.num("height", height)
	w.attr("viewBox", fmt.Sprintf("0 0 %g %g", width, height))
	w.attr("aria-labelledby", "durations-title")
	w.WriteString(`><title id="durations-title">`)
	t := fmt.Sprintf("Durations of the last %d finished builds of %s, oldest first", len(bars), job)
	if hasMedian {
		t += "; dashed line: median of the recent successful runs, " + fmtDuration(median)
	}
	w.text(t)
	w.WriteString(`</title><line class="axis"`)
	w.num("x1", left-4)
	w.num("x2", left-4)
	w.num("y1", top)
	w.num("y2", top+chartH)
	w.WriteString(`/><line class="axis"`)
	w.num("x1", left-4)
	w.num("x2", width-8)
	w.num("y1", top+chartH)
	w.num("y2", top+chartH)
	w.WriteString(`/><text class="tick" x="4"`)
	w.num("y", top+10)
	w.WriteByte('>')
	w.text(fmtDuration(top2))
	w.WriteString(`</text><text class="tick" x="4"`)
	w.num("y", top+chartH)
	w.WriteString(`>0s</text>`)
	for k, b := range bars {
		x := float64(left + k*(barW+gap))
		res := b.row.Build.Result
		w.WriteString(`<a`)
		w.attr("href", buildURL(b.row.ID, job))
		w.attr("aria-label", fmt.Sprintf("%s at %s: %s, %s", job, fmtTime(b.row.CreatedAt), res, fmtDuration(b.d)))
		w.WriteString(`><rect class="dbar"`)
		w.attr("data-result", res)
		w.num("x", x)
		w.num("y", y(b.d))
		w.num("width", float64(barW))
		w.num("height", max(top+chartH-y(b.d), 1))
		w.attr("fill", stateFill(res))
		w.attr("stroke", "#555")
		w.WriteString(`><title>`)
		w.text(fmt.Sprintf("%s, %s, %s, commit %s", fmtTime(b.row.CreatedAt), res, fmtDuration(b.d), shortCommit(b.row.Commit)))
		w.WriteString(`</title></rect></a>`)
	}
	if hasMedian {
		w.WriteString(`<line class="median"`)
		w.num("x1", left-4)
		w.num("x2", width-8)
		w.num("y1", y(median))
		w.num("y2", y(median))
		w.WriteString(`/>`)
	}
	w.WriteString(`<text class="tick"`)
	w.num("x", left)
	w.num("y", height-6)
	w.WriteString(`>oldest</text><text class="tick" text-anchor="end"`)
	w.num("x", width-8)
	w.num("y", height-6)
	w.WriteString(`>newest</text></svg>`)
	return template.HTML(w.String())
}
