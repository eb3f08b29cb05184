package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger/webhook"
)

// maxBody bounds the JSON bodies of API calls.
const maxBody = 1 << 20

// Handler is the server's HTTP API (docs/api.md). Each call makes a new
// handler, with its own webhook body budget.
func (s *Server) Handler() http.Handler {
	wh := &webhooks{s: s, budget: newBodyBudget(webhookBodyBudget)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", s.reading(promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}).ServeHTTP))

	mux.HandleFunc("GET /api/v1/status", s.reading(s.getStatus))
	mux.HandleFunc("GET /api/v1/config", s.reading(s.getConfig))
	mux.HandleFunc("GET /api/v1/pipelines", s.reading(s.getPipelines))
	mux.HandleFunc("GET /api/v1/semaphores", s.reading(s.getSemaphores))
	mux.HandleFunc("GET /api/v1/nodes", s.reading(s.getNodes))
	mux.HandleFunc("GET /api/v1/buildsets", s.reading(s.listBuildsets))
	mux.HandleFunc("GET /api/v1/buildsets/{id}", s.reading(s.getBuildset))
	mux.HandleFunc("GET /api/v1/buildsets/{id}/reports", s.reading(s.getReports))
	mux.HandleFunc("GET /api/v1/buildsets/{id}/builds/{job}", s.reading(s.getBuild))
	mux.HandleFunc("GET /api/v1/buildsets/{id}/builds/{job}/log", s.reading(streaming(s.getLog)))
	mux.HandleFunc("GET /api/v1/buildsets/{id}/hosts", s.reading(s.getBuildsetHosts))
	mux.HandleFunc("GET /api/v1/buildsets/{id}/builds/{job}/hosts", s.reading(s.getBuildHosts))

	mux.HandleFunc("POST /api/v1/pipelines/{name}/trigger", s.mutating(s.postTrigger))
	mux.HandleFunc("POST /api/v1/buildsets/{id}/cancel", s.mutating(s.postCancel))
	mux.HandleFunc("POST /api/v1/buildsets/{id}/rerun", s.mutating(s.postRerun))
	mux.HandleFunc("POST /api/v1/buildsets/{id}/builds/{job}/cancel", s.mutating(s.postCancelBuild))
	mux.HandleFunc("POST /api/v1/pause", s.mutating(s.postPause))
	mux.HandleFunc("POST /api/v1/resume", s.mutating(s.postResume))
	mux.HandleFunc("POST /api/v1/reload", s.mutating(s.postReload))
	mux.HandleFunc("POST /api/v1/nodes/{name}/forget", s.mutating(s.postForgetNode))

	mux.HandleFunc("POST /webhooks/{forge}", wh.post)
	mux.HandleFunc("GET /login", s.login)
	mux.HandleFunc("POST /login", s.login)
	if s.ui != nil {
		mux.Handle("/", s.reading(s.ui.ServeHTTP))
	}
	return securityHeaders(mux)
}

// apiCSP is the Content-Security-Policy of every answer that is not a web
// page: a JSON answer or a raw log opened in a browser runs nothing, loads
// nothing and cannot be framed. The pages set their own.
const apiCSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// securityHeaders sets on every answer the headers the web pages carry, so
// that no answer (JSON, a raw log, an error, the sign-in page) can be
// sniffed into HTML, framed, or leak its URL to another site. Handlers may
// replace them: the pages and /login set a Content-Security-Policy of
// their own.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Content-Security-Policy", apiCSP)
		h.ServeHTTP(w, r)
	})
}

// Timeouts bound how long a client may hold a connection of the HTTP
// server, so that slow or stalled clients cannot pile up connections.
type Timeouts struct {
	// ReadHeader bounds the reading of a request's line and headers.
	ReadHeader time.Duration
	// Read bounds the reading of a whole request, body included, from
	// its first byte.
	Read time.Duration
	// Write bounds the answer, from the end of the request's headers. A
	// log (followed or not) is exempt: each write it makes has Write to
	// complete instead.
	Write time.Duration
	// Idle bounds how long a kept-alive connection waits for its next
	// request.
	Idle time.Duration
}

