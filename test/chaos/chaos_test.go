// Package chaos holds the cluster's acceptance test: three `sortie serve`
// nodes on one PostgreSQL database, a stream of buildsets, and nodes
// killed and stopped at random while they run.
package chaos

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/testport"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// The time constants of the nodes (hidden `sortie serve` flags), short so
// that a failover takes seconds, with margins for a loaded 2-core machine:
// a node stopped for longer than lease is taken for dead.
const (
	lease       = 4 * time.Second
	leaderTTL   = 3 * time.Second
	leaderRetry = 500 * time.Millisecond
	token       = "chaos-token"
)

// The shape of the run.
const (
	triggers     = 50                // buildsets of the stream, at least 40
	disruptions  = 12                // kills and stops, at least 10
	chaosFor     = 200 * time.Second // at least this long: three minute boundaries or more
	testDeadline = 8 * time.Minute   // the whole test, under go test's default 10 minutes
)

// jobScript is what every job runs (its %s: the test's directory). It
// records its start and end in the journal under flock, with its
// semaphore: bridge, the pipeline semaphore (max 1) that deploy, hourly
// and periodic share, held by a buildset from before its first job to
// after its last; pool, the job semaphore (max 1) of check's job solo,
// held by each attempt; or "-".
//
// Recorded intervals cannot show a job that was lost with its node and
// never recorded its end (a kill -9 leaves it running until a reaper ends
// it), so each job also holds, while it lives, a shared flock on a file
// naming its holder (hold/bridge.<buildset>, hold/pool.<buildset>.solo),
// and at its start, under the journal's lock, tries each other holder's
// file of its semaphore: one still locked is a process of another holder
// still alive, and that is written to overlaps. The locks die with the
// processes, whatever kills them.
const jobScript = `#!/bin/sh
d=%s
bs=$SORTIE_BUILDSET
job=$SORTIE_JOB
sem=-
case "$SORTIE_PIPELINE" in
deploy|hourly|periodic) sem=bridge key=$bs ;;
check) if [ "$job" = solo ]; then sem=pool key=$bs.$job; fi ;;
esac
if [ "$sem" != - ]; then
	exec 8>>"$d/hold/$sem.$key"
	flock -s 8
fi
exec 9>>"$d/journal.lock"
flock 9
if [ "$sem" != - ]; then
	for f in "$d/hold/$sem".*; do
		[ "$f" = "$d/hold/$sem.$key" ] && continue
		if ! flock -n -x "$f" true; then
			echo "$sem: $bs $job attempt $SORTIE_ATTEMPT started while ${f##*/} was held by a live process" >>"$d/overlaps"
		fi
	done
fi
echo "start $(date +%%s.%%N) $bs $job $sem $SORTIE_ATTEMPT $$ ${SORTIE_OWNER:--}" >>"$d/journal"
flock -u 9
echo "chaos job $job of $bs attempt $SORTIE_ATTEMPT"
sleep 0.8
flock 9
echo "end $(date +%%s.%%N) $bs $job $sem $SORTIE_ATTEMPT $$" >>"$d/journal"
flock -u 9
`

const configYAML = `source: {url: %q, branch: main}
limits: {max_parallel: 4}
semaphores: {bridge: 1, pool: 1}
jobs:
  boot: {bootstrap: true, run: 'sh %[2]s', attempts: 20}
  a: {run: 'sh %[2]s', attempts: 20}
  b: {run: 'sh %[2]s', attempts: 20, dependencies: [a]}
  solo: {run: 'sh %[2]s', attempts: 20, semaphores: [pool]}
pipelines:
  deploy:   {manager: serial, precedence: high, semaphore: bridge, jobs: [boot, a, b]}
  hourly:   {manager: independent, precedence: low, semaphore: bridge, jobs: [boot, a, b]}
  periodic: {manager: serial, precedence: low, semaphore: bridge, jobs: [boot, a, b]}
  check:    {manager: independent, jobs: [boot, solo]}
  tick:     {manager: independent, trigger: {cron: "* * * * *"}, jobs: [boot, a]}
`

