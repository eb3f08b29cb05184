package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// These tests drive the real sortie binary on real git repositories and
// real processes, as a user would.

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// sortieBin builds the binary once per test run.
func sortieBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sortie-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "sortie")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

type result struct {
	code           int
	stdout, stderr string
}

func runSortie(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(sortieBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func readReport(t *testing.T, path string) *buildset.Report {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r buildset.Report
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("report: %v\n%s", err, data)
	}
	return &r
}

// waitFor is a job's shell loop that waits for the file gate (which may
// name shell variables) to exist. It also ends once dir, the test's
// directory that holds the gate, is gone: a job can outlive the server a
// test killed, and its test's cleanup may remove the dir before the loop
// sees the gate, which would leave the loop polling forever.
func waitFor(gate, dir string) string {
	return fmt.Sprintf(`while [ ! -e %s ] && [ -d %s ]; do sleep 0.02; done`, gate, dir)
}

func writeConfig(t *testing.T, dir, yaml string) string {
	t.Helper()
	p := filepath.Join(dir, "sortie.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// gone reports whether a process no longer runs: no such pid, or a zombie
// waiting for a parent that will never reap it (this sandbox's init).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

// pidsIn reads one pid per line from the files matching pattern.
func pidsIn(t *testing.T, pattern string) []int {
	t.Helper()
	files, _ := filepath.Glob(pattern)
	var pids []int
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, line := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(line); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// assertGone fails unless every pid is gone within a few seconds (reaping
// a killed tree takes a moment).
func assertGone(t *testing.T, pids []int) {
	t.Helper()
	if len(pids) == 0 {
		t.Fatal("no pids were recorded: the jobs did not run as the test expects")
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for !gone(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d is still running", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestRunWavesInParallel(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	// 20 jobs: 1 bootstrap, then 3 layers of 6 wide, then one at the end.
	// Each job of a layer waits until all six have started (a marker
	// each), for at most 30 s: run one at a time, they fail; run
	// together, they overlap whatever the machine's load.
	var b strings.Builder
	fmt.Fprintf(&b, "source: {url: %s}\nlimits: {max_parallel: 6}\njobs:\n  boot: {bootstrap: true, install: [\"true\"]}\n", repo)
	var names []string
	for layer := range 3 {
		marks := filepath.Join(dir, fmt.Sprintf("layer-%d", layer))
		if err := os.Mkdir(marks, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			name := fmt.Sprintf("l%d-%d", layer, i)
			names = append(names, name)
			fmt.Fprintf(&b, "  %s:\n    run: |\n      touch %s/%d\n      n=0; until [ \"$(ls %[2]s | wc -l)\" -ge 6 ]; do n=$((n+1)); [ $n -lt 3000 ] || { echo 'the layer never ran together' >&2; exit 1; }; sleep 0.01; done\n", name, marks, i)
			if layer > 0 {
				fmt.Fprintf(&b, "    dependencies: [l%d-%d, l%d-%d]\n", layer-1, i, layer-1, (i+1)%6)
			}
		}
	}
	b.WriteString("  last: {run: \"true\", dependencies: [l2-0, l2-3]}\n")
	names = append(names, "last")
	fmt.Fprintf(&b, "pipelines:\n  deploy: {jobs: [%s]}\n", strings.Join(names, ", "))
	cfg := writeConfig(t, dir, b.String())
	rep := filepath.Join(dir, "report.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	report := readReport(t, rep)
	if len(report.Builds) != 20 || report.Result != "SUCCESS" || len(report.Commit) != 40 {
		t.Fatalf("report: %d builds, %s, commit %q", len(report.Builds), report.Result, report.Commit)
	}
	times := map[string][2]time.Time{}
	for _, bld := range report.Builds {
		times[bld.Job] = [2]time.Time{*bld.StartedAt.Get(), *bld.FinishedAt.Get()}
	}
	// Every job starts after its dependencies finished...
	for layer := 1; layer < 3; layer++ {
		for i := range 6 {
			me := times[fmt.Sprintf("l%d-%d", layer, i)]
			for _, d := range []string{fmt.Sprintf("l%d-%d", layer-1, i), fmt.Sprintf("l%d-%d", layer-1, (i+1)%6)} {
				if me[0].Before(times[d][1]) {
					t.Errorf("l%d-%d started before its dependency %s ended", layer, i, d)
				}
			}
		}
	}
	// ...and the jobs of a layer overlap: real parallelism.
	for layer := range 3 {
		var latestStart, earliestEnd time.Time
		for i := range 6 {
			tm := times[fmt.Sprintf("l%d-%d", layer, i)]
			if tm[0].After(latestStart) {
				latestStart = tm[0]
			}
			if earliestEnd.IsZero() || tm[1].Before(earliestEnd) {
				earliestEnd = tm[1]
			}
		}
		if !latestStart.Before(earliestEnd) {
			t.Errorf("layer %d: no moment when all 6 jobs ran together (last start %v, first end %v)", layer, latestStart, earliestEnd)
		}
	}
	if !strings.Contains(r.stdout, "critical path as run: boot -> l0-") {
		t.Errorf("no critical path in the summary:\n%s", r.stdout)
	}
}

func TestTimeoutLeavesNoProcess(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  slow:
    timeout: 5s
    run: |
      sleep 300 & echo $! >> %[2]s/pids
      (sleep 300 & echo $! >> %[2]s/pids; wait) &
      echo $$ >> %[2]s/pids
      wait
  after: {run: "true", dependencies: [slow]}
pipelines:
  deploy: {jobs: [slow, after]}
`, repo, dir))
	rep := filepath.Join(dir, "report.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	report := readReport(t, rep)
	got := map[string]string{}
	for _, b := range report.Builds {
		got[b.Job] = b.Result + " " + b.Reason
	}
	if got["slow"] != "TIMED_OUT timed out" || got["after"] != "SKIPPED dependency slow timed out" {
		t.Fatalf("builds: %v", got)
	}
	pids := pidsIn(t, filepath.Join(dir, "pids"))
	if len(pids) != 3 {
		t.Fatalf("recorded pids %v, want 3", pids)
	}
	assertGone(t, pids)
}

func TestInterruptCancelsAndLeavesNoProcess(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  a: {run: 'sleep 300 & echo $! >> %[2]s/pids; echo $$ >> %[2]s/pids; touch %[2]s/a-running; wait'}
  b: {run: 'sleep 300 & echo $! >> %[2]s/pids; echo $$ >> %[2]s/pids; wait'}
  c: {run: "true", dependencies: [a]}
pipelines:
  deploy: {jobs: [a, b, c]}
`, repo, dir))
	rep := filepath.Join(dir, "report.json")
	cmd := exec.Command(sortieBin(t), "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "a-running")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("job a never started:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: %v, want status 1\n%s", err, out.String())
	}
	report := readReport(t, rep)
	if report.Result != "CANCELED" {
		t.Fatalf("result %s", report.Result)
	}
	for _, b := range report.Builds {
		// The whole buildset is cancelled: c, which had not started,
		// is CANCELED too, not skipped because a was cancelled.
		want := map[string]string{"boot": "SUCCESS", "a": "CANCELED", "b": "CANCELED", "c": "CANCELED"}[b.Job]
		if b.Result != want {
			t.Errorf("%s: %s (%s), want %s", b.Job, b.Result, b.Reason, want)
		}
		if b.Job == "c" && b.Reason != "buildset cancelled" {
			t.Errorf("c's reason %q, want \"buildset cancelled\"", b.Reason)
		}
		// SPEC §2.4: a build that never started has null times.
		if b.Job == "c" && (b.StartedAt.Get() != nil || b.FinishedAt.Get() != nil) {
			t.Errorf("c never started, yet has times %v %v", b.StartedAt.Get(), b.FinishedAt.Get())
		}
	}
	assertGone(t, pidsIn(t, filepath.Join(dir, "pids")))
}

func TestSharedSemaphoreAcrossProcesses(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	lock := filepath.Join(dir, "held")
	// mkdir is atomic: a second holder at the same time fails its job.
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
semaphores: {playbook: 1}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  one: {run: 'mkdir %[2]s && sleep 0.3 && rmdir %[2]s', semaphores: [playbook]}
  two: {run: 'mkdir %[2]s && sleep 0.3 && rmdir %[2]s', semaphores: [playbook]}
  three: {run: 'mkdir %[2]s && sleep 0.3 && rmdir %[2]s', semaphores: [playbook]}
pipelines:
  # independent: only the semaphore keeps the two runs' jobs apart.
  deploy: {manager: independent, jobs: [one, two, three]}
`, repo, lock))
	state := filepath.Join(dir, "state")
	var wg sync.WaitGroup
	results := make([]result, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state,
				"--report", filepath.Join(dir, fmt.Sprintf("r%d.json", i)))
		}()
	}
	wg.Wait()
	type span struct{ start, end time.Time }
	var spans []span
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("run %d: exit %d\n%s\n%s", i, r.code, r.stdout, r.stderr)
		}
		for _, b := range readReport(t, filepath.Join(dir, fmt.Sprintf("r%d.json", i))).Builds {
			if b.Job != "boot" {
				spans = append(spans, span{*b.StartedAt.Get(), *b.FinishedAt.Get()})
			}
		}
	}
	if len(spans) != 6 {
		t.Fatalf("%d spans", len(spans))
	}
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			if spans[i].start.Before(spans[j].end) && spans[j].start.Before(spans[i].end) {
				t.Fatalf("two holders of a max-1 semaphore overlapped: %v and %v", spans[i], spans[j])
			}
		}
	}
}

func TestConcurrentBuildsetsSeeTheirOwnCommit(t *testing.T) {
	t.Parallel()
	repo, shas := sourcetest.Repo(t, map[string]string{"version": "1"}, map[string]string{"version": "2"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  check:
    run: |
      for i in 1 2 3 4 5; do
        test "$(git -C "$SORTIE_SRC" rev-parse HEAD)" = "$SORTIE_COMMIT" || exit 3
        echo "$SORTIE_COMMIT $(cat version)" >> %[2]s/seen-$SORTIE_JOB-$SORTIE_BUILDSET
        sleep 0.1
      done
  check2: {run: 'test "$(git rev-parse HEAD)" = "$SORTIE_COMMIT" && test "$(pwd)" = "$SORTIE_SRC"'}
pipelines:
  deploy: {jobs: [check, check2]}
`, repo, dir))
	state := filepath.Join(dir, "state")
	var wg sync.WaitGroup
	for i, sha := range shas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state, "--commit", sha[:10],
				"--report", filepath.Join(dir, fmt.Sprintf("r%d.json", i)))
			if r.code != 0 {
				t.Errorf("run at %s: exit %d\n%s%s", sha, r.code, r.stdout, r.stderr)
			}
		}()
	}
	wg.Wait()
	for i, sha := range shas {
		rep := readReport(t, filepath.Join(dir, fmt.Sprintf("r%d.json", i)))
		if rep.Commit != sha {
			t.Fatalf("report %d commit %s, want %s", i, rep.Commit, sha)
		}
		data, err := os.ReadFile(filepath.Join(dir, "seen-check-"+rep.ID))
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Repeat(fmt.Sprintf("%s %d\n", sha, i+1), 5)
		if string(data) != want {
			t.Errorf("buildset at %s saw:\n%s", sha, data)
		}
	}
}

