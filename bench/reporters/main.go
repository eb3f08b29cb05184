// Command reporters measures what reporters add to a buildset's makespan
// (docs/benchmarks.md). It builds sortie, starts one `sortie serve` per
// mode, each on a fresh state dir, and runs N buildsets of a pipeline (a
// bootstrap job `true`, then three jobs in parallel, each -run) on each, the
// modes taking turns, and prints the makespan of each (finished_at -
// started_at, from the API) and its whole time (finished_at - created_at):
//
//   - none: the pipeline reports nothing;
//   - three: it reports start, success and failure to three reporters (a
//     GitHub commit status, a Slack message, a signed webhook), each a
//     receiver in this process that answers after -delay;
//   - down: the same, but its three receivers answer 503 at once: every delivery is
//     retried, and pending, while the next buildsets run.
//
// It measures; it asserts nothing.
//
//	go run ./bench/reporters -n 60 -delay 200ms
//	go run ./bench/reporters -n 20 -run "sleep 1"
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/bench/internal/benchkit"
)

func main() {
	n := flag.Int("n", 40, "buildsets per mode (after 3 not counted)")
	delay := flag.Duration("delay", 200*time.Millisecond, "how long each receiver takes to answer")
	job := flag.String("run", "true", "the command of each job")
	flag.Parse()
	if err := run(*n, *delay, *job); err != nil {
		fmt.Fprintln(os.Stderr, "reporters:", err)
		os.Exit(1)
	}
}

// receiver answers every request after delay, with status; it counts them.
type receiver struct {
	delay  time.Duration
	status atomic.Int32
	count  atomic.Int64
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	io.Copy(io.Discard, req.Body)
	r.count.Add(1)
	time.Sleep(r.delay)
	w.WriteHeader(int(r.status.Load()))
}

func run(n int, delay time.Duration, job string) error {
	var closers []func()
	work, bin, repo, cleanup, err := benchkit.Setup("sortie-bench-reporters-")
	if err != nil {
		return err
	}
	defer cleanup()
	jobs := fmt.Sprintf(`jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: %[1]q}
  b: {run: %[1]q}
  c: {run: %[1]q}
`, job)
	// Each mode with reporters has three receivers of its own.
	var receivers []*receiver
	reporting := func(status int) (cfg, slackURL string) {
		var urls []string
		for range 3 {
			r := &receiver{delay: delay}
			r.status.Store(int32(status))
			receivers = append(receivers, r)
			s := httptest.NewServer(r)
			closers = append(closers, s.Close)
			urls = append(urls, s.URL)
		}
		return fmt.Sprintf(`server: {public_url: https://deploy.example.org}
reporters:
  gh: {type: github, url: %q, repository: org/infra, token_env: GH_TOKEN}
  chat: {type: slack, url_env: SLACK_URL}
  hook: {type: webhook, url: %q, secret_env: HOOK_SECRET}
`, urls[0], urls[2]) + jobs + "pipelines:\n  deploy: {manager: serial, jobs: [a, b, c], report: {start: [gh, chat, hook], success: [gh, chat, hook], failure: [gh, chat, hook]}}\n", urls[1]
	}
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	type mode struct{ name, cfg, slackURL string }
	modes := []mode{{name: "none", cfg: jobs + "pipelines:\n  deploy: {manager: serial, jobs: [a, b, c]}\n"}}
	cfg, slackURL := reporting(http.StatusCreated)
	modes = append(modes, mode{"three", cfg, slackURL})
	cfg, slackURL = reporting(http.StatusServiceUnavailable)
	modes = append(modes, mode{"down", cfg, slackURL})
	fmt.Printf("%d buildsets per mode (boot, then a, b, c in parallel, each %q), the modes taking turns, receivers answering after %v\n", n, job, delay)
	// The three servers run at once and take turns, one buildset each, so
	// that what else the machine does weighs on each mode alike.
	bases := make([]string, len(modes))
	for i, m := range modes {
		base, stop, err := startServe(work, bin, repo, m.name, m.cfg, m.slackURL)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		defer stop()
		bases[i] = base
	}
	makespans := make([][]time.Duration, len(modes))
	totals := make([][]time.Duration, len(modes))
	for round := range n + 3 {
		for i, m := range modes {
			id, err := trigger(bases[i])
			if err != nil {
				return err
			}
			bs, err := waitDone(bases[i], id)
			if err != nil {
				return err
			}
			if bs.Result != "SUCCESS" {
				return fmt.Errorf("%s: buildset %s: %s", m.name, id, bs.Result)
			}
			if round >= 3 { // the first ones warm up
				makespans[i] = append(makespans[i], bs.FinishedAt.Sub(bs.StartedAt))
				totals[i] = append(totals[i], bs.FinishedAt.Sub(bs.CreatedAt))
			}
		}
	}
	for i, m := range modes {
		fmt.Printf("%-5s makespan %s | created to finished %s\n", m.name, stats(makespans[i]), stats(totals[i]))
	}
	var three, down int64
	for i, r := range receivers {
		if i < 3 {
			three += r.count.Load()
		} else {
			down += r.count.Load()
		}
	}
	fmt.Printf("requests to the receivers meanwhile: three %d (of %d deliveries), down %d\n", three, 3*2*(n+3), down)
	return nil
}

// startServe starts `sortie serve` on cfg, in a state dir of its own, and
// returns its URL and how to stop it.
func startServe(work, bin, repo, name, cfg, slackURL string) (string, func(), error) {
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	path := filepath.Join(dir, "sortie.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("source: {url: %q, branch: main}\n%s", repo, cfg)), 0o644); err != nil {
		return "", nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "serve.log"))
	if err != nil {
		return "", nil, err
	}
	srv, err := benchkit.Start(bin, path, filepath.Join(dir, "state"), logf,
		"SORTIE_TOKENS=bench-token", "GH_TOKEN=ghp_bench", "SLACK_URL="+slackURL+"/services/T0/B0/key", "HOOK_SECRET=bench-secret")
	if err != nil {
		logf.Close()
		return "", nil, err
	}
	return srv.Base, func() { srv.Stop(); logf.Close() }, nil
}

type buildset struct {
	Result                           string
	CreatedAt, StartedAt, FinishedAt time.Time
}

func trigger(base string) (string, error) {
	req, _ := http.NewRequest("POST", base+"/api/v1/pipelines/deploy/trigger", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer bench-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct{ Buildset string }
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("trigger: %d %v", resp.StatusCode, err)
	}
	return r.Buildset, nil
}

func waitDone(base, id string) (*buildset, error) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		resp, err := http.Get(base + "/api/v1/buildsets/" + id)
		if err != nil {
			return nil, err
		}
		var bs struct {
			State, Result string
			Created       time.Time  `json:"created_at"`
			Started       *time.Time `json:"started_at"`
			Finished      *time.Time `json:"finished_at"`
		}
		err = json.NewDecoder(resp.Body).Decode(&bs)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if bs.State == "DONE" && bs.Started != nil && bs.Finished != nil {
			return &buildset{Result: bs.Result, CreatedAt: bs.Created, StartedAt: *bs.Started, FinishedAt: *bs.Finished}, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, fmt.Errorf("buildset %s not done within a minute", id)
}

// stats is min, median, mean, p90 and max, in milliseconds.
func stats(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }
	return fmt.Sprintf("min %s median %s mean %s p90 %s max %s ms", ms(s[0]), ms(s[len(s)/2]), ms(sum/time.Duration(len(s))), ms(s[len(s)*9/10]), ms(s[len(s)-1]))
}