// streamPipelines are the pipelines the stream triggers, in turn: check
// twice in a row, the second at once, so that their solo jobs contend for
// pool.
var streamPipelines = []string{"deploy", "hourly", "periodic", "check", "check"}

// TestChaos is the acceptance test of a cluster: PostgreSQL, three `sortie
// serve` nodes (the real binary, one state dir each, on loopback), a
// stream of buildsets over three pipelines sharing a max-1 pipeline
// semaphore and an independent one whose job holds a max-1 job semaphore,
// each trigger sent to a node drawn at random, and a pipeline on a cron of
// every minute. Meanwhile, at random moments, a node is killed (kill -9;
// every third disruption kills the leader) and restarted on its state
// dir, stopped (SIGSTOP) for longer than its lease and continued, or (every
// third disruption) shut down cleanly (SIGTERM: it lets its running builds
// finish, then hands its unfinished buildsets over, which its log says)
// and restarted. Then,
// from every node's API: every buildset is DONE SUCCESS; no two holders of
// a max-1 semaphore overlapped (the jobs' journal and hold locks,
// jobScript); no holder is left; every build's log is readable, with the
// job's output; and the cron pipeline fired exactly once for each minute
// boundary from the first leader's election (plus 5 s, for its cron timer
// to start) to the end of the disruptions, and at most once for any later
// one. It prints one line of counts, also to $SORTIE_TEST_REPORT (CI
// shows that file).
//
// The disruptions and the triggers are drawn from a seed, printed; set
// SORTIE_CHAOS_SEED to replay one (the same schedule: the machine's timing
// still varies).
func TestChaos(t *testing.T) {
	for _, tool := range []string{"flock", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v", tool, err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SORTIE_CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SORTIE_CHAOS_SEED=%q: %v", v, err)
		}
	}
	say(t, fmt.Sprintf("chaos test: seed %d (replay with SORTIE_CHAOS_SEED=%[1]d)", seed))
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()

	db := pgtest.NewDatabase(t)
	dir := t.TempDir()
	bin := buildSortie(t, dir)
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	if err := os.Mkdir(filepath.Join(dir, "hold"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "job.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(jobScript, dir)), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "sortie.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(configYAML, repo, script)), 0o644); err != nil {
		t.Fatal(err)
	}

	c := &cluster{t: t, ctx: ctx, bin: bin, dir: dir,
		env: []string{"SORTIE_TOKENS=" + token, "SORTIE_DATABASE=" + db},
		args: []string{"--config", cfg, "--lease", lease.String(), "--leader-ttl", leaderTTL.String(),
			// A clean stop's grace: far above a job's 0.8 s, so that
			// its running builds finish rather than end CANCELED.
			"--leader-retry", leaderRetry.String(), "--grace", "20s"},
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}},
	}
	t.Cleanup(c.killAll)
	for i := range 3 {
		n := &node{name: fmt.Sprintf("n%d", i+1), addr: testport.Addr(t), state: filepath.Join(dir, fmt.Sprintf("state%d", i+1)),
			log: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1))}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		c.start(n)
	}
	first := c.leader()
	// The leader's cron timer starts from the moment it was elected;
	// ticks before that were never due.
	cronFrom := time.Now().Add(5 * time.Second)
	t.Logf("%s leads; cron ticks counted from %s", first.name, cronFrom.Format(time.TimeOnly))

	// The stream: a trigger to a node drawn at random; one refused, or
	// lost with a node killed or stopped, goes to another. A trigger
	// whose answer was lost may still have made a buildset: all the
	// buildsets in the store are checked, not only those answered.
	var (
		streamMu  sync.Mutex
		triggered []string
	)
	streamDone := make(chan struct{})
	streamCtx, stopStream := context.WithCancel(ctx)
	defer func() {
		stopStream()
		<-streamDone
	}()
	go func() {
		defer close(streamDone)
		rng := rand.New(rand.NewPCG(seed, 1))
		gap := chaosFor / (triggers * 4 / 5) // no gap between the two checks
		for i := 0; i < triggers; {
			n := c.nodes[rng.IntN(len(c.nodes))]
			id, err := c.trigger(streamCtx, n, streamPipelines[i%len(streamPipelines)])
			if streamCtx.Err() != nil {
				return
			}
			if err != nil {
				c.triggerErr(err)
				time.Sleep(200 * time.Millisecond)
				continue
			}
			streamMu.Lock()
			triggered = append(triggered, id)
			streamMu.Unlock()
			i++
			wait := gap/2 + time.Duration(rng.Int64N(int64(gap)))
			if streamPipelines[(i-1)%len(streamPipelines)] == "check" && streamPipelines[i%len(streamPipelines)] == "check" {
				wait = time.Duration(rng.IntN(300)) * time.Millisecond
			}
			select {
			case <-time.After(wait):
			case <-streamCtx.Done():
				return
			}
		}
	}()

	// The disruptions, one at a time, until there were enough of them,
	// for long enough, and the stream is over.
	rng := rand.New(rand.NewPCG(seed, 7))
	chaosEnd := time.Now().Add(chaosFor)
	var kills, leaderKills, stops, terms int
	var log []string
	for i := 0; ; i++ {
		streamOver := false
		select {
		case <-streamDone:
			streamOver = true
		default:
		}
		if i >= disruptions && time.Now().After(chaosEnd) && streamOver {
			break
		}
		c.pause(time.Duration(3000+rng.IntN(9000)) * time.Millisecond)
		// Every third disruption kills the leader, every third stops a
		// node cleanly, the others kill or SIGSTOP one.
		victim, action := c.nodes[rng.IntN(len(c.nodes))], rng.IntN(2)
		switch i % 3 {
		case 0:
			victim, action = c.leader(), 0
		case 1:
			action = 2
		}
		wasLeader := c.leads(victim)
		switch action {
		case 0:
			c.kill(victim)
			kills++
			if wasLeader {
				leaderKills++
			}
			down := time.Duration(500+rng.IntN(3500)) * time.Millisecond
			log = append(log, fmt.Sprintf("kill -9 %s%s, down %s", victim.name, leaderMark(wasLeader), down))
			c.pause(down)
			c.start(victim)
		case 1:
			stopped := lease + time.Duration(1000+rng.IntN(3000))*time.Millisecond
			c.signal(victim, syscall.SIGSTOP)
			stops++
			log = append(log, fmt.Sprintf("SIGSTOP %s%s for %s", victim.name, leaderMark(wasLeader), stopped))
			c.pause(stopped)
			c.signal(victim, syscall.SIGCONT)
		case 2:
			began := time.Now()
			c.term(victim)
			terms++
			down := time.Duration(500+rng.IntN(3500)) * time.Millisecond
			log = append(log, fmt.Sprintf("SIGTERM %s%s, stopped in %s, down %s", victim.name, leaderMark(wasLeader),
				time.Since(began).Round(time.Millisecond), down))
			c.pause(down)
			c.start(victim)
		}
		t.Logf("disruption %d at %s: %s", kills+stops+terms, time.Now().Format(time.TimeOnly), log[len(log)-1])
		c.checkAlive()
	}
	chaosOver := time.Now()
	streamMu.Lock()
	ids := slices.Clone(triggered)
	streamMu.Unlock()

	// Everything settles: every buildset is DONE on every node (a cron
	// tick may still come: it is waited for too), including the cron
	// tick of the last minute boundary of the chaos.
	lastTick := chaosOver.Truncate(time.Minute)
	var lists [][]apiBuildset
	c.waitFor("every buildset DONE on every node", 3*time.Minute, func() (bool, string) {
		lists = lists[:0]
		for _, n := range c.nodes {
			list, err := c.buildsets(n)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", n.name, err)
			}
			lists = append(lists, list)
		}
		for i, list := range lists {
			by := map[string]apiBuildset{}
			var pending []string
			tickSeen := false
			for _, bs := range list {
				by[bs.ID] = bs
				if bs.State != "DONE" {
					pending = append(pending, bs.ID+" "+bs.Pipeline+" "+bs.State)
				}
				if bs.Pipeline == "tick" && !tickMinute(bs).Before(lastTick) {
					tickSeen = true
				}
			}
			for _, id := range ids {
				if _, ok := by[id]; !ok {
					pending = append(pending, id+" absent")
				}
			}
			if !tickSeen && lastTick.After(cronFrom) {
				pending = append(pending, "the cron tick of "+lastTick.Format(time.TimeOnly))
			}
			if len(pending) > 0 {
				return false, fmt.Sprintf("%s: %d pending: %s", c.nodes[i].name, len(pending), strings.Join(pending, ", "))
			}
		}
		return true, ""
	})

	// Every buildset DONE SUCCESS, the same on every node.
	notSuccess := 0
	for i, list := range lists {
		for _, bs := range list {
			if bs.Result != "SUCCESS" {
				notSuccess++
				t.Errorf("%s: buildset %s (%s) ended %s: %+v", c.nodes[i].name, bs.ID, bs.Pipeline, bs.Result, bs.Builds)
			}
		}
		if len(list) != len(lists[0]) {
			t.Errorf("%s lists %d buildsets, %s %d", c.nodes[i].name, len(list), c.nodes[0].name, len(lists[0]))
		}
	}
	all := lists[0]
	perPipeline := map[string]int{}
	retried := 0
	for _, bs := range all {
		perPipeline[bs.Pipeline]++
		for _, b := range bs.Builds {
			if b.Attempt > 1 {
				retried++
			}
		}
	}

	// No holder (or waiter) left, seen from every node.
	leftover := 0
	c.waitFor("no semaphore holder left", time.Minute, func() (bool, string) {
		leftover = 0
		var held []string
		for _, n := range c.nodes {
			var sems struct {
				Semaphores []struct {
					Name    string
					Holders []json.RawMessage
					Waiters []json.RawMessage
				}
			}
			if err := c.get(n, "/api/v1/semaphores", &sems); err != nil {
				return false, err.Error()
			}
			for _, s := range sems.Semaphores {
				leftover += len(s.Holders) + len(s.Waiters)
				if len(s.Holders)+len(s.Waiters) > 0 {
					held = append(held, fmt.Sprintf("%s: %s holders %s waiters %s", n.name, s.Name, s.Holders, s.Waiters))
				}
			}
		}
		return leftover == 0, strings.Join(held, "; ")
	})

	// Every build's log, from every node, holds the job's output.
	logsRead := 0
	for _, bs := range all {
		for _, b := range bs.Builds {
			if b.Attempt < 1 {
				t.Errorf("buildset %s: build %s never ran", bs.ID, b.Job)
				continue
			}
			want := fmt.Sprintf("chaos job %s of %s attempt %d", b.Job, bs.ID, b.Attempt)
			for _, n := range c.nodes {
				text, err := c.read(n, b.Log)
				switch {
				case err != nil:
					t.Errorf("%s: log of %s %s: %v", n.name, bs.ID, b.Job, err)
				case !strings.Contains(text, want):
					t.Errorf("%s: log of %s %s attempt %d lacks %q:\n%s", n.name, bs.ID, b.Job, b.Attempt, want, text)
				default:
					logsRead++
				}
			}
		}
	}

	// No two holders of a max-1 semaphore overlapped.
	overlaps, _ := os.ReadFile(filepath.Join(dir, "overlaps"))
	if len(overlaps) > 0 {
		t.Errorf("a holder of a max-1 semaphore started while another's process was alive:\n%s", overlaps)
	}
	intervals, crossings := overlapping(t, filepath.Join(dir, "journal"))
	for _, x := range crossings {
		t.Errorf("max-1 semaphore held twice at once: %s", x)
	}

	// The cron pipeline fired once a minute.
	perMinute := map[int64]int{} // by Unix time: a time.Time's location would count in a key
	for _, bs := range all {
		if bs.Pipeline == "tick" {
			perMinute[tickMinute(bs).Unix()]++
			t.Logf("cron buildset %s for %s: made at %s, %q", bs.ID, tickMinute(bs).Format(time.TimeOnly), bs.CreatedAt.Format(time.TimeOnly), bs.Cause)
		}
	}
	var minutes []string
	cronBad := 0
	for m := cronFrom.Truncate(time.Minute).Add(time.Minute); !m.After(lastTick); m = m.Add(time.Minute) {
		n := perMinute[m.Unix()]
		minutes = append(minutes, fmt.Sprintf("%s=%d", m.Format("15:04"), n))
		if n != 1 {
			cronBad++
			t.Errorf("the cron pipeline fired %d times for %s, want once", n, m.Format(time.TimeOnly))
		}
	}
	for m, n := range perMinute {
		if n > 1 && m > lastTick.Unix() {
			cronBad++
			t.Errorf("the cron pipeline fired %d times for %s, after the chaos", n, time.Unix(m, 0).Format(time.TimeOnly))
		}
	}
	if len(minutes) < 3 {
		t.Errorf("the chaos spanned %d whole minutes, want at least 3", len(minutes))
	}
	if kills+stops+terms < 10 || leaderKills < 3 {
		t.Errorf("%d disruptions, %d kills of the leader: want at least 10 and 3", kills+stops+terms, leaderKills)
	}
	if len(ids) < 40 {
		t.Errorf("%d buildsets triggered, want at least 40", len(ids))
	}

	t.Logf("disruptions: %s", strings.Join(log, "; "))
	ran, renewed := c.startsPerNode(filepath.Join(dir, "journal"))
	say(t, fmt.Sprintf("chaos test (seed %d): 3 nodes, %d disruptions in %s (%d kill -9, %d of the leader; %d SIGSTOP > lease %s; %d SIGTERM); "+
		"leases lost and gone on as a new owner: %d; %d buildsets triggered (%d triggers refused or lost and sent again), %d in the store %v, not DONE SUCCESS on some node: %d; builds retried: %d; "+
		"max-1 semaphore overlaps: %d (%d holder intervals checked); holders left: %d; logs read: %d (%d builds x 3 nodes); "+
		"cron once a minute: %d minutes checked, %d wrong [%s]; job starts per node: %s",
		seed, kills+stops+terms, chaosOver.Sub(chaosEnd.Add(-chaosFor)).Round(time.Second), kills, leaderKills, stops, lease, terms,
		renewed, len(ids), c.errs, len(all), perPipeline, notSuccess, retried,
		len(crossings)+strings.Count(string(overlaps), "\n"), intervals, leftover, logsRead, logsRead/3,
		len(minutes), cronBad, strings.Join(minutes, " "), ran))
}

