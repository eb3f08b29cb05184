package main

// The API clients of `sortie serve` (SPEC §4, docs/api.md): trigger,
// status, logs, cancel, pause, resume, reload and rerun. They speak plain
// HTTP+JSON with the standard library, read the server from --server (else
// $SORTIE_SERVER, else http://127.0.0.1:8080) and the bearer token from
// $SORTIE_TOKEN.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

const defaultServer = "http://127.0.0.1:8080"

// requestTimeout bounds every call but a followed log.
const requestTimeout = 30 * time.Second

// waitPoll is how often trigger --wait looks at the buildset.
const waitPoll = 300 * time.Millisecond

// apiClient talks to one server.
type apiClient struct {
	base  *url.URL
	token string
	http  *http.Client
}

// apiError is an HTTP error answer of the server.
type apiError struct {
	status int
	msg    string   // the body's "error"
	errs   []string // the body's "errors" (a refused reload)
	body   []byte
}

func (e *apiError) Error() string {
	msg := e.msg
	if msg == "" {
		msg = strings.TrimSpace(string(e.body))
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
	}
	if msg == "" {
		msg = http.StatusText(e.status)
	}
	return fmt.Sprintf("server: %s (HTTP %d)", msg, e.status)
}

// serverFlag adds --server to fs.
func serverFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("SORTIE_SERVER")
	if def == "" {
		def = defaultServer
	}
	return fs.String("server", def, "URL of the sortie server (default $SORTIE_SERVER, else "+defaultServer+")")
}

func newAPIClient(server string) (*apiClient, error) {
	u, err := url.Parse(strings.TrimRight(server, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError("--server %q: want a URL like %s", server, defaultServer)
	}
	return &apiClient{base: u, token: strings.TrimSpace(os.Getenv("SORTIE_TOKEN")), http: &http.Client{}}, nil
}

// url joins the API path (already escaped) to the server's URL.
func (c *apiClient) url(path string) string {
	return strings.TrimRight(c.base.String(), "/") + path
}

func (c *apiClient) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", "sortie-cli")
	return req, nil
}

// send makes a request and returns the response of a 2xx answer; any other
// answer is an *apiError, a failure to connect a readable error.
func (c *apiClient) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.connError(req, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	ae := &apiError{status: resp.StatusCode, body: data}
	var eb struct {
		Error  string   `json:"error"`
		Errors []string `json:"errors"`
	}
	if json.Unmarshal(data, &eb) == nil {
		ae.msg, ae.errs = eb.Error, eb.Errors
	}
	return nil, ae
}

func (c *apiClient) connError(req *http.Request, err error) error {
	if ctxErr := req.Context().Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return fmt.Errorf("the sortie server at %s did not answer %s %s within %s", c.base, req.Method, req.URL.Path, requestTimeout)
		}
		return ctxErr
	}
	var op *net.OpError
	var dns *net.DNSError
	if errors.As(err, &op) && op.Op == "dial" || errors.As(err, &dns) {
		return fmt.Errorf("cannot reach the sortie server at %s: %v\n(is `sortie serve` running there? say where with --server URL or $SORTIE_SERVER)", c.base, innermost(err))
	}
	return fmt.Errorf("talking to the sortie server at %s: %w", c.base, err)
}

// innermost drops the url.Error and net.OpError wrapping ("dial tcp ...:
// connect: connection refused" reads better without the method and URL).
func innermost(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// call sends a JSON request and decodes a JSON answer into out (unless nil).
// It returns the raw body too.
func (c *apiClient) call(ctx context.Context, method, path string, body, out any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, c.connError(req, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return data, fmt.Errorf("%s %s: the server's answer is not the JSON expected: %v", method, path, err)
		}
	}
	return data, nil
}

// clientErr turns an error of a call into what the command returns: the
// message (with a hint for a 401) and exit 1.
func clientErr(err error) error {
	var ae *apiError
	if !errors.As(err, &ae) {
		if errors.Is(err, context.Canceled) {
			return exitCode(1)
		}
		return err
	}
	msg := ae.Error()
	for _, e := range ae.errs {
		msg += "\n  " + e
	}
	if ae.status == http.StatusUnauthorized {
		if os.Getenv("SORTIE_TOKEN") == "" {
			msg += "\nSORTIE_TOKEN is not set: export SORTIE_TOKEN=<one of the server's tokens> (server.tokens_env, SORTIE_TOKENS by default)"
		} else {
			msg += "\nthe server refused the token in SORTIE_TOKEN: set SORTIE_TOKEN to one of the server's tokens (server.tokens_env, SORTIE_TOKENS by default)"
		}
	}
	return &exitError{code: 1, msg: msg}
}