// DefaultTimeouts are the server's: a forge sends a webhook's body at
// once (GitHub gives a delivery 10 s in all), an answer needs at most a
// fetch of the mirror, and browsers reconnect when an idle connection is
// closed.
func DefaultTimeouts() Timeouts {
	return Timeouts{ReadHeader: 10 * time.Second, Read: 20 * time.Second, Write: time.Minute, Idle: 30 * time.Second}
}

// newHTTPServer is the HTTP server of h, with timeouts t.
func newHTTPServer(h http.Handler, t Timeouts) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, WriteTimeout: t.Write, IdleTimeout: t.Idle}
}

// streaming exempts a handler that may answer for as long as it likes (a
// followed log, a long raw log) from the server's read and write
// timeouts. Its request has no body to wait for, so the read deadline is
// lifted (a client that goes away is still noticed: its connection is
// read for that). The write deadline moves forward before each write
// instead, so a client that stops reading is still cut.
func streaming(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
		if srv == nil {
			h(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if srv.ReadTimeout > 0 {
			rc.SetReadDeadline(time.Time{})
		}
		if srv.WriteTimeout <= 0 {
			h(w, r)
			return
		}
		h(&deadlineWriter{ResponseWriter: w, rc: rc, d: srv.WriteTimeout}, r)
	}
}

// deadlineWriter gives each write and flush d to complete.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.d))
	return w.ResponseWriter.Write(p)
}

// Flush implements http.Flusher, which the log follower needs.
func (w *deadlineWriter) Flush() {
	w.rc.SetWriteDeadline(time.Now().Add(w.d))
	w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// notFound is a missing resource, named as the client asked for it rather
// than in the store's words.
type notFound string

func (e notFound) Error() string        { return string(e) }
func (e notFound) Is(target error) bool { return target == store.ErrNotFound }

// noBuildset names a buildset the store does not have: "no buildset ID".
// Other errors are returned as they are.
func noBuildset(err error, id string) error {
	var nf notFound
	if errors.Is(err, store.ErrNotFound) && !errors.As(err, &nf) {
		return notFound("no buildset " + id)
	}
	return err
}

// refuseWhileDraining answers 503, and reports true, once a shutdown has
// begun: a buildset made then would wait, unseen, for the next start.
func (s *Server) refuseWhileDraining(w http.ResponseWriter) bool {
	if !s.coord.Stopping() {
		return false
	}
	w.Header().Set("Retry-After", "30")
	writeError(w, http.StatusServiceUnavailable, "the server is shutting down and takes no new buildset; send it again once it is back")
	return true
}

// storeError maps store errors to HTTP codes.
func storeError(w http.ResponseWriter, err error) {
	var nf notFound
	switch {
	case errors.As(err, &nf):
		writeError(w, http.StatusNotFound, nf.Error())
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// decode reads an optional JSON body into v.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return err
	}
	if len(body) > maxBody {
		return errors.New("body too large")
	}
	if len(body) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytesReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad JSON body: %w", err)
	}
	// One value and nothing after it: `{} {"pipeline": "x"}` is not a
	// body whose second half may be dropped unseen.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("bad JSON body: text after the JSON value")
	}
	return nil
}

// BuildsetJSON is the API's buildset: the report of SPEC §3 with what the
// server knows besides.
type BuildsetJSON struct {
	*buildset.Report
	State     string        `json:"state"`
	Cause     string        `json:"cause"`
	RerunOf   string        `json:"rerun_of,omitempty"`
	Files     []string      `json:"files"`
	CreatedAt buildset.Time `json:"created_at"`
	// Plan is the frozen graph (plan --format json's shape); only on the
	// buildset's own resource.
	Plan *graph.Plan `json:"plan,omitempty"`
}

func logURL(id, job string, attempt int) string {
	return fmt.Sprintf("/api/v1/buildsets/%s/builds/%s/log?attempt=%d", url.PathEscape(id), url.PathEscape(job), attempt)
}

