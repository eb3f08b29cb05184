package web

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
)

// logTail is how much of a log the build page renders: the script follows
// from its end.
const logTail = 256 << 10

// maxFiles is how many changed files the buildset page lists.
const maxFiles = 1000

// ---- Status ----------------------------------------------------------------

type statusPage struct {
	Page
	*server.StatusJSON
	// Pipelines are StatusJSON's, with what the page shows of each
	// buildset.
	Pipelines []pipelineView
	// Nodes are the servers sharing the store; Drift names those whose
	// config differs from the reference's (NodesJSON.ConfigReference).
	Nodes *server.NodesJSON
	Drift []string
}

type pipelineView struct {
	server.PipelineJSON
	Running, Queued []entryView
}

// entryView is a buildset of a pipeline's queue as the status page shows
// it: named, and with the buildsets its waiting reason and cause cite
// linked.
type entryView struct {
	server.QueueEntry
	Name    bsName
	Cause   template.HTML
	Waiting template.HTML
	// Jobs and ETA show a running buildset's progress; Done counts its
	// finished jobs.
	Jobs []jobView
	ETA  etaView
	Done int
	// Total counts the buildset's jobs, and MoreJobs says what is not
	// listed of a big one.
	Total    int
	MoreJobs string
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	st, err := h.src.Status(r.Context())
	if err != nil {
		h.fail(w, r, err, "status")
		return
	}
	nodes, err := h.src.Nodes(r.Context())
	if err != nil {
		h.fail(w, r, err, "status")
		return
	}
	pg := &statusPage{
		Page:       Page{Title: "Status", MainID: "status", Nav: "status", Script: "status.js"},
		StatusJSON: st, Nodes: nodes,
	}
	for _, n := range nodes.Nodes {
		if n.ConfigDiffers {
			pg.Drift = append(pg.Drift, n.Name)
		}
	}
	var commits []string
	for _, p := range st.Pipelines {
		for _, e := range append(slices.Clip(p.Running), p.Queued...) {
			commits = append(commits, e.Commit)
		}
	}
	subjects := h.subjects(r.Context(), commits...)
	// A waiting reason cites the buildsets it waits behind: say which.
	known := map[string]string{}
	for _, p := range st.Pipelines {
		for _, e := range append(slices.Clip(p.Running), p.Queued...) {
			if s := subjects[e.Commit].Subject; s != "" {
				known[e.ID] = s
			}
		}
	}
	label := func(id string) string { return known[id] }
	progress, err := h.progress(r, st)
	if err != nil {
		h.fail(w, r, err, "status")
		return
	}
	view := func(list []server.QueueEntry) []entryView {
		out := make([]entryView, 0, len(list))
		for _, e := range list {
			v := entryView{QueueEntry: e, Name: h.name(e.ID, e.Commit, subjects),
				Cause: linkIDs(e.Cause, label), Waiting: linkIDs(e.Waiting, label)}
			if p := progress[e.ID]; p != nil {
				v.ETA, v.Total = p.eta, len(p.jobs)
				for _, j := range p.jobs {
					if j.State != stateRunning && j.State != stateWaiting {
						v.Done++
					}
				}
				v.Jobs, v.MoreJobs = shownJobs(p.jobs)
			}
			out = append(out, v)
		}
		return out
	}
	for _, p := range st.Pipelines {
		pg.Pipelines = append(pg.Pipelines, pipelineView{PipelineJSON: p, Running: view(p.Running), Queued: view(p.Queued)})
	}
	h.render(w, r, http.StatusOK, "status", pg)
}

type buildsetProgress struct {
	jobs []jobView
	eta  etaView
}