// buildsetErr is clientErr for a call about buildset id: when the server
// has no such buildset (a 404 to GET /api/v1/buildsets/{id}), the command
// says "op: no buildset ID", whatever the call answered (the server's
// message for it names its store).
func (c *apiClient) buildsetErr(ctx context.Context, op, id string, err error) error {
	var ae *apiError
	if errors.As(err, &ae) && (ae.status == http.StatusNotFound || ae.status == http.StatusConflict) {
		_, gerr := c.call(ctx, http.MethodGet, apiBuildsetPath(id), nil, nil)
		if errors.As(gerr, &ae) && ae.status == http.StatusNotFound {
			return &exitError{code: 1, msg: fmt.Sprintf("%s: no buildset %s on the server at %s", op, id, c.base)}
		}
	}
	return clientErr(err)
}

// cliWho names the operator for "by": $USER, else the account's name.
func cliWho() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return "cli"
}

// parseInterspersed parses flags that may come before, between or after the
// positional arguments (sortie logs BS JOB -f), and checks that there are
// from min to max of those (max < 0: any number).
func parseInterspersed(fs *flag.FlagSet, args []string, min, max int, names string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	switch {
	case len(pos) < min:
		return nil, usageError("%s: want %s", fs.Name(), names)
	case max >= 0 && len(pos) > max:
		return nil, usageError("%s: unexpected argument %q", fs.Name(), pos[max])
	}
	return pos, nil
}

// remoteBuildset is the API's buildset resource, as the clients read it.
type remoteBuildset struct {
	buildset.Report
	State   string      `json:"state"`
	Cause   string      `json:"cause"`
	RerunOf string      `json:"rerun_of"`
	Plan    *graph.Plan `json:"plan"`
}

func apiBuildsetPath(id string) string { return "/api/v1/buildsets/" + url.PathEscape(id) }

func cmdTrigger(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("trigger", "--pipeline NAME [--commit REV] [--files F ...] [--wait] [--report FILE] [--server URL]", stderr)
	server := serverFlag(fs)
	pipeline := fs.String("pipeline", "", "pipeline to trigger")
	commit := fs.String("commit", "", "commit or ref to deploy (default: the head of source.branch)")
	wait := fs.Bool("wait", false, "wait for the buildset, print its summary and exit like sortie run")
	report := fs.String("report", "", "write the buildset (JSON) to this file once it is done (with --wait), or as made")
	var files filesFlag
	fs.Var(&files, "files", "changed files (repeat, or separate with commas); none means every job")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *pipeline == "" {
		return usageError("trigger: --pipeline is required")
	}
	c, err := newAPIClient(*server)
	if err != nil {
		return err
	}
	body := map[string]any{"by": cliWho()}
	if *commit != "" {
		body["commit"] = *commit
	}
	if files.set {
		body["files"] = append([]string{}, files.files...)
	}
	var resp struct {
		Buildset string `json:"buildset"`
		Error    string `json:"error"`
	}
	_, err = c.call(ctx, http.MethodPost, "/api/v1/pipelines/"+url.PathEscape(*pipeline)+"/trigger", body, &resp)
	var ae *apiError
	switch {
	case errors.As(err, &ae) && ae.status == http.StatusNotFound && ae.msg != "":
		return &exitError{code: 2, msg: ae.Error()} // no such pipeline: bad usage, as for sortie run
	case err != nil:
		return clientErr(err)
	}
	fmt.Fprintln(stdout, resp.Buildset)
	if resp.Error != "" {
		// A buildset error (SPEC §2.2): the buildset exists, CONFIG_ERROR;
		// exit 2, as sortie run does.
		if werr := c.writeBuildset(ctx, resp.Buildset, *report); werr != nil {
			return werr
		}
		return &exitError{code: 2, msg: resp.Error}
	}
	if !*wait {
		return c.writeBuildset(ctx, resp.Buildset, *report)
	}
	return c.waitBuildset(ctx, resp.Buildset, *report, stdout, stderr)
}