func TestInstallRunsOnlyWhenChanged(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	counter := filepath.Join(dir, "installs")
	conf := func(version string) string {
		return writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["echo %s >> %s"]}
  a: {run: "true"}
pipelines:
  deploy: {jobs: [a]}
`, repo, version, counter))
	}
	state := filepath.Join(dir, "state")
	run := func(version string) *buildset.Report {
		rep := filepath.Join(dir, "r.json")
		r := runSortie(t, nil, "run", "--config", conf(version), "--pipeline", "deploy", "--state-dir", state, "--report", rep)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		return readReport(t, rep)
	}
	bootLog := func(r *buildset.Report) string {
		data, err := os.ReadFile(r.Builds[0].Log)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	first := run("v1")
	second := run("v1")
	third := run("v2")
	data, _ := os.ReadFile(counter)
	if string(data) != "v1\nv2\n" {
		t.Fatalf("install ran: %q, want v1 then v2 once each", data)
	}
	// The bastion's mirror was made while the first buildset was, not by
	// its bootstrap, which found the commit there.
	if !strings.Contains(bootLog(first), "| mirror has "+first.Commit+" already") || strings.Contains(bootLog(first), "mirror made") {
		t.Errorf("first bootstrap log:\n%s", bootLog(first))
	}
	if !strings.Contains(bootLog(first), "| installed") || !strings.Contains(bootLog(second), "| already up to date") || !strings.Contains(bootLog(third), "| installed") {
		t.Fatalf("bootstrap logs:\n%s\n%s\n%s", bootLog(first), bootLog(second), bootLog(third))
	}
}

func TestSecretsNeverReachLogsOrDatabase(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	const secret = "hunter2-Zq8vX1-do-not-print"
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  leak:
    secret_env: [DEPLOY_TOKEN]
    run: |
      echo "token is $DEPLOY_TOKEN"
      echo "$DEPLOY_TOKEN" >&2
      printf 'partial %%s' "$DEPLOY_TOKEN"
      test "$(printf %%s "$DEPLOY_TOKEN" | sha256sum | cut -c1-64)" = %s
  other: {run: 'echo "other sees: ${DEPLOY_TOKEN:-nothing}"'}
pipelines:
  deploy: {jobs: [leak, other]}
`, repo, sha256hex(secret)))
	state := filepath.Join(dir, "state")
	r := runSortie(t, []string{"DEPLOY_TOKEN=" + secret}, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state, "--report", filepath.Join(dir, "r.json"))
	if r.code != 0 {
		t.Fatalf("exit %d (the job must have received the secret)\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, secret) {
		t.Fatal("the secret reached sortie's output")
	}
	sawRedacted := false
	err := filepath.Walk(state, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("the secret is in %s", path)
		}
		if strings.HasSuffix(path, ".log") && bytes.Contains(data, []byte("token is ***")) {
			sawRedacted = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawRedacted {
		t.Error("no log shows the redacted token: the test did not exercise redaction")
	}
	// A job that does not name the secret does not get it.
	rep := readReport(t, filepath.Join(dir, "r.json"))
	for _, b := range rep.Builds {
		if b.Job == "other" {
			data, _ := os.ReadFile(b.Log)
			if !strings.Contains(string(data), "other sees: nothing") {
				t.Errorf("other's log:\n%s", data)
			}
		}
	}
}

// sha256hex lets a job check it received a secret without the config,
// which the buildset's frozen spec copies, holding the secret itself.
func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestConfigErrorReport(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  base: {run: "true"}
  service-zuul: {run: "true", dependencies: [base]}
pipelines:
  hourly: {jobs: [service-zuul]}
`, repo))
	rep := filepath.Join(dir, "r.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "hourly", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	if r.code != 2 || !strings.Contains(r.stderr, "service-zuul needs base, which pipeline hourly does not run") {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	report := readReport(t, rep)
	if report.Result != "CONFIG_ERROR" || report.Error != "service-zuul needs base, which pipeline hourly does not run" || len(report.Builds) != 0 {
		t.Fatalf("report %+v", report)
	}
	h := runSortie(t, nil, "history", "--state-dir", filepath.Join(dir, "state"), "--json")
	if h.code != 0 || !strings.Contains(h.stdout, `"result": "CONFIG_ERROR"`) {
		t.Fatalf("history: %d\n%s%s", h.code, h.stdout, h.stderr)
	}
}

func TestRetriesInfrastructureFailures(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A bastion workdir under a plain file cannot be prepared: every
	// checkout is an infrastructure failure, retried, then RETRY_LIMIT.
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	blocker := filepath.Join(dir, "not-a-dir")
	os.WriteFile(blocker, []byte("x"), 0o644)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
bastion: {workdir: %s/work}
jobs:
  boot: {bootstrap: true, install: ["true"], attempts: 2}
  a: {run: "true"}
pipelines:
  deploy: {jobs: [a]}
`, repo, blocker))
	rep := filepath.Join(dir, "r.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	report := readReport(t, rep)
	boot, a := report.Builds[0], report.Builds[1]
	if boot.Result != "RETRY_LIMIT" || boot.Attempt != 2 || !strings.Contains(boot.Reason, "(attempt 2 of 2)") {
		t.Fatalf("boot: %+v", boot)
	}
	if a.Result != "SKIPPED" || a.StartedAt.Get() != nil {
		t.Fatalf("a: %+v", a)
	}
}