// progress reads the running buildsets of the status and lays out their
// jobs and the time they still need, by buildset id.
func (h *Handler) progress(r *http.Request, st *server.StatusJSON) (map[string]*buildsetProgress, error) {
	ctx := r.Context()
	var running []*server.BuildsetJSON
	var names []string
	seen := map[string]bool{}
	for _, p := range st.Pipelines {
		for _, e := range p.Running {
			bs, err := h.src.Buildset(ctx, e.ID)
			if errors.Is(err, store.ErrNotFound) {
				continue // gone since the status was read
			}
			if err != nil {
				return nil, err
			}
			if bs.Plan == nil {
				continue
			}
			running = append(running, bs)
			for _, j := range bs.Plan.Jobs {
				if !seen[j.Name] {
					seen[j.Name] = true
					names = append(names, j.Name)
				}
			}
		}
	}
	out := map[string]*buildsetProgress{}
	if len(running) == 0 {
		return out, nil
	}
	medians, err := h.src.JobMedians(ctx, names)
	if err != nil {
		return nil, err
	}
	cfg, now := h.src.Config(), h.Now()
	for _, bs := range running {
		jobs, eta := progressOf(bs.Report, bs.Plan, expectations(bs.Plan, cfg, medians), now)
		out[bs.ID] = &buildsetProgress{jobs: jobs, eta: eta}
	}
	return out, nil
}

// ---- Buildset --------------------------------------------------------------

type buildRow struct {
	buildset.BuildReport
	State    string
	Duration string
	Reason   template.HTML
	// Why says why the job runs, in words; WhyCode is the plan's why.
	Why     string
	WhyCode string
}

type buildsetPage struct {
	Page
	BS       *server.BuildsetJSON
	Name     bsName
	Cause    template.HTML
	Error    template.HTML
	State    string // the header's: the result once done, else the state
	Done     bool
	Duration string
	Plan     *graph.Plan
	// Critical is the critical path the page marks: as run once the
	// buildset is done (CriticalAsRun), else the plan's estimate.
	Critical      []string
	CriticalAsRun bool
	Graph         template.HTML
	Timeline      template.HTML
	Builds        []buildRow
	Files         []string
	// MoreFiles is how many changed files are not listed.
	MoreFiles int
	// NoFileList: the event had no file list (every job matched).
	NoFileList bool
	// NothingToDeploy: the change selected no job; the buildset ended at
	// once, SKIPPED, without builds.
	NothingToDeploy bool
	// CanCancel and CanRerun say which actions apply (see canRerun).
	CanCancel, CanRerun bool
	// Failures are the builds that failed, with the end of their logs;
	// Skipped counts the builds skipped or cancelled meanwhile.
	Failures []failureView
	Skipped  int
	// Reports are the buildset's report deliveries; ReportsError says why
	// they could not be read.
	Reports      []server.ReportJSON
	ReportsError string
	// Hosts is the hosts × jobs matrix, nil when no build ran Ansible.
	Hosts *hostsMatrix
	// Mode says the buildset's check mode and limit, "" for neither.
	Mode string
}

// failureLines is how many of a failed build's last log lines the
// buildset page shows (as many as `sortie run`'s summary).
const failureLines = 20

// failureView is a failed build in a buildset's failure summary.
type failureView struct {
	Job, Result, URL, RawURL string
	Reason                   template.HTML
	Attempt                  int
	// Log is the HTML of the last lines; Lines how many.
	Log   template.HTML
	Lines int
	// Error says why the log could not be read.
	Error string
}

// failed says whether a build's result is a failure whose log tells why
// (a skipped or cancelled build has nothing of its own to show).
func failed(result string) bool {
	switch store.Result(result) {
	case store.Failure, store.TimedOut, store.Error, store.RetryLimit:
		return true
	}
	return false
}

// failures reads the end of each failed build's log, for the summary that
// starts the page of a buildset where something failed.
func (h *Handler) failures(r *http.Request, bs *server.BuildsetJSON) ([]failureView, int) {
	var out []failureView
	skipped := 0
	for _, b := range bs.Builds {
		if b.Result == string(store.Skipped) || b.Result == string(store.Canceled) {
			skipped++
		}
		if !failed(b.Result) {
			continue
		}
		f := failureView{Job: b.Job, Result: b.Result, URL: buildURL(bs.ID, b.Job), Reason: linkIDs(b.Reason, nil), Attempt: b.Attempt}
		f.RawURL = fmt.Sprintf("/api/v1/buildsets/%s/builds/%s/log", pathEscape(bs.ID), pathEscape(b.Job))
		lines, attempt, err := h.src.LogLines(r.Context(), bs.ID, b.Job, failureLines)
		if err != nil {
			f.Error = err.Error()
		}
		if attempt > 0 {
			f.Attempt = attempt
			f.RawURL += "?attempt=" + strconv.Itoa(attempt)
		}
		if len(lines) > 0 {
			html, n, _ := renderLog([]byte(strings.Join(lines, "\n") + "\n"))
			f.Log, f.Lines = template.HTML(html), n
		}
		out = append(out, f)
	}
	return out, skipped
}