func (s *Server) buildsetJSON(ctx context.Context, bs *store.Buildset, withPlan bool) (*BuildsetJSON, error) {
	rep, err := buildset.MakeReport(ctx, s.reads, bs.ID)
	if err != nil {
		return nil, err
	}
	for i := range rep.Builds {
		b := &rep.Builds[i]
		if b.Attempt > 0 {
			b.Log = logURL(bs.ID, b.Job, b.Attempt)
		}
	}
	created := bs.CreatedAt
	out := &BuildsetJSON{Report: rep, State: string(bs.State), Cause: bs.Cause, RerunOf: bs.RerunOf, Files: bs.Files, CreatedAt: buildset.TimeOf(&created)}
	if withPlan && bs.Result != store.ConfigError {
		if p, err := buildset.Plan(bs); err == nil {
			out.Plan = p
		}
	}
	return out, nil
}

func (s *Server) listBuildsets(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := store.Filter{
		Pipeline: q.Get("pipeline"), Result: store.Result(q.Get("result")), State: store.BuildsetState(q.Get("state")),
		Commit: q.Get("commit"), Before: q.Get("before"), Limit: 50,
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			writeError(w, http.StatusBadRequest, "limit must be a number from 1 to 500")
			return
		}
		f.Limit = n
	}
	list, next, err := s.Buildsets(r.Context(), f)
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Buildsets []*BuildsetJSON `json:"buildsets"`
		Next      string          `json:"next,omitempty"`
	}{list, next})
}

// Buildsets lists buildsets newest first (GET /api/v1/buildsets), and the
// id to pass as Filter.Before for the next page ("" on the last one).
func (s *Server) Buildsets(ctx context.Context, f store.Filter) ([]*BuildsetJSON, string, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	list, err := s.reads.ListBuildsets(ctx, f)
	if err != nil {
		return nil, "", err
	}
	out := []*BuildsetJSON{}
	for _, bs := range list {
		j, err := s.buildsetJSON(ctx, bs, false)
		if err != nil {
			return nil, "", err
		}
		out = append(out, j)
	}
	next := ""
	if len(list) == f.Limit {
		next = list[len(list)-1].ID
	}
	return out, next, nil
}

func (s *Server) getBuildset(w http.ResponseWriter, r *http.Request) {
	j, err := s.Buildset(r.Context(), r.PathValue("id"))
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, j)
}

// Buildset is one buildset with its plan (GET /api/v1/buildsets/{id}).
func (s *Server) Buildset(ctx context.Context, id string) (*BuildsetJSON, error) {
	bs, err := s.reads.GetBuildset(ctx, id)
	if err != nil {
		return nil, noBuildset(err, id)
	}
	return s.buildsetJSON(ctx, bs, true)
}

// AttemptJSON is one attempt of a build.
type AttemptJSON struct {
	Number     int           `json:"number"`
	Result     string        `json:"result"`
	StartedAt  buildset.Time `json:"started_at"`
	FinishedAt buildset.Time `json:"finished_at"`
	Error      string        `json:"error,omitempty"`
	Log        string        `json:"log"`
}

func (s *Server) getBuild(w http.ResponseWriter, r *http.Request) {
	b, err := s.Build(r.Context(), r.PathValue("id"), r.PathValue("job"))
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, b)
}

// BuildJSON is one build with its attempts.
type BuildJSON struct {
	Buildset string `json:"buildset"`
	buildset.BuildReport
	Attempts []AttemptJSON `json:"attempts"`
}

// Build is one build of a buildset (GET /api/v1/buildsets/{id}/builds/{job});
// store.ErrNotFound when the buildset has no such build.
func (s *Server) Build(ctx context.Context, id, job string) (*BuildJSON, error) {
	rep, err := buildset.MakeReport(ctx, s.reads, id)
	if err != nil {
		return nil, noBuildset(err, id)
	}
	var b *buildset.BuildReport
	for i := range rep.Builds {
		if rep.Builds[i].Job == job {
			b = &rep.Builds[i]
		}
	}
	if b == nil {
		return nil, notFound(fmt.Sprintf("buildset %s has no build of %s", id, job))
	}
	if b.Attempt > 0 {
		b.Log = logURL(id, job, b.Attempt)
	}
	atts, err := s.reads.Attempts(ctx, id, job)
	if err != nil {
		return nil, err
	}
	out := &BuildJSON{Buildset: id, BuildReport: *b, Attempts: []AttemptJSON{}}
	for _, a := range atts {
		started := a.StartedAt
		out.Attempts = append(out.Attempts, AttemptJSON{
			Number: a.Number, Result: string(a.Result), StartedAt: buildset.TimeOf(&started),
			FinishedAt: buildset.TimeOf(a.FinishedAt), Error: a.Error, Log: logURL(id, job, a.Number),
		})
	}
	return out, nil
}