// writeBuildset writes the buildset's resource to path (nothing when "").
func (c *apiClient) writeBuildset(ctx context.Context, id, path string) error {
	if path == "" {
		return nil
	}
	data, err := c.call(ctx, http.MethodGet, apiBuildsetPath(id), nil, nil)
	if err != nil {
		return clientErr(err)
	}
	return writeClientReport(path, data)
}

func writeClientReport(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return os.Rename(tmp, path)
}

// waitBuildset polls a buildset until it is DONE, printing its builds'
// progress as sortie run does, then its summary; the exit code is sortie
// run's: 0 SUCCESS, 2 CONFIG_ERROR, 1 anything else.
func (c *apiClient) waitBuildset(ctx context.Context, id, report string, stdout, stderr io.Writer) error {
	prog := newProgress(stdout, false)
	prog.Start()
	defer prog.Stop()
	var (
		started  bool
		waiting  = "\x00"
		attempts = map[string]int{}
		finished = map[string]bool{}
		last     []byte
		bs       remoteBuildset
		failures int
	)
	for {
		data, err := c.call(ctx, http.MethodGet, apiBuildsetPath(id), nil, nil)
		if err == nil {
			bs = remoteBuildset{}
			err = json.Unmarshal(data, &bs)
		}
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) || ctx.Err() != nil || failures >= 10 {
				prog.Stop()
				if ctx.Err() != nil {
					fmt.Fprintf(stderr, "sortie: stopped waiting; buildset %s goes on on the server\n", id)
					return exitCode(1)
				}
				return clientErr(err)
			}
			failures++ // a server restarting: try again for about 20s
			fmt.Fprintf(stderr, "sortie: %v (retrying)\n", err)
		} else {
			failures, last = 0, data
			if bs.State == string(store.BuildsetQueued) || bs.State == string(store.BuildsetAdmitted) {
				if w := strings.ToLower(bs.State) + ": " + c.waitingReason(ctx, bs.Pipeline, id, bs.State); w != waiting {
					waiting = w
					prog.mu.Lock()
					prog.print(fmt.Sprintf("%s buildset %s %s", stamp(time.Now()), id, strings.TrimSuffix(w, ": ")))
					prog.mu.Unlock()
				}
			}
			if !started && bs.Plan != nil && (bs.State == string(store.BuildsetRunning) || bs.State == string(store.BuildsetDone)) {
				started = true
				prog.BuildsetStarted(&store.Buildset{ID: bs.ID, Pipeline: bs.Pipeline, Commit: bs.Commit}, bs.Plan)
			}
			for _, b := range bs.Builds {
				if b.Attempt > attempts[b.Job] && !finished[b.Job] {
					at := time.Now()
					if s := b.StartedAt.Get(); s != nil && b.Attempt == 1 {
						at = *s
					}
					attempts[b.Job] = b.Attempt
					prog.AttemptStarted(b.Job, b.Attempt, at)
				}
				if reportBuildDone(b) && !finished[b.Job] {
					finished[b.Job] = true
					at := time.Now()
					if f := b.FinishedAt.Get(); f != nil {
						at = *f
					}
					prog.BuildFinished(b.Job, store.Result(b.Result), b.Reason, at)
				}
			}
			if bs.State == string(store.BuildsetDone) {
				break
			}
		}
		pause := waitPoll
		if failures > 0 {
			pause = 2 * time.Second
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
	prog.Stop()
	prog.plan = bs.Plan
	rep := bs.Report
	prog.Summary(&rep)
	prog.Failures(&rep, func(b buildset.BuildReport) ([]string, string, error) {
		return c.logTail(ctx, id, b)
	})
	if bs.Error != "" {
		fmt.Fprintf(stderr, "sortie: buildset %s: %s\n", id, bs.Error)
	}
	if report != "" {
		if err := writeClientReport(report, last); err != nil {
			return err
		}
	}
	switch bs.Result {
	case string(store.Success), string(store.Skipped):
		return nil
	case string(store.ConfigError):
		return exitCode(2)
	}
	return exitCode(1)
}