func (h *Handler) buildset(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	bs, err := h.src.Buildset(r.Context(), id)
	if err != nil {
		h.fail(w, r, err, "buildset "+id)
		return
	}
	now := h.Now()
	done := bs.State == string(store.BuildsetDone)
	name := h.name(bs.ID, bs.Commit, h.subjects(r.Context(), bs.Commit))
	pg := &buildsetPage{
		Page: Page{Title: fmt.Sprintf("Buildset …%s: %s at %s", name.Short, bs.Pipeline, name.Sha), MainID: "buildset", Script: "buildset.js"},
		BS:   bs, Name: name, Cause: linkIDs(bs.Cause, nil), Error: linkIDs(bs.Error, nil),
		Done: done, State: bs.State, Plan: bs.Plan,
	}
	if done {
		pg.State = bs.Result
	}
	pg.CanCancel, pg.CanRerun = !done, canRerun(bs)
	pg.Failures, pg.Skipped = h.failures(r, bs)
	pg.Mode = (buildset.Mode{Check: bs.Check, Limit: bs.Limit}).String()
	if pg.Hosts, err = h.matrix(r.Context(), bs, done); err != nil {
		h.fail(w, r, err, "hosts of buildset "+id)
		return
	}
	if d, ok := span(bs.StartedAt.Get(), bs.FinishedAt.Get(), now); ok {
		pg.Duration = fmtDuration(d)
	}
	builds := map[string]*buildset.BuildReport{}
	for i := range bs.Builds {
		builds[bs.Builds[i].Job] = &bs.Builds[i]
	}
	pg.NothingToDeploy = bs.Result == string(store.Skipped) && bs.Plan != nil && bs.Plan.Empty()
	if bs.Plan != nil && !bs.Plan.Empty() {
		pg.Critical = bs.Plan.CriticalPath
		if done {
			if path := bs.Plan.RunPath(buildset.Spans(bs.Builds)); len(path) > 0 {
				pg.Critical, pg.CriticalAsRun = path, true
			}
		}
		pg.Graph = drawGraph(bs.ID, bs.Plan, builds, pg.Critical)
		pg.Timeline = drawTimeline(bs, bs.Plan, builds, pg.Critical, now, done)
		for _, j := range bs.Plan.Jobs {
			row := buildRow{State: stateWaiting, Why: whyText(j), WhyCode: j.Why}
			row.Job = j.Name
			if b := builds[j.Name]; b != nil {
				row.BuildReport = *b
				row.State = buildState(b)
				row.Reason = linkIDs(b.Reason, nil)
				if d, ok := span(b.StartedAt.Get(), b.FinishedAt.Get(), now); ok {
					row.Duration = fmtDuration(d)
				}
			}
			pg.Builds = append(pg.Builds, row)
		}
	}
	if pg.Reports, err = h.src.Reports(r.Context(), bs.ID); err != nil {
		pg.ReportsError = err.Error()
	}
	pg.Files, pg.NoFileList = bs.Files, bs.Files == nil
	if len(pg.Files) > maxFiles {
		pg.MoreFiles = len(pg.Files) - maxFiles
		pg.Files = pg.Files[:maxFiles]
	}
	h.render(w, r, http.StatusOK, "buildset", pg)
}

// canRerun says whether the API's re-run applies to a buildset: it is done,
// its graph was made, and some build did not succeed (buildset.Rerun
// refuses the others). static/buildset.js decides the same.
func canRerun(bs *server.BuildsetJSON) bool {
	if bs.State != string(store.BuildsetDone) || bs.Result == string(store.ConfigError) {
		return false
	}
	for _, b := range bs.Builds {
		if b.Result != string(store.Success) {
			return true
		}
	}
	return false
}

// ---- Build -----------------------------------------------------------------

type attemptRow struct {
	server.AttemptJSON
	State    string
	Duration string
	Current  bool
	// Since is the start of an attempt that runs: its duration counts on.
	Since time.Time
}