// A hung install must not hold the buildset (and its pipeline semaphore)
// forever: the bootstrap job's timeout covers checkout and install.
func TestBootstrapTimeoutCoversInstall(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot:
    bootstrap: true
    timeout: 5s
    install: ['echo $$ >> %[2]s/pids; exec sleep 300']
  a: {run: "true"}
pipelines:
  deploy: {jobs: [a]}
`, repo, dir))
	rep := filepath.Join(dir, "r.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	report := readReport(t, rep)
	if b := report.Builds[0]; b.Result != "TIMED_OUT" {
		t.Fatalf("boot: %+v", b)
	}
	if a := report.Builds[1]; a.Result != "SKIPPED" || a.Reason != "dependency boot timed out" {
		t.Fatalf("a: %+v", a)
	}
	pids := pidsIn(t, filepath.Join(dir, "pids"))
	if len(pids) != 1 {
		t.Fatalf("pids %v", pids)
	}
	assertGone(t, pids)
}

// On a terminal, sortie run redraws a live block: one line per running job
// with its elapsed time, and the counts. script(1) gives it a real pty.
func TestLiveProgressOnATerminal(t *testing.T) {
	t.Parallel()
	scriptCmd, err := exec.LookPath("script")
	if err != nil {
		t.Fatal("script (util-linux) is needed to give sortie a terminal")
	}
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	out := filepath.Join(dir, "tty.out")
	second := filepath.Join(dir, "second")
	// slowpoke runs until the terminal shows what the test looks for
	// (the live counts; on the second run, the time left), 30 s at most,
	// so that a redraw comes while it runs however slow the machine.
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  slowpoke:
    run: |
      sleep 0.6
      want='1 running'; [ -e %s ] && want=' left'
      n=0; until grep -q "$want" %s; do n=$((n+1)); [ $n -lt 600 ] || exit 1; sleep 0.05; done
pipelines:
  deploy: {jobs: [slowpoke]}
`, repo, second, out))
	cmdline := fmt.Sprintf("%s run --config %s --pipeline deploy --state-dir %s", sortieBin(t), cfg, filepath.Join(dir, "state"))
	run := func() string {
		t.Helper()
		// -f: script writes what it gets to the file at once, for
		// slowpoke to read.
		if o, err := exec.Command(scriptCmd, "-qefc", cmdline, out).CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, o)
		}
		data, _ := os.ReadFile(out)
		return string(data)
	}
	s := run()
	live := regexp.MustCompile(`1/2 done, 0 failed, 1 running, 0 waiting, \d+(\.\d+)?m?s elapsed`)
	for _, want := range []string{"▶ slowpoke", "\x1b[", "critical path as run: boot -> slowpoke"} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%s", want, s)
		}
	}
	if !live.MatchString(s) {
		t.Errorf("terminal output lacks the live counts with the time elapsed:\n%s", s)
	}
	if strings.Contains(s, "start   slowpoke") {
		t.Error("the line-per-event form was used on a terminal")
	}
	// Without history there is no estimate; the second run has one.
	if strings.Contains(s, " left") {
		t.Errorf("the first run estimates the time left without any history:\n%s", s)
	}
	if err := os.WriteFile(second, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s = run()
	if !regexp.MustCompile(`elapsed, about \d+(\.\d+)?m?s left`).MatchString(s) {
		t.Errorf("the second run does not estimate the time left from the first:\n%s", s)
	}
}