// logTail reads the last lines of a build's log from the server, and
// gives the log's URL.
func (c *apiClient) logTail(ctx context.Context, id string, b buildset.BuildReport) ([]string, string, error) {
	if b.Attempt < 1 {
		return nil, "", nil
	}
	path := apiBuildsetPath(id) + "/builds/" + url.PathEscape(b.Job) + "/log?" +
		url.Values{"attempt": {strconv.Itoa(b.Attempt)}}.Encode()
	data, err := c.call(ctx, http.MethodGet, path+"&lines="+strconv.Itoa(failureLines), nil, nil)
	if err != nil {
		return nil, c.url(path), err
	}
	text := strings.TrimSuffix(string(data), "\n")
	if text == "" {
		return nil, c.url(path), nil
	}
	return strings.Split(text, "\n"), c.url(path), nil
}

// reportBuildDone reports whether a build of a report has its final result.
func reportBuildDone(b buildset.BuildReport) bool {
	switch store.Result(b.Result) {
	case "", store.Retry, store.Lost:
		return false
	}
	return true
}

// waitingReason asks the server why a queued or admitted buildset waits
// ("" if it does not say).
func (c *apiClient) waitingReason(ctx context.Context, pipeline, id, state string) string {
	var resp struct {
		Pipelines []struct {
			Name      string `json:"name"`
			Semaphore string `json:"semaphore"`
			Paused    *struct {
				By     string `json:"by"`
				Reason string `json:"reason"`
			} `json:"paused"`
			Queued []struct {
				ID      string `json:"id"`
				Waiting string `json:"waiting"`
			} `json:"queued"`
		} `json:"pipelines"`
	}
	if _, err := c.call(ctx, http.MethodGet, "/api/v1/pipelines", nil, &resp); err != nil {
		return ""
	}
	for _, p := range resp.Pipelines {
		if p.Name != pipeline {
			continue
		}
		if state == string(store.BuildsetAdmitted) {
			if p.Semaphore != "" {
				return "waiting for the pipeline semaphore " + p.Semaphore
			}
			return ""
		}
		for _, q := range p.Queued {
			if q.ID == id && q.Waiting != "" {
				return q.Waiting
			}
		}
		if p.Paused != nil {
			return pauseText("paused", p.Paused.By, p.Paused.Reason)
		}
	}
	return ""
}

func pauseText(what, by, reason string) string {
	s := what + " by " + by
	if reason != "" {
		s += ": " + reason
	}
	return s
}

// cliStatus is GET /api/v1/status as the client reads it.
type cliStatus struct {
	Ready  bool `json:"ready"`
	Config struct {
		Path        string    `json:"path"`
		LoadedAt    time.Time `json:"loaded_at"`
		ReloadError *struct {
			At     time.Time `json:"at"`
			Errors []string  `json:"errors"`
		} `json:"reload_error"`
	} `json:"config"`
	Paused    *cliPause `json:"paused"`
	Pipelines []struct {
		Name       string          `json:"name"`
		Manager    string          `json:"manager"`
		Precedence string          `json:"precedence"`
		Semaphore  string          `json:"semaphore"`
		Push       string          `json:"push_branch"`
		Cron       string          `json:"cron"`
		Paused     *cliPause       `json:"paused"`
		Queued     []cliQueueEntry `json:"queued"`
		Running    []cliQueueEntry `json:"running"`
	} `json:"pipelines"`
	Semaphores []struct {
		Name    string         `json:"name"`
		Max     int            `json:"max"`
		Holders []store.Holder `json:"holders"`
		Waiters []store.Waiter `json:"waiters"`
	} `json:"semaphores"`
}