type buildPage struct {
	Page
	BS       *server.BuildsetJSON
	Name     bsName
	Reason   template.HTML
	Build    *server.BuildJSON
	State    string
	Done     bool
	Attempts []attemptRow
	// Tail is the part of the log rendered; Log its HTML.
	Tail      *server.LogTail
	Log       template.HTML
	Lines     int
	SGR       string
	Truncated bool
	// Follow is the event stream the script follows, "" when the log
	// shown is complete.
	Follow  string
	RawURL  string
	Compare comparison
	// Hosts is the hosts × tasks grid, nil when the build ran no Ansible.
	Hosts *hostsGrid
	Mode  string
}

func (h *Handler) build(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, job := r.PathValue("id"), r.PathValue("job")
	b, err := h.src.Build(ctx, id, job)
	if err != nil {
		h.fail(w, r, err, fmt.Sprintf("build of %s in buildset %s", job, id))
		return
	}
	bs, err := h.src.Buildset(ctx, id)
	if err != nil {
		h.fail(w, r, err, "buildset "+id)
		return
	}
	attempt := 0
	if v := r.URL.Query().Get("attempt"); v != "" {
		if attempt, err = strconv.Atoi(v); err != nil || attempt < 1 {
			h.notFound(w, r, fmt.Sprintf("%s of buildset %s has no attempt %q.", job, id, v))
			return
		}
	}
	tail, err := h.src.LogTail(ctx, id, job, attempt, logTail)
	if err != nil {
		h.fail(w, r, err, fmt.Sprintf("attempt %d of %s in buildset %s", attempt, job, id))
		return
	}
	now := h.Now()
	state := buildState(&b.BuildReport)
	name := h.name(bs.ID, bs.Commit, h.subjects(ctx, bs.Commit))
	pg := &buildPage{
		Page: Page{Title: fmt.Sprintf("%s · buildset …%s: %s at %s", job, name.Short, bs.Pipeline, name.Sha), MainID: "build", Script: "build.js", BodyClass: "wide"},
		BS:   bs, Name: name, Reason: linkIDs(b.Reason, nil),
		Build: b, State: state, Done: b.Result != "", Tail: tail,
		Truncated: tail.Start > 0,
		RawURL:    fmt.Sprintf("/api/v1/buildsets/%s/builds/%s/log", pathEscape(id), pathEscape(job)),
	}
	if tail.Attempt > 0 {
		pg.RawURL += "?attempt=" + strconv.Itoa(tail.Attempt)
	}
	html, lines, sgr := renderLog(tail.Data)
	pg.Log, pg.Lines, pg.SGR = template.HTML(html), lines, sgr.params()
	latest := tail.Attempt == len(b.Attempts)
	if latest && !pg.Done {
		q := url.Values{"follow": {"1"}}
		if tail.Attempt > 0 {
			q.Set("from", fmt.Sprintf("%d:%d", tail.Attempt, tail.Offset))
		} else {
			q.Set("tail", strconv.Itoa(logTail))
		}
		pg.Follow = fmt.Sprintf("/api/v1/buildsets/%s/builds/%s/log?%s", pathEscape(id), pathEscape(job), q.Encode())
	}
	for _, a := range b.Attempts {
		row := attemptRow{AttemptJSON: a, State: a.Result, Current: a.Number == tail.Attempt}
		if row.State == "" {
			row.State = stateRunning
			if t := a.StartedAt.Get(); t != nil {
				row.Since = *t
			}
		}
		if d, ok := span(a.StartedAt.Get(), a.FinishedAt.Get(), now); ok {
			row.Duration = fmtDuration(d)
		}
		pg.Attempts = append(pg.Attempts, row)
	}
	pg.Compare = h.compare(r, b, now)
	pg.Mode = (buildset.Mode{Check: bs.Check, Limit: bs.Limit}).String()
	if pg.Hosts, err = h.grid(ctx, id, job, r.URL.Query().Get("host"), pg.Done); err != nil {
		h.fail(w, r, err, fmt.Sprintf("hosts of %s in buildset %s", job, id))
		return
	}
	h.render(w, r, http.StatusOK, "build", pg)
}

// comparison says how long the build's latest attempt took against the
// median of the job's recent successful attempts. While the attempt runs,
// Since is its start, so that the page can count on (Elapsed, then Rest);
// otherwise Text is the whole sentence.
type comparison struct {
	Text    string
	Since   time.Time
	Elapsed string
	Rest    string
}