// TestKilledRunKeepsItsSemaphoreUntilItsBuildEnds: a `sortie run` killed
// with -9 leaves its build running (a process group of its own) and its
// semaphore held. The next `sortie run` on the state dir waits for the
// dead one's lease to run out, ends that build, and only then takes the
// semaphore; it also ends the dead run's buildset ERROR. Its job checks,
// as it starts, that the first run's build is gone. It takes the 30 s of a
// lease.
func TestKilledRunKeepsItsSemaphoreUntilItsBuildEnds(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "long.pid")
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
semaphores: {playbook: 1}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  long: {run: 'echo $$ > %[2]s; exec sleep 300', semaphores: [playbook]}
  check:
    semaphores: [playbook]
    run: |
      pid=$(cat %[2]s)
      s=$(cut -d" " -f3 /proc/$pid/stat 2>/dev/null)
      if [ -n "$s" ] && [ "$s" != Z ]; then echo "the killed run's build $pid still runs ($s)"; exit 1; fi
pipelines:
  first: {jobs: [long]}
  second: {jobs: [check]}
`, repo, pidFile))
	state := filepath.Join(dir, "state")
	first := exec.Command(sortieBin(t), "run", "--config", cfg, "--pipeline", "first", "--state-dir", state)
	var out bytes.Buffer
	first.Stdout, first.Stderr = &out, &out
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	for deadline := time.Now().Add(30 * time.Second); pid == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			first.Process.Kill()
			t.Fatalf("the first run's build never started:\n%s", out.String())
		}
		pids := pidsIn(t, pidFile)
		if len(pids) == 1 {
			pid = pids[0]
		}
	}
	first.Process.Kill() // SIGKILL: no cleanup at all
	first.Wait()
	if gone(pid) {
		t.Fatal("the build died with its sortie run: this test needs it to outlive it")
	}

	rep := filepath.Join(dir, "second.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "second", "--state-dir", state, "--report", rep)
	if r.code != 0 {
		t.Fatalf("second run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !gone(pid) {
		t.Errorf("the killed run's build %d still runs", pid)
	}
	if !strings.Contains(r.stderr, "ended 1 buildsets whose sortie run process died") {
		t.Errorf("the second run did not end the dead one's buildset:\n%s", r.stderr)
	}
	h := runSortie(t, nil, "history", "--state-dir", state, "--pipeline", "first", "--json")
	var hist struct{ Buildsets []buildset.Report }
	if err := json.Unmarshal([]byte(h.stdout), &hist); err != nil || len(hist.Buildsets) != 1 {
		t.Fatalf("history: %v\n%s", err, h.stdout)
	}
	if b := hist.Buildsets[0]; b.Result != "ERROR" || !strings.Contains(b.Error, "died") {
		t.Errorf("the killed run's buildset: %s %q, want ERROR saying its process died", b.Result, b.Error)
	}
}

// TestSerialRunsTakeTurns: `sortie run`s of a serial pipeline (no
// semaphore) on one state dir run one after the other, as a server's
// managers would run them. The job waits for a gate. Two runs start at
// once: one's job starts, the other says what it waits for. A third run
// starts once the first's job runs: its first look at the store finds
// that buildset RUNNING, so it must say it waits for it, with nothing else
// started. Once the gate opens all three finish.
func TestSerialRunsTakeTurns(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  one: {run: 'touch %[2]s/started-$SORTIE_BUILDSET; %[3]s'}
pipelines:
  deploy: {manager: serial, jobs: [one]}
`, repo, dir, waitFor(gate, dir)))
	t.Cleanup(func() { os.WriteFile(gate, nil, 0o644) })
	state := filepath.Join(dir, "state")
	startedIDs := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "started-*"))
		for i := range m {
			m[i] = strings.TrimPrefix(filepath.Base(m[i]), "started-")
		}
		return m
	}
	var outs []*lockedBuffer
	exited := make(chan error, 3)
	launch := func() *lockedBuffer {
		out := &lockedBuffer{}
		outs = append(outs, out)
		cmd := exec.Command(sortieBin(t), "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		go func() { exited <- cmd.Wait() }()
		return out
	}
	dump := func() string {
		var b strings.Builder
		for i, o := range outs {
			fmt.Fprintf(&b, "run %d:\n%s\n", i, o)
		}
		return b.String()
	}
	launch()
	launch()
	said := func() bool {
		return strings.Contains(outs[0].String(), "waiting for buildset") || strings.Contains(outs[1].String(), "waiting for buildset")
	}
	for deadline := time.Now().Add(60 * time.Second); len(startedIDs()) < 1 || !said(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("want one job started and the other run waiting; %d started\n%s", len(startedIDs()), dump())
		}
	}
	first := startedIDs()[0]
	third := launch()
	want := fmt.Sprintf("waiting for buildset %s of pipeline deploy (RUNNING, serial manager)", first)
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(third.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the third run never said %q\n%s", want, dump())
		}
	}
	if ids := startedIDs(); len(ids) != 1 {
		t.Fatalf("jobs of %v started while the first one held the gate, want %s's alone\n%s", ids, first, dump())
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for range outs {
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("a run failed: %v\n%s", err, dump())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("the runs did not finish after the gate opened\n%s", dump())
		}
	}
	if n := len(startedIDs()); n != 3 {
		t.Errorf("%d jobs ran in all, want 3", n)
	}
}

