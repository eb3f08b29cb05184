package ansible_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/ansible"
	"github.com/sortie-ci/sortie/internal/ansible/ansibletest"
	"github.com/sortie-ci/sortie/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// installPlugin puts the plugin in a directory as the bootstrap job does
// on a bastion (InstallCommand, run by /bin/sh) and returns it.
func installPlugin(t *testing.T) string {
	t.Helper()
	dir := ansible.PluginDir(t.TempDir())
	if out, err := exec.Command("/bin/sh", "-c", ansible.InstallCommand(dir)).CombinedOutput(); err != nil {
		t.Fatalf("install the plugin: %v\n%s", err, out)
	}
	return dir
}

// playbook runs ansible-playbook on a playbook of testdata, as a job does:
// with the plugin's environment when plugin is not "", its events going
// to the file it returns. It returns the output and the exit status.
func playbook(t *testing.T, plugin, name string, args ...string) (out string, events string, code int) {
	t.Helper()
	ansibletest.Need(t)
	dir := t.TempDir()
	events = filepath.Join(dir, "events.jsonl")
	env := map[string]string{
		"ANSIBLE_LOCAL_TEMP": filepath.Join(dir, "tmp"), "ANSIBLE_REMOTE_TEMP": filepath.Join(dir, "tmp"),
		"ANSIBLE_NOCOWS": "1", "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_HOST_KEY_CHECKING": "0",
		"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
	}
	if plugin != "" {
		ansible.Env(env, plugin)
		env["SORTIE_EVENTS"] = events
	}
	cmd := exec.Command("ansible-playbook", append([]string{"-i", "testdata/inventory.yaml", "-e", "out=" + dir, "-e", "secret=hunter2", "testdata/" + name}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "LANG=C.UTF-8"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return string(b), events, code
}

// record reads an events file into a Recorder of attempt 1 and returns
// what the sink keeps and the outcome.
func record(t *testing.T, events []byte, redact func(string) string) (store.BuildHosts, ansible.Outcome) {
	t.Helper()
	sink := &ansibletest.Sink{}
	r := ansible.NewRecorder(sink, ansible.Target{Buildset: "bs", Job: "deploy", Attempt: 1})
	r.Redact = redact
	// In pieces of odd sizes, as a bastion copies them.
	for len(events) > 0 {
		n := min(len(events), 777)
		r.Write(events[:n])
		events = events[n:]
	}
	out := r.Close(t.Context())
	if out.Err != nil {
		t.Fatal(out.Err)
	}
	return sink.Hosts(), out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRecapsAreAnsibles: the recaps kept are the PLAY RECAP lines of
// ansible-playbook itself, for a play with every kind of result, and each
// task's result per host is kept with the failures' messages, redacted.
func TestRecapsAreAnsibles(t *testing.T) {
	t.Parallel()
	out, events, code := playbook(t, installPlugin(t), "every-status.yaml")
	if code != 4 { // a failed host and an unreachable one
		t.Fatalf("ansible-playbook exit %d, want 4\n%s", code, out)
	}
	want := ansibletest.Recaps(out)
	if len(want) != 3 {
		t.Fatalf("the PLAY RECAP names %d hosts, want 3:\n%s", len(want), out)
	}
	got, outcome := record(t, readFile(t, events), func(s string) string { return strings.ReplaceAll(s, "hunter2", "***") })
	if d := cmp.Diff(want, ansibletest.RecapMap(got.Recaps)); d != "" {
		t.Errorf("recaps (-PLAY RECAP +kept):\n%s\n%s", d, out)
	}
	if want["alpha"].Rescued != 1 || want["beta"].Failed != 1 || want["gone"].Unreachable != 1 || want["beta"].Skipped == 0 || want["alpha"].Ignored != 1 {
		t.Fatalf("the play does not have every kind of result: %v", want)
	}
	if got.Summary != (store.HostsSummary{Attempt: 1, Runs: 1, Plays: 1}) {
		t.Errorf("summary %+v, want 1 run, 1 play, no note", got.Summary)
	}
	if outcome != (ansible.Outcome{Recorded: true, Hosts: 3, Changed: 2, Failed: 1, Unreachable: 1}) {
		t.Errorf("outcome %+v", outcome)
	}
	// Each result, by task name and host.
	status := map[string]string{}
	var msg string
	for _, r := range got.Results {
		key := got.Tasks[r.Task].Name + "/" + r.Host
		status[key] = string(r.Status)
		if r.Ignored {
			status[key] += " (ignored)"
		}
		if key == "fail beta for good/beta" {
			msg = r.Message
		}
		if got.Tasks[r.Task].Play != "every status" {
			t.Errorf("task %q of play %q, want play %q", got.Tasks[r.Task].Name, got.Tasks[r.Task].Play, "every status")
		}
	}
	for key, st := range map[string]string{
		"reach every host/gone":            "unreachable",
		"reach every host/alpha":           "ok",
		"change something/beta":            "changed",
		"skip beta/beta":                   "skipped",
		"fail and ignore it/alpha":         "failed (ignored)",
		"fail alpha, then rescue it/alpha": "failed",
		"the rescue/alpha":                 "ok",
		"fail beta for good/beta":          "failed",
		"after the failure/alpha":          "ok",
	} {
		if status[key] != st {
			t.Errorf("%s: %q, want %q", key, status[key], st)
		}
	}
	if _, ok := status["after the failure/beta"]; ok {
		t.Error("beta ran a task after its failure")
	}
	if msg != "beta is broken: ***" {
		t.Errorf("failure message %q, want it redacted", msg)
	}
	// The tasks are numbered by their first result.
	for i, task := range got.Tasks {
		if task.Index != i {
			t.Errorf("task %d has index %d", i, task.Index)
		}
	}
}

// TestTwoPlaybooks: one job that runs ansible-playbook twice reports two
// runs, and each host's recap is the sum of its two PLAY RECAP lines.
func TestTwoPlaybooks(t *testing.T) {
	t.Parallel()
	plugin := installPlugin(t)
	out1, ev1, _ := playbook(t, plugin, "every-status.yaml")
	out2, ev2, code := playbook(t, plugin, "quiet.yaml")
	if code != 0 {
		t.Fatalf("quiet.yaml: exit %d\n%s", code, out2)
	}
	got, _ := record(t, append(readFile(t, ev1), readFile(t, ev2)...), nil)
	if got.Summary.Runs != 2 || got.Summary.Plays != 2 {
		t.Errorf("summary %+v, want 2 runs and 2 plays", got.Summary)
	}
	if d := cmp.Diff(ansibletest.Recaps(out1+out2), ansibletest.RecapMap(got.Recaps)); d != "" {
		t.Errorf("recaps (-PLAY RECAPs +kept):\n%s", d)
	}
}

// TestPluginChangesNoOutput: ansible-playbook prints the same with the
// plugin as without it.
func TestPluginChangesNoOutput(t *testing.T) {
	t.Parallel()
	without, _, code := playbook(t, "", "quiet.yaml")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, without)
	}
	with, events, _ := playbook(t, installPlugin(t), "quiet.yaml")
	if with != without {
		t.Errorf("the output changed with the plugin:\n--- without\n%s\n--- with\n%s", without, with)
	}
	if len(readFile(t, events)) == 0 {
		t.Error("the plugin wrote no event")
	}
}

// TestCheckModeDiffs: in check mode (--check --diff) a task that would
// change a file is "changed" with its diff, and the file is not written.
func TestCheckModeDiffs(t *testing.T) {
	t.Parallel()
	out, events, code := playbook(t, installPlugin(t), "quiet.yaml", "--check", "--diff")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	got, _ := record(t, readFile(t, events), nil)
	var r *store.HostResult
	for i := range got.Results {
		if got.Tasks[got.Results[i].Task].Name == "write a file" {
			r = &got.Results[i]
		}
	}
	if r == nil || r.Status != store.HostChanged || !strings.Contains(r.Diff, "+hello") {
		t.Fatalf("write a file: %+v, want changed with a diff adding hello", r)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(events), "quiet.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("check mode wrote the file: %v", err)
	}
}

// TestCutShort: the events of a play cut before its recap (a kill) still
// give each host's counts so far, from the results, and a note says so.
func TestCutShort(t *testing.T) {
	t.Parallel()
	_, events, _ := playbook(t, installPlugin(t), "every-status.yaml")
	all := readFile(t, events)
	cut := bytes.Index(all, []byte(`"name":"fail beta for good"`))
	if cut < 0 {
		t.Fatal("no task event for 'fail beta for good'")
	}
	// Cut in the middle of a line, as a kill -9 may.
	got, outcome := record(t, all[:cut], nil)
	if !strings.Contains(got.Summary.Note, "ansible-playbook testdata/every-status.yaml ended before its recap") ||
		!strings.Contains(got.Summary.Note, "1 line of the Ansible callback's output could not be read") {
		t.Errorf("note %q", got.Summary.Note)
	}
	if got.Summary.Note != outcome.Note {
		t.Errorf("outcome note %q, kept note %q", outcome.Note, got.Summary.Note)
	}
	want := map[string]store.HostCounts{
		"alpha": {OK: 5, Changed: 1, Failed: 1, Ignored: 1},
		"beta":  {OK: 3, Changed: 1, Skipped: 2, Ignored: 1},
		"gone":  {Unreachable: 1},
	}
	if d := cmp.Diff(want, ansibletest.RecapMap(got.Recaps)); d != "" {
		t.Errorf("recaps counted from the results (-want +got):\n%s", d)
	}
}

// TestGarbage: lines that are not events, and one past MaxLine, are left
// out and counted in the note; the events around them are read.
func TestGarbage(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	b.WriteString("not json at all\n{\"ev\":\"start\",\"run\":\"r1\",\"playbook\":\"p.yaml\"}\n")
	b.WriteString("{\"ev\":\"result\",\"run\":\"r1\",\"task\":\"t\",\"host\":\"h\",\"status\":\"exploded\"}\n")
	b.WriteString(`{"ev":"result","run":"r1","task":"t","host":"h","status":"ok"}` + "\n")
	b.Write(bytes.Repeat([]byte("x"), ansible.MaxLine+10))
	b.WriteString("\n\x00\xff\n")
	b.WriteString(`{"ev":"stats","run":"r1","hosts":{"h":{"ok":1}}}` + "\n")
	got, outcome := record(t, b.Bytes(), nil)
	if want := "4 lines of the Ansible callback's output could not be read and were left out"; got.Summary.Note != want || outcome.Note != want {
		t.Errorf("note %q (outcome %q), want %q", got.Summary.Note, outcome.Note, want)
	}
	if d := cmp.Diff(map[string]store.HostCounts{"h": {OK: 1}}, ansibletest.RecapMap(got.Recaps)); d != "" {
		t.Errorf("recaps (-want +got):\n%s", d)
	}
	if len(got.Results) != 1 || got.Tasks[0].Name != "(a task the events did not name)" {
		t.Errorf("results %+v tasks %+v", got.Results, got.Tasks)
	}

	// Garbage alone: a note, no run.
	got, outcome = record(t, []byte("garbage"), nil)
	if outcome.Recorded || got.Summary.Runs != 0 || !strings.Contains(got.Summary.Note, "1 line") {
		t.Errorf("garbage alone: %+v, outcome %+v", got.Summary, outcome)
	}
	// Nothing at all: nothing written.
	sink := &ansibletest.Sink{}
	if o := ansible.NewRecorder(sink, ansible.Target{Attempt: 1}).Close(t.Context()); o.Recorded || sink.Updates() != 0 {
		t.Errorf("no events: outcome %+v, %d writes", o, sink.Updates())
	}
}

// TestBounds: a play over more hosts than a build keeps results of keeps
// every host's recap, every failure up to MaxResults, and at most
// MaxRoutine ok results; messages are bounded one by one and together.
func TestBounds(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w(`{"ev":"start","run":"r"}`)
	w(`{"ev":"play","run":"r","id":"p","name":"big"}`)
	const hosts = 3000
	long := strings.Repeat("m", ansible.MaxMessage*2)
	for task := range 4 {
		w(`{"ev":"task","run":"r","id":"t%d","name":"task %d","play":"p"}`, task, task)
		for h := range hosts {
			status := "ok"
			if task == 3 && h%2 == 0 {
				status = "failed"
			}
			w(`{"ev":"result","run":"r","task":"t%d","host":"host%04d","status":"%s","msg":"%s"}`, task, h, status, long)
		}
	}
	got, outcome := record(t, b.Bytes(), nil)
	if len(got.Recaps) != hosts || outcome.Hosts != hosts {
		t.Fatalf("%d recaps, want %d", len(got.Recaps), hosts)
	}
	ok, failed, text := 0, 0, 0
	for _, r := range got.Results {
		switch r.Status {
		case store.HostOK:
			ok++
		case store.HostFailed:
			failed++
		}
		if len(r.Message) > ansible.MaxMessage {
			t.Fatalf("a message of %d bytes kept", len(r.Message))
		}
		text += len(r.Message)
	}
	if ok != ansible.MaxRoutine || failed != hosts/2 {
		t.Errorf("kept %d ok and %d failed results, want %d and %d", ok, failed, ansible.MaxRoutine, hosts/2)
	}
	if text > ansible.MaxText+hosts/2*ansible.MaxTextOver {
		t.Errorf("%d bytes of messages kept", text)
	}
	if want := 4*hosts - ok - failed; got.Summary.Dropped != want {
		t.Errorf("dropped %d, want %d", got.Summary.Dropped, want)
	}
	if c := ansibletest.RecapMap(got.Recaps)["host0000"]; c != (store.HostCounts{OK: 3, Failed: 1}) {
		t.Errorf("recap of host0000 %+v", c)
	}
}

// TestFlushesWhileItRuns: results reach the sink while the attempt runs,
// not only at its end; a write the sink refuses is tried again.
func TestFlushesWhileItRuns(t *testing.T) {
	t.Parallel()
	refuse := true
	sink := &ansibletest.Sink{Fail: func(store.HostsUpdate) error {
		if refuse {
			refuse = false
			return errors.New("the store is busy")
		}
		return nil
	}}
	r := ansible.NewRecorder(sink, ansible.Target{Buildset: "bs", Job: "j", Attempt: 2})
	r.Flush = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	r.Start(ctx)
	r.Write([]byte(`{"ev":"start","run":"r"}` + "\n" + `{"ev":"task","run":"r","id":"t","name":"t"}` + "\n" +
		`{"ev":"result","run":"r","task":"t","host":"h","status":"changed"}` + "\n"))
	deadline := time.Now().Add(10 * time.Second)
	for len(sink.Hosts().Results) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing reached the sink while the attempt ran")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := sink.Hosts(); got.Summary.Attempt != 2 || got.Recaps[0].Changed != 1 {
		t.Errorf("kept %+v", got)
	}
	if o := r.Close(t.Context()); o.Note == "" || o.Changed != 1 {
		t.Errorf("outcome %+v, want a note that the run has no recap", o)
	}
}