func leaderMark(leads bool) string {
	if leads {
		return " (the leader)"
	}
	return ""
}

// say logs a line and prints it to stderr, so that it shows without -v,
// and appends it to $SORTIE_TEST_REPORT, which CI prints (go test shows
// a passing package's output only with -v).
func say(t *testing.T, line string) {
	t.Helper()
	t.Log(line)
	fmt.Fprintln(os.Stderr, line)
	if path := os.Getenv("SORTIE_TEST_REPORT"); path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}

// buildSortie builds the binary under test into dir.
func buildSortie(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "sortie")
	out, err := exec.Command("go", "build", "-o", bin, "../../cmd/sortie").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// node is one `sortie serve`: its name, address, state dir and log are
// kept across restarts.
type node struct {
	name, addr, state, log string

	cmd     *exec.Cmd
	done    chan struct{} // closed once cmd has exited
	killed  bool          // by the test: an exit is expected
	stopped bool          // SIGSTOPped
}

// cluster is the nodes and how they run. Its methods are called from the
// test's goroutine only (the stream only reads the nodes' addresses); a
// failure fails the test with the cluster's state.
type cluster struct {
	t         *testing.T
	ctx       context.Context
	bin, dir  string
	env, args []string
	http      *http.Client
	nodes     []*node

	// errMu guards lastErr, the stream's last trigger refused or lost,
	// and errs, how many there were: for the diagnostics.
	errMu   sync.Mutex
	lastErr error
	errs    int
}