// --quiet prints what a failed deploy needs and nothing about the builds
// that went well: the first line, the failed build with its log tail, the
// result. The same run without it prints every start and the table.
func TestRunQuiet(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  fine: {run: "echo all good"}
  broken: {run: "echo the disk is on fire; exit 3"}
pipelines:
  deploy: {jobs: [boot, fine, broken]}
`, repo))
	for _, quiet := range []bool{true, false} {
		args := []string{"run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state")}
		if quiet {
			args = append(args, "--quiet")
		}
		r := runSortie(t, nil, args...)
		if r.code != 1 {
			t.Fatalf("quiet=%v: exit %d, want 1\n%s\n%s", quiet, r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{"pipeline deploy at ", "failure broken", "the disk is on fire", ": FAILURE in "} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("quiet=%v: no %q in:\n%s", quiet, want, r.stdout)
			}
		}
		for _, noisy := range []string{"start   fine", "success fine", "JOB  ", "bastion boot: checkout made"} {
			if got := strings.Contains(r.stdout, noisy); got == quiet {
				t.Errorf("quiet=%v: %q printed: %v, want %v:\n%s", quiet, noisy, got, !quiet, r.stdout)
			}
		}
	}
}

// TestRusageFile: with SORTIE_RUSAGE set, a run writes its own CPU time and
// its children's there as it exits, and its threads' voluntary switches;
// the jobs' CPU is the children's, not its own. Another command writes
// nothing.
func TestRusageFile(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	// A job that spends CPU of its own: about a quarter of a second of a shell loop.
	cfg := writeConfig(t, dir, fmt.Sprintf(`source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  spin: {run: "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"}
pipelines:
  deploy: {jobs: [boot, spin]}
`, repo))
	path := filepath.Join(dir, "rusage.json")
	if r := runSortie(t, []string{"SORTIE_RUSAGE=" + path}, "validate", "--config", cfg); r.code != 0 {
		t.Fatalf("validate: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("validate wrote %s (%v)", path, err)
	}
	r := runSortie(t, []string{"SORTIE_RUSAGE=" + path}, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--quiet")
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var u Rusage
	if err := json.Unmarshal(data, &u); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	self, kids := u.SelfUser+u.SelfSys, u.ChildrenUser+u.ChildrenSys
	t.Logf("own CPU %v, children's %v", self, kids)
	if self <= 0 || kids <= self {
		t.Errorf("own CPU %v, children's %v: want both, the spinning job's in the children's: %s", self, kids, data)
	}
	// Waiting for the jobs alone takes a thread off its core.
	if u.SelfSwitches <= 0 {
		t.Errorf("own voluntary switches %d, want some: %s", u.SelfSwitches, data)
	}
}