type triggerBody struct {
	Commit string    `json:"commit"`
	Files  *[]string `json:"files"`
	By     string    `json:"by"`
	// Check and Limit: see buildset.Mode.
	Check bool   `json:"check"`
	Limit string `json:"limit"`
}

func (s *Server) postTrigger(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var body triggerBody
	if err := decode(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := s.Config().Pipelines[name]; !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q in the config", name))
		return
	}
	if s.refuseWhileDraining(w) {
		return
	}
	mode := buildset.Mode{Check: body.Check, Limit: body.Limit}
	if err := s.checkMode(name, mode); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var files []string
	if body.Files != nil {
		files = append([]string{}, (*body.Files)...)
	}
	bs, err := s.coord.Submit(r.Context(), buildset.Event{Pipeline: name, Rev: body.Commit, Files: files, Cause: "manual by " + by(body.By), Mode: mode})
	switch {
	case bs != nil && err != nil:
		// A buildset error (SPEC §2.2): the buildset exists, DONE with
		// CONFIG_ERROR; it was made, so 202 as SPEC §4 fixes, with why.
		writeJSON(w, http.StatusAccepted, map[string]string{"buildset": bs.ID, "error": err.Error()})
	case err != nil:
		code, msg := s.sourceError(body.Commit, err)
		writeError(w, code, msg)
	default:
		writeJSON(w, http.StatusAccepted, map[string]string{"buildset": bs.ID})
	}
}

// sourceError explains a trigger that made no buildset, naming the
// repository as the config does (source.url), never Sortie's mirror of it:
// a commit that does not resolve is the client's mistake (422), a
// repository that cannot be fetched is not (502).
func (s *Server) sourceError(rev string, err error) (int, string) {
	cfg := s.Config()
	var fe *source.FetchError
	switch {
	case errors.Is(err, source.ErrUnknownRevision) && rev != "":
		return http.StatusUnprocessableEntity, fmt.Sprintf("no commit %s in %s (source.url)", rev, cfg.Source.URL)
	case errors.Is(err, source.ErrUnknownRevision):
		return http.StatusUnprocessableEntity, fmt.Sprintf("no branch %s in %s (source.url)", cfg.Source.Branch, cfg.Source.URL)
	case errors.As(err, &fe):
		return http.StatusBadGateway, fmt.Sprintf("cannot fetch %s (source.url): %v", cfg.Source.URL, fe.Err)
	}
	return http.StatusUnprocessableEntity, err.Error()
}

func by(who string) string {
	if who == "" {
		return "api"
	}
	return who
}

type byBody struct {
	By     string `json:"by"`
	Reason string `json:"reason"`
}