func (h *Handler) compare(r *http.Request, b *server.BuildJSON, now time.Time) comparison {
	median, ok, err := h.src.JobMedian(r.Context(), b.Job)
	if err != nil {
		return comparison{Text: "The job's history could not be read: " + err.Error()}
	}
	var this time.Duration
	running, started := false, false
	var since time.Time
	if n := len(b.Attempts); n > 0 {
		a := b.Attempts[n-1]
		this, started = span(a.StartedAt.Get(), a.FinishedAt.Get(), now)
		running = a.FinishedAt.Get() == nil
		if t := a.StartedAt.Get(); t != nil {
			since = *t
		}
	}
	hist := "the median of its recent successful runs is " + fmtDuration(median)
	if !ok {
		hist = "the job has no successful run yet to compare with"
	}
	switch {
	case !started:
		return comparison{Text: "Not started; " + hist + "."}
	case running:
		return comparison{Since: since, Elapsed: fmtDuration(this), Rest: hist + "."}
	case !ok:
		return comparison{Text: fmt.Sprintf("Took %s; %s.", fmtDuration(this), hist)}
	}
	diff := "as long as"
	if median > 0 {
		pct := (float64(this) - float64(median)) / float64(median) * 100
		switch {
		case pct >= 5:
			diff = fmt.Sprintf("%.0f%% longer than", pct)
		case pct <= -5:
			diff = fmt.Sprintf("%.0f%% shorter than", -pct)
		default:
			diff = "about as long as"
		}
	}
	return comparison{Text: fmt.Sprintf("Took %s, %s the median of the job's recent successful runs (%s).", fmtDuration(this), diff, fmtDuration(median))}
}

// ---- History ---------------------------------------------------------------

type historyRow struct {
	server.HistoryRow
	State    string
	Duration string
	Name     bsName
	Cause    template.HTML
}

type option struct {
	Value, Label string
	Selected     bool
}

type historyPage struct {
	Page
	Query     server.HistoryQuery
	Pipelines []option
	Jobs      []option
	Results   []option
	Rows      []historyRow
	Next      string
	Newest    string
	Error     string
}

var hexPrefix = regexp.MustCompile(`^[0-9a-fA-F]{0,40}$`)

func options(values []string, selected, anyLabel string) []option {
	out := []option{{Value: "", Label: anyLabel, Selected: selected == ""}}
	if selected != "" && !slices.Contains(values, selected) {
		values = append(slices.Clone(values), selected)
	}
	for _, v := range values {
		out = append(out, option{Value: v, Label: v, Selected: v == selected})
	}
	return out
}

var results = []string{string(store.Success), string(store.Failure), string(store.Canceled), string(store.Error), string(store.ConfigError), string(store.Skipped)}

func (h *Handler) history(w http.ResponseWriter, r *http.Request) {
	v := r.URL.Query()
	q := server.HistoryQuery{
		Pipeline: strings.TrimSpace(v.Get("pipeline")), Job: strings.TrimSpace(v.Get("job")),
		Result: strings.TrimSpace(v.Get("result")), Commit: strings.TrimSpace(v.Get("commit")),
		Before: v.Get("before"), Limit: h.PageSize,
	}
	cfg := h.src.Config()
	pg := &historyPage{
		Page:      Page{Title: "History", MainID: "history-page", Nav: "history"},
		Query:     q,
		Pipelines: options(cfg.PipelineNames(), q.Pipeline, "any pipeline"),
		Jobs:      options(cfg.JobOrder, q.Job, "any job"),
		Results:   options(results, q.Result, "any result"),
	}
	code := http.StatusOK
	if !hexPrefix.MatchString(q.Commit) {
		pg.Error = "The commit must be hexadecimal: a commit id or the start of one."
		code = http.StatusBadRequest
	} else {
		page, err := h.src.History(r.Context(), q)
		switch {
		case errors.Is(err, store.ErrNotFound):
			pg.Error = "The page to continue from is gone; start again from the newest."
		case err != nil:
			h.fail(w, r, err, "history")
			return
		default:
			now := h.Now()
			subjects := h.rowSubjects(r, page.Rows)
			for _, row := range page.Rows {
				hr := historyRow{HistoryRow: row, State: row.Result, Name: h.name(row.ID, row.Commit, subjects), Cause: linkIDs(row.Cause, nil)}
				if hr.State == "" {
					hr.State = row.State
				}
				if d, ok := span(row.StartedAt, row.FinishedAt, now); ok {
					hr.Duration = fmtDuration(d)
				}
				pg.Rows = append(pg.Rows, hr)
			}
			if page.Next != "" {
				next := filterValues(q)
				next.Set("before", page.Next)
				pg.Next = "/history?" + next.Encode()
			}
		}
	}
	if q.Before != "" {
		pg.Newest = "/history?" + filterValues(q).Encode()
	}
	h.render(w, r, code, "history", pg)
}

