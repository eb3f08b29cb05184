// Command cluster measures how a cluster's capacity grows with its nodes:
// for each node count given, a fresh PostgreSQL database, that many
// `sortie serve` nodes on it (real binaries, a state dir, a loopback port
// and a --node name each, one config: limits.max_parallel P), and a stream
// of N buildsets of an independent pipeline (a bootstrap job `true`, then
// a job `sleep S`) triggered as fast as they are taken, spread over the
// nodes' APIs. It prints the buildsets per minute from the first trigger to
// the last buildset's end, and per node how many buildsets it ran (the
// owner of each build attempt, from the database), how busy its P build
// slots were, and its CPU time; and PostgreSQL's CPU time. It measures;
// it asserts nothing.
//
//	go run ./bench/cluster -n 60 -sleep 3s -parallel 2 -nodes 1,3 [-write]
//
// -write also puts the figures in docs/benchmarks.md, between the markers
// of its section. It runs as root (PostgreSQL's initdb as the postgres
// user) or as a user who can run initdb.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/bench/internal/benchkit"
)

const token = "bench-token"

func main() {
	n := flag.Int("n", 60, "buildsets triggered in each run")
	sleep := flag.Duration("sleep", 3*time.Second, "how long each buildset's job sleeps")
	parallel := flag.Int("parallel", 2, "limits.max_parallel of every node")
	nodes := flag.String("nodes", "1,3", "comma-separated node counts, a run each")
	clients := flag.Int("c", 4, "concurrent clients sending the triggers")
	write := flag.Bool("write", false, "also put the results in docs/benchmarks.md")
	keep := flag.Bool("keep", false, "keep the work dir (the servers' logs) and say where")
	flag.Parse()
	var counts []int
	for _, f := range strings.Split(*nodes, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || c < 1 {
			fmt.Fprintf(os.Stderr, "cluster: -nodes: %q is not a node count\n", f)
			os.Exit(2)
		}
		counts = append(counts, c)
	}
	b := &bench{n: *n, sleep: *sleep, parallel: *parallel, clients: *clients, keep: *keep}
	out, err := b.run(counts)
	if err == nil && *write {
		err = writeDoc("docs/benchmarks.md", out)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

type bench struct {
	n, parallel, clients int
	sleep                time.Duration
	keep                 bool
	work, bin, repo      string
	pg                   *benchkit.Postgres
}

// result is one run's figures.
type result struct {
	nodes     int
	wall      time.Duration // first trigger to the last buildset's end
	triggers  time.Duration // first trigger to the last one answered
	failed    map[string]int
	perNode   []nodeResult
	serverCPU time.Duration
	dbCPU     time.Duration // PostgreSQL's
}

type nodeResult struct {
	name      string
	buildsets int           // whose sleep job it ran
	busy      time.Duration // its attempts' durations, summed
	cpu       time.Duration
}

func (b *bench) run(counts []int) (string, error) {
	var err error
	var cleanup func()
	if b.work, b.bin, b.repo, cleanup, err = benchkit.Setup("sortie-cluster-"); err != nil {
		return "", err
	}
	defer func() {
		if b.keep {
			fmt.Fprintln(os.Stderr, "work dir kept:", b.work)
		} else {
			cleanup()
		}
	}()
	// Nothing in the cluster is kept: no fsync, as its recorded figures.
	if b.pg, err = benchkit.StartPostgres(benchkit.PostgresSettings + " -c fsync=off"); err != nil {
		return "", err
	}
	defer b.pg.Stop()
	load, _ := os.ReadFile("/proc/loadavg")
	var out bytes.Buffer
	w := io.MultiWriter(os.Stdout, &out)
	fmt.Fprintf(w, "%d buildsets per run (independent: a bootstrap job `true`, then `sleep %s`), max_parallel %d per node, %d trigger clients\n",
		b.n, b.sleep, b.parallel, b.clients)
	fmt.Fprintf(w, "load average before: %s\n", strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(w, "%-6s %10s %8s %10s %7s %10s %8s %8s\n", "nodes", "buildsets", "wall s", "per minute", "ratio", "triggers s", "CPU s", "DB CPU s")
	var results []*result
	for _, c := range counts {
		r, err := b.measure(c)
		if err != nil {
			return "", fmt.Errorf("%d nodes: %w", c, err)
		}
		results = append(results, r)
		ratio := "1.00×"
		if len(results) > 1 {
			ratio = fmt.Sprintf("%.2f×", r.rate(b.n)/results[0].rate(b.n))
		}
		fmt.Fprintf(w, "%-6d %10d %8.1f %10.1f %7s %10.1f %8.1f %8.1f\n", c, b.n, r.wall.Seconds(), r.rate(b.n), ratio, r.triggers.Seconds(), r.serverCPU.Seconds(), r.dbCPU.Seconds())
		for _, nr := range r.perNode {
			slots := r.wall * time.Duration(b.parallel)
			fmt.Fprintf(w, "       %-8s ran %3d buildsets, build slots busy %3.0f%%, CPU %.1f s\n",
				nr.name, nr.buildsets, 100*nr.busy.Seconds()/slots.Seconds(), nr.cpu.Seconds())
		}
		if len(r.failed) > 0 {
			fmt.Fprintf(w, "       NOT SUCCESS: %v\n", r.failed)
		}
	}
	return out.String(), nil
}

func (r *result) rate(n int) float64 { return float64(n) / r.wall.Minutes() }

func (b *bench) measure(count int) (*result, error) {
	ctx := context.Background()
	dir := filepath.Join(b.work, fmt.Sprintf("nodes%d", count))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "sortie.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`source: {url: %q, branch: main}
limits: {max_parallel: %d}
jobs:
  boot: {bootstrap: true, run: "true"}
  sleep: {run: "sleep %g"}
pipelines:
  stream:
    manager: independent
    jobs: [boot, sleep]
`, b.repo, b.parallel, b.sleep.Seconds())), 0o644); err != nil {
		return nil, err
	}
	dbURL, err := b.pg.NewDatabase(fmt.Sprintf("nodes%d", count))
	if err != nil {
		return nil, err
	}
	var servers []*benchkit.Server
	defer func() {
		// SIGTERM to all, then wait for each: they stop side by side.
		var wg sync.WaitGroup
		for _, s := range servers {
			wg.Go(s.Stop)
		}
		wg.Wait()
	}()
	names := make([]string, count)
	for i := range count {
		names[i] = fmt.Sprintf("node-%d", i+1)
		log, err := os.Create(filepath.Join(dir, names[i]+".log"))
		if err != nil {
			return nil, err
		}
		defer log.Close()
		s, err := benchkit.StartWith(b.bin, cfg, filepath.Join(dir, names[i]), []string{"--node", names[i], "--database", dbURL},
			log, "SORTIE_TOKENS="+token)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", names[i], err)
		}
		servers = append(servers, s)
	}
	if err := waitCluster(ctx, servers[0].Base, count); err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	cpu0 := make([]time.Duration, count)
	for i, s := range servers {
		if cpu0[i], err = s.CPU(); err != nil {
			return nil, err
		}
	}

	db0, err := b.pg.CPU()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := b.trigger(servers); err != nil {
		return nil, err
	}
	r := &result{nodes: count, triggers: time.Since(start), failed: map[string]int{}}
	// Wait until every buildset is DONE, from the database: a listing
	// through the API would build every buildset's report each time.
	timeout := time.Now().Add(5*time.Minute + time.Duration(b.n)*(b.sleep+2*time.Second))
	for {
		var done int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM buildsets WHERE state = 'DONE'`).Scan(&done); err != nil {
			return nil, err
		}
		if done == b.n {
			break
		}
		if time.Now().After(timeout) {
			return nil, fmt.Errorf("only %d of %d buildsets DONE after %s (logs in %s with -keep)", done, b.n, time.Since(start).Round(time.Second), dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, s := range servers {
		cpu, err := s.CPU()
		if err != nil {
			return nil, err
		}
		r.perNode = append(r.perNode, nodeResult{name: names[i], cpu: cpu - cpu0[i]})
		r.serverCPU += cpu - cpu0[i]
	}
	db1, err := b.pg.CPU()
	if err != nil {
		return nil, err
	}
	r.dbCPU = db1 - db0
	var last time.Time
	if err := conn.QueryRow(ctx, `SELECT max(finished_at) FROM buildsets`).Scan(&last); err != nil {
		return nil, err
	}
	r.wall = last.Sub(start)
	rows, err := conn.Query(ctx, `SELECT result, count(*) FROM buildsets GROUP BY result`)
	if err != nil {
		return nil, err
	}
	var res string
	var k int
	if _, err := pgx.ForEachRow(rows, []any{&res, &k}, func() error {
		if res != "SUCCESS" {
			r.failed[res] = k
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// Who ran what: each attempt names its owner, each owner its node.
	rows, err = conn.Query(ctx, `SELECT o.node,
			count(DISTINCT a.buildset_id) FILTER (WHERE a.job = 'sleep'),
			COALESCE(sum(EXTRACT(epoch FROM a.finished_at - a.started_at)), 0)::float8
		FROM attempts a JOIN owners o ON o.id = a.owner GROUP BY o.node`)
	if err != nil {
		return nil, err
	}
	var node string
	var busy float64
	if _, err := pgx.ForEachRow(rows, []any{&node, &k, &busy}, func() error {
		i := slices.Index(names, node)
		if i < 0 {
			return fmt.Errorf("attempts by node %q, not one of %v", node, names)
		}
		r.perNode[i].buildsets = k
		r.perNode[i].busy = time.Duration(busy * float64(time.Second))
		return nil
	}); err != nil {
		return nil, err
	}
	return r, nil
}

// waitCluster waits until the node at base sees count live nodes and a
// leader.
func waitCluster(ctx context.Context, base string, count int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/nodes", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var nodes struct {
				Leader *struct{ Node string } `json:"leader"`
				Nodes  []struct{ State string }
			}
			err := json.NewDecoder(resp.Body).Decode(&nodes)
			resp.Body.Close()
			live := 0
			for _, n := range nodes.Nodes {
				if n.State == "live" {
					live++
				}
			}
			if err == nil && nodes.Leader != nil && live == count {
				return nil
			}
			last = fmt.Sprintf("%d live nodes, leader %v", live, nodes.Leader != nil)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the cluster did not form: %s", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// trigger sends the stream: trigger i goes to node i mod count, from
// b.clients clients at once.
func (b *bench) trigger(servers []*benchkit.Server) error {
	client := &http.Client{Timeout: time.Minute}
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range b.clients {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.n) {
					return
				}
				if err := benchkit.Post(client, servers[i%int64(len(servers))].Base+"/api/v1/pipelines/stream/trigger", token, "{}"); err != nil {
					mu.Lock()
					first = firstOf(first, fmt.Errorf("trigger %d: %w", i, err))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

func firstOf(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// The section of docs/benchmarks.md that -write fills holds these markers;
// what is between them is replaced, the prose around them kept.
const (
	beginMark = "<!-- bench/cluster: begin -->"
	endMark   = "<!-- bench/cluster: end -->"
)

func writeDoc(path, out string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("-write: run from the repository's root: %w", err)
	}
	s := string(doc)
	i, j := strings.Index(s, beginMark), strings.Index(s, endMark)
	if i < 0 || j < i {
		return errors.New("-write: " + path + " has no " + beginMark + " ... " + endMark)
	}
	args := slices.DeleteFunc(slices.Clone(os.Args[1:]), func(a string) bool { return a == "-write" || a == "--write" })
	cmd := strings.TrimSpace("go run ./bench/cluster " + strings.Join(args, " "))
	block := fmt.Sprintf("%s\n```sh\n%s\n```\n\n%s, %s:\n\n```\n%s```\n", beginMark, cmd, benchkit.Machine(), time.Now().UTC().Format("2006-01-02"), out)
	s = s[:i] + block + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