type cliPause struct {
	Pipeline string    `json:"pipeline"`
	By       string    `json:"by"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

type cliQueueEntry struct {
	ID        string    `json:"id"`
	Commit    string    `json:"commit"`
	State     string    `json:"state"`
	Cause     string    `json:"cause"`
	CreatedAt time.Time `json:"created_at"`
	Waiting   string    `json:"waiting"`
}

func cliTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "[--json] [--server URL]", stderr)
	server := serverFlag(fs)
	asJSON := fs.Bool("json", false, "print the server's JSON (GET /api/v1/status)")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := newAPIClient(*server)
	if err != nil {
		return err
	}
	var st cliStatus
	data, err := c.call(ctx, http.MethodGet, "/api/v1/status", nil, &st)
	if err != nil {
		return clientErr(err)
	}
	if *asJSON {
		_, err := stdout.Write(data)
		return err
	}
	var b strings.Builder
	ready := "ready"
	if !st.Ready {
		ready = "NOT READY"
	}
	fmt.Fprintf(&b, "server %s: %s; config %s loaded %s\n", c.base, ready, st.Config.Path, cliTime(st.Config.LoadedAt))
	if re := st.Config.ReloadError; re != nil {
		fmt.Fprintf(&b, "LAST RELOAD REFUSED at %s (the config above is still in force):\n", cliTime(re.At))
		for _, e := range re.Errors {
			fmt.Fprintf(&b, "  %s\n", strings.ReplaceAll(e, "\n", "\n  "))
		}
	}
	if p := st.Paused; p != nil {
		fmt.Fprintf(&b, "ALL PIPELINES %s (since %s)\n", pauseText("PAUSED", p.By, p.Reason), cliTime(p.At))
	}
	b.WriteString("\nPIPELINES\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, p := range st.Pipelines {
		var attrs []string
		attrs = append(attrs, p.Manager, "precedence "+p.Precedence)
		if p.Semaphore != "" {
			attrs = append(attrs, "semaphore "+p.Semaphore)
		}
		if p.Push != "" {
			attrs = append(attrs, "push "+p.Push)
		}
		if p.Cron != "" {
			attrs = append(attrs, "cron "+p.Cron)
		}
		state := "idle"
		switch {
		case p.Paused != nil && (st.Paused == nil || p.Paused.Pipeline != ""):
			state = pauseText("paused", p.Paused.By, p.Paused.Reason) + " (since " + cliTime(p.Paused.At) + ")"
		case p.Paused != nil:
			state = "paused (all pipelines)"
		case len(p.Running) > 0:
			state = "running"
		case len(p.Queued) > 0:
			state = "queued"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Name, strings.Join(attrs, ", "), state)
		for _, e := range p.Running {
			cause := e.Cause
			if e.State == string(store.BuildsetAdmitted) && p.Semaphore != "" {
				cause = "waiting for semaphore " + p.Semaphore + " (" + cause + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s at %.12s\t%s\n", strings.ToLower(e.State), e.ID, e.Commit, cause)
		}
		for _, e := range p.Queued {
			w := e.Waiting
			if w == "" {
				w = "waiting"
			}
			fmt.Fprintf(tw, "  queued\t%s at %.12s\t%s (%s)\n", e.ID, e.Commit, w, e.Cause)
		}
	}
	tw.Flush()
	b.WriteString("\nSEMAPHORES\n")
	if len(st.Semaphores) == 0 {
		b.WriteString("  (none)\n")
	}
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, s := range st.Semaphores {
		fmt.Fprintf(tw, "%s\t%d/%d held\t%d waiting\n", s.Name, len(s.Holders), s.Max, len(s.Waiters))
		for _, h := range s.Holders {
			fmt.Fprintf(tw, "  held by\t%s\tbuildset %s, since %s\n", h.Holder, h.Buildset, cliTime(h.AcquiredAt))
		}
		for _, w := range s.Waiters {
			fmt.Fprintf(tw, "  wanted by\t%s\tbuildset %s, since %s\n", w.Holder, w.Buildset, cliTime(w.Since))
		}
	}
	tw.Flush()
	_, err = io.WriteString(stdout, b.String())
	return err
}

func cmdLogs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("logs", "BUILDSET JOB [--attempt N] [-f|--follow] [--tail N] [--server URL]", stderr)
	server := serverFlag(fs)
	attempt := fs.Int("attempt", 0, "attempt to show (default: the latest)")
	var follow bool
	fs.BoolVar(&follow, "follow", false, "follow the log live until the build ends; exit 0 if it succeeded, else 1")
	fs.BoolVar(&follow, "f", false, "short for --follow")
	tail := fs.Int("tail", 0, "only the last N lines of the log (then follow from there with -f)")
	pos, err := parseInterspersed(fs, args, 2, 2, "BUILDSET JOB")
	if err != nil {
		return err
	}
	if *attempt < 0 || *tail < 0 {
		return usageError("logs: --attempt and --tail must be positive")
	}
	c, err := newAPIClient(*server)
	if err != nil {
		return err
	}
	id, job := pos[0], pos[1]
	buildPath := apiBuildsetPath(id) + "/builds/" + url.PathEscape(job)
	// The build's resource says plainly when there is no such build.
	if _, err := c.call(ctx, http.MethodGet, buildPath, nil, nil); err != nil {
		return c.buildsetErr(ctx, "logs", id, err)
	}
	q := url.Values{}
	if *attempt > 0 {
		q.Set("attempt", strconv.Itoa(*attempt))
	}
	if *tail > 0 {
		q.Set("lines", strconv.Itoa(*tail))
	}
	if follow {
		q.Set("follow", "1")
		return c.followLog(ctx, buildPath+"/log?"+q.Encode(), job, stdout, stderr)
	}
	path := buildPath + "/log"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := c.newRequest(rctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := c.send(req)
	if err != nil {
		return clientErr(err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(stdout, resp.Body); err != nil {
		return clientErr(c.connError(req, err))
	}
	return nil
}

// followLog reads a log's Server-Sent Events: each data line is a line of
// the log; "attempt" says a retry began; "end" carries the build's result.
// A dropped connection is resumed with Last-Event-ID.
func (c *apiClient) followLog(ctx context.Context, path, job string, stdout, stderr io.Writer) error {
	lastID := ""
	retry := time.Second
	failures := 0
	for {
		req, err := c.newRequest(ctx, http.MethodGet, path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "text/event-stream")
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := c.send(req)
		var ae *apiError
		switch {
		case errors.As(err, &ae) || ctx.Err() != nil:
			return clientErr(err)
		case err != nil:
			if failures++; failures > 10 {
				return err
			}
			fmt.Fprintf(stderr, "sortie: %v (retrying)\n", err)
		default:
			result, ended, err := readEvents(resp.Body, stdout, stderr, &lastID, &retry)
			resp.Body.Close()
			if ended {
				fmt.Fprintf(stderr, "sortie: %s ended: %s\n", job, result)
				if result == string(store.Success) {
					return nil
				}
				return exitCode(1)
			}
			if ctx.Err() != nil {
				return exitCode(1)
			}
			failures = 0
			if err != nil {
				fmt.Fprintf(stderr, "sortie: log stream broken (%v); resuming\n", err)
			}
		}
		select {
		case <-ctx.Done():
			return exitCode(1)
		case <-time.After(retry):
		}
	}
}

// readEvents parses an event stream until its end event or EOF.
func readEvents(r io.Reader, stdout, stderr io.Writer, lastID *string, retry *time.Duration) (result string, ended bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var event, id string
	var data []string
	hasData := false
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	for {
		// Print what we have before a read that may wait for the server.
		if buf, _ := br.Peek(br.Buffered()); bytes.IndexByte(buf, '\n') < 0 {
			out.Flush()
		}
		raw, rerr := br.ReadString('\n')
		if rerr != nil {
			if rerr == io.EOF {
				return "", false, nil
			}
			return "", false, rerr
		}
		line := strings.TrimSuffix(strings.TrimSuffix(raw, "\n"), "\r")
		if line == "" { // dispatch
			if id != "" {
				*lastID = id
			}
			switch event {
			case "", "message":
				if hasData {
					out.WriteString(strings.Join(data, "\n") + "\n")
				}
			case "attempt":
				out.Flush()
				fmt.Fprintf(stderr, "sortie: attempt %s\n", strings.Join(data, ""))
			case "end":
				return strings.Join(data, ""), true, nil
			}
			event, id, data, hasData = "", "", nil, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			event = value
		case "data":
			data, hasData = append(data, value), true
		case "id":
			id = value
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && ms > 0 {
				*retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

func cmdCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("cancel", "BUILDSET [--job JOB] [--server URL]", stderr)
	server := serverFlag(fs)
	job := fs.String("job", "", "cancel only this build's running attempt")
	pos, err := parseInterspersed(fs, args, 1, 1, "BUILDSET")
	if err != nil {
		return err
	}
	c, err := newAPIClient(*server)
	if err != nil {
		return err
	}
	id := pos[0]
	if *job != "" {
		if _, err := c.call(ctx, http.MethodPost, apiBuildsetPath(id)+"/builds/"+url.PathEscape(*job)+"/cancel", map[string]string{"by": cliWho()}, nil); err != nil {
			return c.buildsetErr(ctx, "cancel", id, err)
		}
		fmt.Fprintf(stdout, "cancelling %s of buildset %s\n", *job, id)
		return nil
	}
	if _, err := c.call(ctx, http.MethodPost, apiBuildsetPath(id)+"/cancel", map[string]string{"by": cliWho()}, nil); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusConflict && ae.msg == store.ErrConflict.Error() {
			ae.msg = "buildset " + id + " has already finished"
		}
		return c.buildsetErr(ctx, "cancel", id, err)
	}
	fmt.Fprintf(stdout, "cancelling buildset %s\n", id)
	return nil
}

func cmdPause(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pauseOrResume(ctx, "pause", args, stdout, stderr)
}

func cmdResume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return pauseOrResume(ctx, "resume", args, stdout, stderr)
}

func pauseOrResume(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	synopsis := "[--pipeline P] [--server URL]"
	if name == "pause" {
		synopsis = "[--pipeline P] [--reason R] [--server URL]"
	}
	fs := newFlags(name, synopsis, stderr)
	server := serverFlag(fs)
	pipeline := fs.String("pipeline", "", "only this pipeline (default: all of them)")
	var reason *string
	if name == "pause" {
		reason = fs.String("reason", "", "why, for whoever looks at the status")
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := newAPIClient(*server)
	if err != nil {
		return err
	}
	body := map[string]string{"by": cliWho()}
	if *pipeline != "" {
		body["pipeline"] = *pipeline
	}
	if reason != nil && *reason != "" {
		body["reason"] = *reason
	}
	if _, err := c.call(ctx, http.MethodPost, "/api/v1/"+name, body, nil); err != nil {
		return clientErr(err)
	}
	what := "all pipelines"
	if *pipeline != "" {
		what = "pipeline " + *pipeline
	}
	if name == "pause" {
		fmt.Fprintf(stdout, "paused %s: running builds finish, nothing new starts, events keep queueing\n", what)
	} else {
		fmt.Fprintf(stdout, "resumed %s\n", what)
		// A pause of all and a pause of one pipeline are separate: say
		// which one still holds.
		var st cliStatus
		if _, err := c.call(ctx, http.MethodGet, "/api/v1/status", nil, &st); err == nil {
			if *pipeline != "" && st.Paused != nil {
				fmt.Fprintf(stderr, "sortie: note: all pipelines are still %s\n", pauseText("paused", st.Paused.By, st.Paused.Reason))
			}
			for _, p := range st.Pipelines {
				if p.Paused != nil && (*pipeline == "" || p.Name == *pipeline) {
					fmt.Fprintf(stderr, "sortie: note: pipeline %s stays %s: resume it with --pipeline %s\n", p.Name, pauseText("paused", p.Paused.By, p.Paused.Reason), p.Name)
				}
			}
		}
	}
	return nil
}

func cmdReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", "[--server URL]", stderr)
	server := serverFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := newAPIClient(*server)
	if err != nil {
		return err
	}
	var resp struct {
		Path     string    `json:"path"`
		LoadedAt time.Time `json:"loaded_at"`
	}
	if _, err := c.call(ctx, http.MethodPost, "/api/v1/reload", nil, &resp); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.status == http.StatusUnprocessableEntity && len(ae.errs) > 0 {
			fmt.Fprintln(stderr, strings.Join(ae.errs, "\n"))
			return &exitError{code: 2, msg: ae.msg}
		}
		return clientErr(err)
	}
	fmt.Fprintf(stdout, "config %s reloaded at %s\n", resp.Path, cliTime(resp.LoadedAt))
	return nil
}

func cmdRerun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("rerun", "BUILDSET [--wait] [--report FILE] [--server URL]", stderr)
	server := serverFlag(fs)
	wait := fs.Bool("wait", false, "wait for the new buildset, print its summary and exit like sortie run")
	report := fs.String("report", "", "write the new buildset (JSON) to this file")
	pos, err := parseInterspersed(fs, args, 1, 1, "BUILDSET")
	if err != nil {
		return err
	}
	c, err := newAPIClient(*server)
	if err != nil {
		return err
	}
	var resp struct {
		Buildset string `json:"buildset"`
	}
	if _, err := c.call(ctx, http.MethodPost, apiBuildsetPath(pos[0])+"/rerun", map[string]string{"by": cliWho()}, &resp); err != nil {
		return c.buildsetErr(ctx, "rerun", pos[0], err)
	}
	fmt.Fprintln(stdout, resp.Buildset)
	if !*wait {
		return c.writeBuildset(ctx, resp.Buildset, *report)
	}
	return c.waitBuildset(ctx, resp.Buildset, *report, stdout, stderr)
}