// rowSubjects reads the subjects of the rows' commits.
func (h *Handler) rowSubjects(r *http.Request, rows []server.HistoryRow) map[string]source.Commit {
	commits := make([]string, len(rows))
	for i, row := range rows {
		commits[i] = row.Commit
	}
	return h.subjects(r.Context(), commits...)
}

func filterValues(q server.HistoryQuery) url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"pipeline": q.Pipeline, "job": q.Job, "result": q.Result, "commit": q.Commit} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

// ---- Job -------------------------------------------------------------------

// jobHistory is how many builds the job page reads.
const jobHistory = 50

type jobPage struct {
	Page
	Name      string
	Known     bool // in the config in force
	Pipelines []string
	Deps      []string
	Hint      string
	Timeout   string
	Attempts  int
	Chart     template.HTML
	Rate      string
	RateText  string
	Median    string
	Rows      []historyRow
}

func (h *Handler) job(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	rows, err := h.src.JobHistory(r.Context(), name, jobHistory)
	if err != nil {
		h.fail(w, r, err, "job "+name)
		return
	}
	cfg := h.src.Config()
	cj := cfg.Jobs[name]
	if cj == nil && len(rows) == 0 {
		h.notFound(w, r, fmt.Sprintf("There is no job %q in the config, and none in the history.", name))
		return
	}
	median, hasMedian, err := h.src.JobMedian(r.Context(), name)
	if err != nil {
		h.fail(w, r, err, "job "+name)
		return
	}
	pg := &jobPage{Page: Page{Title: "Job " + name, MainID: "job"}, Name: name, Known: cj != nil}
	if cj != nil {
		for _, d := range cj.Dependencies {
			s := d.Name
			if d.Soft {
				s += " (soft)"
			}
			pg.Deps = append(pg.Deps, s)
		}
		if cj.DurationHint > 0 {
			pg.Hint = fmtDuration(cj.DurationHint)
		}
		if cj.Timeout > 0 {
			pg.Timeout = fmtDuration(cj.Timeout)
		}
		pg.Attempts = cj.Attempts
		for _, pn := range cfg.PipelineNames() {
			for _, ref := range cfg.Pipelines[pn].Jobs {
				if ref.Name == name || cj.Bootstrap {
					pg.Pipelines = append(pg.Pipelines, pn)
					break
				}
			}
		}
	}
	if hasMedian {
		pg.Median = fmtDuration(median)
	}
	pg.Chart = drawDurations(name, rows, median, hasMedian)
	ran, ok := 0, 0
	now := h.Now()
	subjects := h.rowSubjects(r, rows)
	for _, row := range rows {
		b := row.Build
		hr := historyRow{HistoryRow: row, State: buildState(b), Name: h.name(row.ID, row.Commit, subjects), Cause: linkIDs(row.Cause, nil)}
		if d, started := span(b.StartedAt.Get(), b.FinishedAt.Get(), now); started {
			hr.Duration = fmtDuration(d)
		}
		pg.Rows = append(pg.Rows, hr)
		switch b.Result {
		case "", string(store.Skipped), string(store.Canceled):
		case string(store.Success):
			ran++
			ok++
		default:
			ran++
		}
	}
	if ran > 0 {
		pg.Rate = fmt.Sprintf("%.0f%%", float64(ok)/float64(ran)*100)
		pg.RateText = fmt.Sprintf("%d of the last %d finished runs succeeded (skipped and cancelled builds not counted).", ok, ran)
	} else {
		pg.Rate = "n/a"
		pg.RateText = "No finished run yet."
	}
	h.render(w, r, http.StatusOK, "job", pg)
}