func (s *Server) postCancel(w http.ResponseWriter, r *http.Request) {
	var body byBody
	if err := decode(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.coord.Cancel(r.Context(), r.PathValue("id"), by(body.By)); err != nil {
		storeError(w, noBuildset(err, r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"buildset": r.PathValue("id"), "status": "cancelling"})
}

func (s *Server) postCancelBuild(w http.ResponseWriter, r *http.Request) {
	id, job := r.PathValue("id"), r.PathValue("job")
	if !s.coord.CancelBuild(id, job) {
		writeError(w, http.StatusConflict, fmt.Sprintf("%s of buildset %s has no attempt running in this server", job, id))
		return
	}
	s.log.Info("cancel build", "buildset", id, "job", job)
	writeJSON(w, http.StatusAccepted, map[string]string{"buildset": id, "job": job, "status": "cancelling"})
}

func (s *Server) postRerun(w http.ResponseWriter, r *http.Request) {
	var body byBody
	if err := decode(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	if s.refuseWhileDraining(w) {
		return
	}
	bs, err := s.coord.Rerun(r.Context(), id, fmt.Sprintf("re-run of the jobs of %s that did not succeed, by %s", id, by(body.By)))
	switch {
	case errors.Is(err, store.ErrNotFound):
		storeError(w, noBuildset(err, id))
		return
	case errors.Is(err, buildset.ErrNothingToRerun) || errors.Is(err, buildset.ErrNotFinished):
		writeError(w, http.StatusConflict, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"buildset": bs.ID})
}

type pauseBody struct {
	Pipeline string `json:"pipeline"`
	Reason   string `json:"reason"`
	By       string `json:"by"`
}

func (s *Server) postPause(w http.ResponseWriter, r *http.Request) {
	var body pauseBody
	if err := decode(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Pipeline != "" {
		if _, ok := s.Config().Pipelines[body.Pipeline]; !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q in the config", body.Pipeline))
			return
		}
	}
	p := store.Pause{Pipeline: body.Pipeline, By: by(body.By), Reason: body.Reason, At: time.Now().UTC()}
	if err := s.coord.SetPause(r.Context(), p); err != nil {
		storeError(w, err)
		return
	}
	s.log.Info("paused", "pipeline", p.Pipeline, "by", p.By, "reason", p.Reason)
	writeJSON(w, http.StatusOK, pauseJSON(p))
}

func (s *Server) postResume(w http.ResponseWriter, r *http.Request) {
	var body pauseBody
	if err := decode(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if body.Pipeline != "" {
		// As pause does; but a pipeline gone from the config may still be
		// paused, and its pause can be lifted.
		_, known := s.Config().Pipelines[body.Pipeline]
		_, paused := s.coord.Pauses()[body.Pipeline]
		if !known && !paused {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q in the config", body.Pipeline))
			return
		}
	}
	if err := s.coord.ClearPause(r.Context(), body.Pipeline); err != nil {
		storeError(w, err)
		return
	}
	s.log.Info("resumed", "pipeline", body.Pipeline, "by", by(body.By))
	writeJSON(w, http.StatusOK, map[string]any{"pipeline": body.Pipeline, "paused": false})
}

// PauseJSON is a pause as the API shows it.
type PauseJSON struct {
	Pipeline string    `json:"pipeline"`
	By       string    `json:"by"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

func pauseJSON(p store.Pause) *PauseJSON {
	return &PauseJSON{Pipeline: p.Pipeline, By: p.By, Reason: p.Reason, At: p.At}
}

func (s *Server) postReload(w http.ResponseWriter, r *http.Request) {
	if err := s.Reload(); err != nil {
		var re *ReloadError
		if errors.As(err, &re) {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "config refused; the server keeps the one in force", "errors": re.Errors})
			return
		}
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.getConfig(w, r)
}

// ConfigJSON says which config is in force and why the last reload failed.
type ConfigJSON struct {
	Path        string       `json:"path"`
	LoadedAt    time.Time    `json:"loaded_at"`
	ReloadError *ReloadError `json:"reload_error"`
}

func (s *Server) configJSON() ConfigJSON {
	s.cfgMu.RLock()
	defer s.cfgMu.RUnlock()
	return ConfigJSON{Path: s.opt.ConfigPath, LoadedAt: s.loadedAt, ReloadError: s.reloadErr}
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.configJSON())
}

// QueueEntry is a buildset in a pipeline's queue or running.
type QueueEntry struct {
	ID        string    `json:"id"`
	Commit    string    `json:"commit"`
	State     string    `json:"state"`
	Cause     string    `json:"cause"`
	CreatedAt time.Time `json:"created_at"`
	// Waiting says why a queued buildset waits.
	Waiting string `json:"waiting,omitempty"`
	// Mode is the buildset's check mode and limit, for people
	// (buildset.Mode.String): "" for a plain deploy.
	Mode string `json:"mode,omitempty"`
}

// PipelineJSON is a pipeline with its queue.
type PipelineJSON struct {
	Name       string       `json:"name"`
	Manager    string       `json:"manager"`
	Precedence string       `json:"precedence"`
	Semaphore  string       `json:"semaphore,omitempty"`
	Push       string       `json:"push_branch,omitempty"`
	Cron       string       `json:"cron,omitempty"`
	Paused     *PauseJSON   `json:"paused"`
	Queued     []QueueEntry `json:"queued"`
	Running    []QueueEntry `json:"running"`
}

func (s *Server) pipelines(ctx context.Context) ([]PipelineJSON, error) {
	cfg := s.Config()
	ch, err := s.reads.ChangedBuildsets(ctx, 0)
	if err != nil {
		return nil, err
	}
	active := ch.Buildsets
	waits := map[string]string{}
	for _, wt := range s.coord.Status().Plan.Waiting {
		waits[wt.Buildset] = wt.Reason
	}
	out := []PipelineJSON{}
	for _, name := range cfg.PipelineNames() {
		pl := cfg.Pipelines[name]
		pj := PipelineJSON{
			Name: name, Manager: string(pl.Manager), Precedence: string(pl.Precedence), Semaphore: pl.Semaphore.Name,
			Cron: pl.Trigger.Cron, Queued: []QueueEntry{}, Running: []QueueEntry{},
		}
		if pl.Trigger.Push != nil {
			pj.Push = pl.Trigger.Push.Branch
		}
		if p := s.coord.Paused(name); p != nil {
			pj.Paused = pauseJSON(*p)
		}
		for _, bs := range active {
			if bs.Pipeline != name {
				continue
			}
			e := QueueEntry{ID: bs.ID, Commit: bs.Commit, State: string(bs.State), Cause: bs.Cause, CreatedAt: bs.CreatedAt, Mode: buildset.ModeOf(bs).String()}
			if bs.State == store.BuildsetQueued {
				e.Waiting = waits[bs.ID]
				pj.Queued = append(pj.Queued, e)
			} else {
				pj.Running = append(pj.Running, e)
			}
		}
		out = append(out, pj)
	}
	return out, nil
}

func (s *Server) getPipelines(w http.ResponseWriter, r *http.Request) {
	p, err := s.pipelines(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"pipelines": p})
}

// SemaphoreJSON is a semaphore with its holders and waiters.
type SemaphoreJSON struct {
	Name    string         `json:"name"`
	Max     int            `json:"max"`
	Holders []HolderJSON   `json:"holders"`
	Waiters []store.Waiter `json:"waiters"`
}

// HolderJSON is a holder, and whether its owner's lease has run out: the
// process died, and the slot is freed once a reaper has ended its builds
// on the bastion (until then, that is what the semaphore waits for).
type HolderJSON struct {
	store.Holder
	OwnerDead bool `json:"owner_dead"`
}

func (s *Server) semaphores(ctx context.Context) ([]SemaphoreJSON, error) {
	cfg := s.Config()
	hs, err := s.reads.Holders(ctx)
	if err != nil {
		return nil, err
	}
	ws, err := s.reads.Waiters(ctx)
	if err != nil {
		return nil, err
	}
	// An owner not alive (fenced, or its lease run out) is dead; one
	// with no row was never registered, and is dead too.
	ids := []string{}
	for _, h := range hs {
		ids = append(ids, h.Owner)
	}
	owners, err := s.reads.Owners(ctx, store.OwnerFilter{IDs: ids})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	alive := map[string]bool{}
	for _, o := range owners {
		alive[o.ID] = o.Alive(now)
	}
	byName := map[string]*SemaphoreJSON{}
	for name, sem := range cfg.Semaphores {
		byName[name] = &SemaphoreJSON{Name: name, Max: sem.Max, Holders: []HolderJSON{}, Waiters: []store.Waiter{}}
	}
	get := func(name string) *SemaphoreJSON {
		if byName[name] == nil {
			byName[name] = &SemaphoreJSON{Name: name, Holders: []HolderJSON{}, Waiters: []store.Waiter{}}
		}
		return byName[name]
	}
	for _, h := range hs {
		sj := get(h.Semaphore)
		sj.Holders = append(sj.Holders, HolderJSON{Holder: h, OwnerDead: !alive[h.Owner]})
	}
	for _, wt := range ws {
		sj := get(wt.Semaphore)
		sj.Waiters = append(sj.Waiters, wt)
	}
	out := []SemaphoreJSON{}
	for _, sj := range byName {
		out = append(out, *sj)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Server) getSemaphores(w http.ResponseWriter, r *http.Request) {
	sems, err := s.semaphores(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"semaphores": sems})
}

// StatusJSON is everything an operator's status page shows.
type StatusJSON struct {
	Ready      bool            `json:"ready"`
	Config     ConfigJSON      `json:"config"`
	Paused     *PauseJSON      `json:"paused"`
	Slots      SlotsJSON       `json:"slots"`
	Pipelines  []PipelineJSON  `json:"pipelines"`
	Semaphores []SemaphoreJSON `json:"semaphores"`
}

// SlotsJSON is the executor's build slots (limits.max_parallel): how many
// builds run now across all buildsets, and how many may.
type SlotsJSON struct {
	InUse int `json:"in_use"`
	Max   int `json:"max"`
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.Status(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// Status is what an operator's status page shows (GET /api/v1/status).
func (s *Server) Status(ctx context.Context) (*StatusJSON, error) {
	cs := s.coord.Status()
	st := &StatusJSON{Ready: s.ready.Load(), Config: s.configJSON(),
		Slots: SlotsJSON{InUse: cs.SlotsInUse, Max: cs.SlotsMax}}
	if p, ok := s.coord.Pauses()[""]; ok {
		st.Paused = pauseJSON(p)
	}
	var err error
	if st.Pipelines, err = s.pipelines(ctx); err != nil {
		return nil, err
	}
	if st.Semaphores, err = s.semaphores(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// webhookBodyBudget is how many bytes the webhook bodies being read may
// hold together. Before a body is verified it is anyone's, so this is
// what unauthenticated deliveries can make the server hold, however many
// arrive at once. It must be at least webhook.MaxBodySize.
const webhookBodyBudget = 32 << 20

// webhookBudgetWait is how long a delivery waits for room in the budget
// before it is refused with 503; GitHub gives a delivery 10 s in all.
const webhookBudgetWait = 5 * time.Second

// webhooks serves POST /webhooks/{forge}. It owns what the deliveries
// share: the budget of the bodies being read, and a lock under which one
// push at a time looks for its pipelines' current buildsets and makes new
// ones, so that two deliveries of one push make one buildset.
type webhooks struct {
	s      *Server
	budget *bodyBudget
	mu     sync.Mutex
}

// post takes a push from a forge. What the headers can prove or refuse is
// checked before a byte of the body is read: a bad or missing token or
// signature header is a 401, an ignored event a 202. The body is then read
// within the budget and verified; a bad signature is a 401 and makes
// nothing.
func (wh *webhooks) post(w http.ResponseWriter, r *http.Request) {
	s := wh.s
	forge, err := webhook.ParseForge(r.PathValue("forge"))
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	cfg := s.Config()
	env := map[webhook.Forge]string{
		webhook.GitHub: cfg.Webhook.GitHubSecretEnv,
		webhook.Gitea:  cfg.Webhook.GiteaSecretEnv,
		webhook.GitLab: cfg.Webhook.GitLabTokenEnv,
	}[forge]
	if env == "" {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no %s webhook is configured (webhooks.%s in the config)", forge, forge))
		return
	}
	secret := []byte(s.opt.Getenv(env))
	refuse := func(err error) {
		s.log.Warn("webhook refused", "forge", forge, "remote", r.RemoteAddr, "err", err)
		writeError(w, http.StatusUnauthorized, err.Error())
	}
	switch err := webhook.CheckHeaders(forge, secret, r.Header); {
	case errors.Is(err, webhook.ErrBadSignature) || errors.Is(err, webhook.ErrEmptySecret):
		refuse(err)
		return
	case errors.Is(err, webhook.ErrNotPush):
		// Not verified, and not needed: whatever it is, it is ignored.
		writeJSON(w, http.StatusAccepted, map[string]any{"buildsets": []string{}, "ignored": err.Error() + " (body not read)"})
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.refuseWhileDraining(w) {
		return // before the body: the forge may deliver it again later
	}
	if r.ContentLength > webhook.MaxBodySize {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("webhook: %s: body of %d bytes, more than %d", forge, r.ContentLength, webhook.MaxBodySize))
		return
	}
	n := r.ContentLength
	if n < 0 {
		n = webhook.MaxBodySize // chunked: it may be as long as that
	}
	wctx, cancel := context.WithTimeout(r.Context(), webhookBudgetWait)
	ok := wh.budget.acquire(wctx, n)
	cancel()
	if !ok {
		s.log.Warn("webhook refused: too many bodies being read", "forge", forge, "remote", r.RemoteAddr, "bytes", n)
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusServiceUnavailable, "too many webhook deliveries being read at once; try again")
		return
	}
	push, err := webhook.Read(forge, secret, r.Header, r.Body, r.ContentLength, 0)
	wh.budget.release(n)
	switch {
	case errors.Is(err, webhook.ErrBadSignature) || errors.Is(err, webhook.ErrEmptySecret):
		refuse(err)
		return
	case errors.Is(err, webhook.ErrNotPush):
		writeJSON(w, http.StatusAccepted, map[string]any{"buildsets": []string{}, "ignored": err.Error()})
		return
	case errors.Is(err, webhook.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		writeError(w, http.StatusRequestTimeout, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ids := []string{}
	if push.Deleted || push.Branch == "" {
		writeJSON(w, http.StatusAccepted, map[string]any{"buildsets": ids, "ignored": "not a push to a branch"})
		return
	}
	s.log.Info("push", "forge", forge, "delivery", push.Delivery, "branch", push.Branch, "after", push.After)
	wh.mu.Lock()
	res, err := s.coord.Push(r.Context(), push.Branch, deliveryID(forge, push.Delivery), string(forge))
	wh.mu.Unlock()
	if res != nil && res.Duplicate {
		writeJSON(w, http.StatusAccepted, map[string]any{"buildsets": ids, "ignored": fmt.Sprintf("delivery %s was received before", push.Delivery)})
		return
	}
	out := map[string]any{"buildsets": ids}
	if res != nil {
		for _, bs := range res.Buildsets {
			ids = append(ids, bs.ID)
		}
		out["buildsets"] = ids
		if res.Commit != "" {
			out["commit"] = res.Commit
		}
		if len(res.Current) > 0 {
			out["current"] = res.Current
		}
		if res.Commit != "" && res.Commit != push.After {
			s.log.Info("push: deploying the branch's head, not the commit the delivery names", "branch", push.Branch, "head", res.Commit, "after", push.After)
		}
	}
	if err != nil {
		out["error"] = err.Error()
		writeJSON(w, http.StatusUnprocessableEntity, out)
		return
	}
	writeJSON(w, http.StatusAccepted, out)
}

// deliveryID is the store's name of a forge's delivery, "" when the forge
// gave none. An id of a form no forge sends (long, or not printable) is
// kept as its hash, so that a header cannot fill the store.
func deliveryID(forge webhook.Forge, id string) string {
	if id == "" {
		return ""
	}
	if len(id) > 100 || strings.IndexFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
		sum := sha256.Sum256([]byte(id))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return string(forge) + "/" + id
}

// bodyBudget bounds the bytes that the webhook bodies being read hold
// together. A body reserves its whole length before a byte of it is read,
// so that two half-read bodies never wait on each other for room.
type bodyBudget struct {
	mu      sync.Mutex
	max     int64
	used    int64
	changed chan struct{} // closed (and replaced) when bytes are released
}

func newBodyBudget(max int64) *bodyBudget {
	return &bodyBudget{max: max, changed: make(chan struct{})}
}

// acquire reserves n bytes, waiting for room until ctx is done; it
// reports whether it reserved them. n over the budget's size is never
// reserved.
func (b *bodyBudget) acquire(ctx context.Context, n int64) bool {
	for {
		b.mu.Lock()
		if b.used+n <= b.max {
			b.used += n
			b.mu.Unlock()
			return true
		}
		ch := b.changed
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// release gives back n bytes that acquire reserved.
func (b *bodyBudget) release(n int64) {
	b.mu.Lock()
	b.used -= n
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}