// TestInstallCommand: the command writes the plugin as embedded, and the
// plugin has no line that would end the command's here-document.
func TestInstallCommand(t *testing.T) {
	t.Parallel()
	dir := installPlugin(t)
	got := readFile(t, filepath.Join(dir, "sortie.py"))
	if !bytes.Equal(got, ansible.Plugin()) {
		t.Error("the installed plugin differs from the embedded one")
	}
	if bytes.Contains(ansible.Plugin(), []byte("SORTIE_ANSIBLE_PLUGIN_END")) {
		t.Error("the plugin holds the here-document's terminator")
	}
	env := map[string]string{}
	ansible.Env(env, "/x")
	if env["ANSIBLE_CALLBACK_PLUGINS"] != "/x:~/.ansible/plugins/callback:/usr/share/ansible/plugins/callback" {
		t.Errorf("env %v", env)
	}
	env = map[string]string{"ANSIBLE_CALLBACK_PLUGINS": "plugins/callback"}
	ansible.Env(env, "/x")
	if env["ANSIBLE_CALLBACK_PLUGINS"] != "/x:plugins/callback" {
		t.Errorf("env %v", env)
	}
}

// TestNoGoroutineWithoutEvents: a started Recorder runs no goroutine
// until the first event comes, as most attempts run no Ansible; then one,
// until Close. Not parallel, so that no other test's Recorder runs.
func TestNoGoroutineWithoutEvents(t *testing.T) {
	r := ansible.NewRecorder(&ansibletest.Sink{}, ansible.Target{Buildset: "bs", Job: "j", Attempt: 1})
	r.Start(t.Context())
	if n := flushers(r); n != 0 {
		t.Errorf("%d flushing goroutines before any event, want 0", n)
	}
	r.Write([]byte(`{"ev":"start","run":"r"}` + "\n"))
	if n := flushers(r); n != 1 {
		t.Errorf("%d flushing goroutines after an event, want 1", n)
	}
	r.Close(t.Context())
	if n := flushers(r); n != 0 {
		t.Errorf("%d flushing goroutines after Close, want 0", n)
	}
	r.Write([]byte(`{"ev":"start","run":"r2"}` + "\n"))
	if n := flushers(r); n != 0 {
		t.Errorf("%d flushing goroutines after a write past Close, want 0", n)
	}
}

// flushers counts the goroutines a Recorder's Start launched.
func flushers(*ansible.Recorder) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "ansible.(*Recorder).") {
			n++
		}
	}
	return n
}