func (c *cluster) triggerErr(err error) {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	c.lastErr = err
	c.errs++
}

// start starts n and waits until it is ready.
func (c *cluster) start(n *node) {
	c.t.Helper()
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	fmt.Fprintf(f, "=== chaos test: start %s at %s\n", n.name, time.Now().Format(time.StampMilli))
	cmd := exec.Command(c.bin, append([]string{"serve", "--listen", n.addr, "--node", n.name, "--state-dir", n.state}, c.args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		c.t.Fatal(err)
	}
	n.cmd, n.done, n.killed, n.stopped = cmd, make(chan struct{}), false, false
	done := n.done
	go func() {
		cmd.Wait()
		f.Close()
		close(done)
	}()
	c.waitFor(n.name+" ready", time.Minute, func() (bool, string) {
		select {
		case <-done:
			c.fatalf("%s exited before it was ready", n.name)
		default:
		}
		resp, err := c.http.Get("http://" + n.addr + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}

// kill kills n with SIGKILL and waits for it to exit.
func (c *cluster) kill(n *node) {
	n.killed = true
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// term stops n cleanly (SIGTERM), waits for it to exit, and checks that
// it handed its buildsets over.
func (c *cluster) term(n *node) {
	n.killed = true
	c.signal(n, syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(time.Minute):
		c.fatalf("%s did not exit within a minute of SIGTERM", n.name)
	}
	out, err := os.ReadFile(n.log)
	if err != nil {
		c.fatalf("%s's log: %v", n.name, err)
	}
	last := out[bytes.LastIndex(out, []byte("=== chaos test: start ")):]
	if !bytes.Contains(last, []byte("handed this server's buildsets over")) {
		c.fatalf("%s stopped cleanly without handing its buildsets over", n.name)
	}
}

func (c *cluster) signal(n *node, sig syscall.Signal) {
	n.stopped = sig == syscall.SIGSTOP
	if err := n.cmd.Process.Signal(sig); err != nil {
		c.fatalf("%s: %v: %v", n.name, sig, err)
	}
}

// checkAlive fails the test if a node exited without being killed.
func (c *cluster) checkAlive() {
	for _, n := range c.nodes {
		select {
		case <-n.done:
			if !n.killed {
				c.fatalf("%s exited by itself", n.name)
			}
		default:
		}
	}
}

// killAll kills every node, running or stopped, and what is left of the
// jobs they started (a node killed leaves its jobs to a reaper).
func (c *cluster) killAll() {
	for _, n := range c.nodes {
		if n.cmd != nil {
			n.cmd.Process.Signal(syscall.SIGKILL)
			<-n.done
		}
	}
	killJobs(c.dir)
	c.http.CloseIdleConnections()
}

// killJobs kills the processes whose command line names dir (the jobs'
// shells, sh dir/job.sh), and their process groups when they lead one.
func killJobs(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte(dir)) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if pid == os.Getpid() || pid <= 1 {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// pause waits d, or fails the test at its deadline.
func (c *cluster) pause(d time.Duration) {
	select {
	case <-time.After(d):
	case <-c.ctx.Done():
		c.fatalf("deadline of %s reached", testDeadline)
	}
}

// waitFor polls cond every 100 ms until it holds; after within (or at the
// test's deadline) it fails the test with cond's last word.
func (c *cluster) waitFor(what string, within time.Duration, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) || c.ctx.Err() != nil {
			c.fatalf("not %s within %s: %s", what, within, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fatalf fails the test with the state of the cluster: what each node
// logged last, and the buildsets not done.
func (c *cluster) fatalf(format string, args ...any) {
	c.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, format, args...)
	for _, n := range c.nodes {
		out, _ := os.ReadFile(n.log)
		fmt.Fprintf(&b, "\n--- the end of %s's log (killed: %v, stopped: %v):\n%s", n.name, n.killed, n.stopped, tail(string(out), 40))
	}
	c.errMu.Lock()
	fmt.Fprintf(&b, "\n--- triggers refused or lost (sent again): %d, the last: %v", c.errs, c.lastErr)
	c.errMu.Unlock()
	for _, n := range c.nodes {
		if n.stopped {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		list, err := c.buildsetsCtx(ctx, n)
		cancel()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "\n--- buildsets not done, from %s:", n.name)
		for _, bs := range list {
			if bs.State != "DONE" {
				fmt.Fprintf(&b, "\n%s %s %s %+v", bs.ID, bs.Pipeline, bs.State, bs.Builds)
			}
		}
		break
	}
	c.t.Fatal(b.String())
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// leader returns the node that says it leads (sortie_cluster_leader 1 in
// its /metrics), waiting for one.
func (c *cluster) leader() *node {
	c.t.Helper()
	var found *node
	c.waitFor("a leader", time.Minute, func() (bool, string) {
		for _, n := range c.nodes {
			if c.leads(n) {
				found = n
				return true, ""
			}
		}
		return false, "no node says sortie_cluster_leader 1"
	})
	return found
}

// leads tells whether n says it leads; false for a node down or stopped.
func (c *cluster) leads(n *node) bool {
	if n.stopped {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
	}
	resp, err := c.http.Get("http://" + n.addr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if sc.Text() == "sortie_cluster_leader 1" {
			return true
		}
	}
	return false
}

// trigger triggers pipeline through n's API and returns the buildset's id.
func (c *cluster) trigger(ctx context.Context, n *node, pipeline string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+n.addr+"/api/v1/pipelines/"+pipeline+"/trigger", strings.NewReader(`{"by": "chaos"}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct{ Buildset, Error string }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusAccepted || out.Buildset == "" || out.Error != "" {
		return "", fmt.Errorf("trigger %s on %s: %s %s", pipeline, n.name, resp.Status, out.Error)
	}
	return out.Buildset, nil
}

type apiBuildset struct {
	ID        string
	Pipeline  string
	State     string
	Result    string
	Cause     string
	CreatedAt time.Time `json:"created_at"`
	Builds    []struct {
		Job     string
		Result  string
		Attempt int
		Log     string
	}
}

func (c *cluster) buildsets(n *node) ([]apiBuildset, error) {
	return c.buildsetsCtx(c.ctx, n)
}

func (c *cluster) buildsetsCtx(ctx context.Context, n *node) ([]apiBuildset, error) {
	var out struct{ Buildsets []apiBuildset }
	if err := c.getCtx(ctx, n, "/api/v1/buildsets?limit=500", &out); err != nil {
		return nil, err
	}
	return out.Buildsets, nil
}

func (c *cluster) get(n *node, path string, v any) error { return c.getCtx(c.ctx, n, path, v) }

func (c *cluster) getCtx(ctx context.Context, n *node, path string, v any) error {
	body, err := c.readCtx(ctx, n, path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		return fmt.Errorf("%s %s: %w", n.name, path, err)
	}
	return nil
}

// read GETs path from n's API, with the token; an answer other than 200
// is an error.
func (c *cluster) read(n *node, path string) (string, error) { return c.readCtx(c.ctx, n, path) }

func (c *cluster) readCtx(ctx context.Context, n *node, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+n.addr+path, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s from %s: %s %s", path, n.name, resp.Status, b)
	}
	return string(b), nil
}

// tickMinute is the minute boundary a cron buildset fired for: the tick
// its cause names when it fired late (missed while no node led), else the
// minute it was made in.
func tickMinute(bs apiBuildset) time.Time {
	if _, after, ok := strings.Cut(bs.Cause, "tick of "); ok {
		if at, err := time.Parse(time.RFC3339, strings.Fields(after)[0]); err == nil {
			return at.Truncate(time.Minute)
		}
	}
	return bs.CreatedAt.Truncate(time.Minute)
}

// overlapping reads the journal and returns how many holder intervals it
// checked and where two holders of a max-1 semaphore overlapped. A
// holder of bridge is a buildset, from its first job's start to its last
// job's end; a holder of pool is an attempt of solo, from its start to
// its end. An attempt lost with its node has no end; hold locks catch
// those (jobScript).
func overlapping(t *testing.T, path string) (int, []string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("the jobs' journal: %v", err)
		return 0, nil
	}
	type span struct {
		key        string
		start, end float64
		ended      bool
	}
	spans := map[string]map[string]*span{"bridge": {}, "pool": {}}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line) // start|end TIME BUILDSET JOB SEM ATTEMPT PID [OWNER]
		if len(f) < 7 {
			t.Errorf("journal line %q", line)
			continue
		}
		at, _ := strconv.ParseFloat(f[1], 64)
		var key string
		switch f[4] {
		case "bridge":
			key = f[2]
		case "pool":
			key = f[2] + " " + f[3] + " attempt " + f[5]
		default:
			continue
		}
		s := spans[f[4]][key]
		if s == nil {
			s = &span{key: key, start: at, end: at}
			spans[f[4]][key] = s
		}
		s.start, s.end = min(s.start, at), max(s.end, at)
		if f[0] == "end" {
			s.ended = true
		}
	}
	n := 0
	var out []string
	for _, sem := range []string{"bridge", "pool"} {
		var list []*span
		for _, s := range spans[sem] {
			if s.ended {
				list = append(list, s)
			}
		}
		n += len(list)
		sort.Slice(list, func(i, j int) bool { return list[i].start < list[j].start })
		for i := 1; i < len(list); i++ {
			for j := i - 1; j >= 0; j-- {
				if list[j].end > list[i].start {
					out = append(out, fmt.Sprintf("%s: %s [%.3f, %.3f] and %s [%.3f, %.3f]", sem,
						list[j].key, list[j].start, list[j].end, list[i].key, list[i].start, list[i].end))
				}
			}
		}
	}
	return n, out
}

// TestOverlapping: the journal check finds two buildsets holding bridge at
// once, and two attempts holding pool at once, and nothing in a journal
// whose holders follow each other; an attempt that never ended is left to
// the hold locks.
func TestOverlapping(t *testing.T) {
	for _, c := range []struct {
		journal string
		spans   int
		want    []string
	}{
		{`start 1.0 B1 boot bridge 1 1
end 1.5 B1 boot bridge 1 1
start 1.6 B1 a bridge 1 2
end 2.0 B1 a bridge 1 2
start 2.1 B2 boot bridge 1 3
start 2.2 C1 solo pool 1 4
start 2.3 C2 solo pool 1 5
end 2.4 B2 boot bridge 1 3
end 2.5 C2 solo pool 1 5
start 2.6 C2 solo pool 2 6
end 2.7 C2 solo pool 2 6
start 2.7 C3 boot - 1 7
`, 4, nil},
		{`start 1.0 B1 boot bridge 1 1
start 1.2 B2 boot bridge 1 2
end 1.3 B2 boot bridge 1 2
end 1.5 B1 a bridge 1 3
start 2.0 C1 solo pool 1 4
start 2.1 C2 solo pool 1 5
end 2.2 C1 solo pool 1 4
end 2.3 C2 solo pool 1 5
`, 4, []string{
			"bridge: B1 [1.000, 1.500] and B2 [1.200, 1.300]",
			"pool: C1 solo attempt 1 [2.000, 2.200] and C2 solo attempt 1 [2.100, 2.300]",
		}},
	} {
		path := filepath.Join(t.TempDir(), "journal")
		if err := os.WriteFile(path, []byte(c.journal), 0o644); err != nil {
			t.Fatal(err)
		}
		spans, got := overlapping(t, path)
		if spans != c.spans || !slices.Equal(got, c.want) {
			t.Errorf("overlapping(%q) = %d, %q; want %d, %q", c.journal, spans, got, c.spans, c.want)
		}
	}
}

// startsPerNode counts the jobs' starts in the journal by the node that
// ran them, known by its owner id (a job's $SORTIE_OWNER), which each
// node's log names when it starts listening and when it goes on as a new
// owner: "n1=12 n2=30 n3=28". It also counts the latter, the nodes that
// lost their lease (a stop longer than it) and went on.
func (c *cluster) startsPerNode(journal string) (string, int) {
	nodeOf := map[string]string{}
	renewed := 0
	for _, n := range c.nodes {
		b, _ := os.ReadFile(n.log)
		for _, line := range strings.Split(string(b), "\n") {
			again := strings.Contains(line, "msg=\"registered as a new owner\"")
			if !again && !strings.Contains(line, "msg=listening") {
				continue
			}
			if again {
				renewed++
			}
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "owner="); ok {
					nodeOf[id] = n.name
				}
			}
		}
	}
	count := map[string]int{}
	b, _ := os.ReadFile(journal)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 8 && f[0] == "start" {
			count[cmp.Or(nodeOf[f[7]], "unknown")]++
		}
	}
	var out []string
	for _, name := range slices.Sorted(maps.Keys(count)) {
		out = append(out, fmt.Sprintf("%s=%d", name, count[name]))
	}
	return strings.Join(out, " "), renewed
}
