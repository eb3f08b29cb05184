package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// The remote side of a build. sshd makes every session's command a session
// and process group leader of its own (setsid), so the group id is the pid
// the command writes first. The script arrives on stdin and the shell reads
// it from there (sh -s): it holds the job's secrets and never touches the
// bastion's disk or a command line. It runs the job as a child with its
// stdin from /dev/null, then ends whatever the job left in the group: sshd
// closes the channel only once nothing holds its output. When it has to
// KILL stragglers (itself included) it leaves the job's exit status in a
// file for Sortie to read.

// others succeeds while a process of group $g lives (not a zombie) other
// than this shell and its own children (the cat and awk of the check
// itself). A job's leftovers are never children of this shell, since the
// job's own shell, their parent, has exited. One pass of awk over
// /proc/*/stat: dash's read builtin reads a byte per system call. Field 3
// after the command name is the group, field 2 the parent.
const othersFunc = `others() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$g" -v me="$$" '
    { pid = $1; sub(/.*\) /, ""); split($0, f, " ") }
    f[3] == g && f[1] != "Z" && pid != me && f[2] != me { found = 1 }
    END { exit !found }'
}
`

// endGroup sends TERM to group $g, waits up to $grace tenths of a second
// while members live, then KILLs the group.
const endGroupFunc = `end_group() {
  kill -s TERM -- "-$g" 2>/dev/null
  n=0
  while others && [ "$n" -lt "$grace" ]; do sleep 0.1; n=$((n+1)); done
  others && kill -s KILL -- "-$g" 2>/dev/null
  return 0
}
`

// marked prints the pids of the live processes whose environment holds
// the entry $m ("KEY=value"), one a line. One GNU grep reads every
// environment this user may read (-z: entries end with a NUL; -x: the
// whole entry); a zombie's reads empty. About 6 ms with 600 processes.
const markedFunc = `marked() {
  (cd /proc && grep -lsxzF -e "$m" [0-9]*/environ) | sed 's,/.*,,'
}
`

// endAllFunc ends group $g (none if empty) and every process marked with
// $m wherever it went (setsid, a double fork): TERM to the group at once
// and to each marked process when first seen, since one may fork
// meanwhile; once $grace tenths of a second have passed with any of them
// alive, KILL to all of them every tenth until none is left. It fails,
// naming them, if some outlive the KILL by 10 s (stuck in the kernel).
const endAllFunc = `end_all() {
  termed= n=0
  [ -n "$g" ] && kill -s TERM -- "-$g" 2>/dev/null
  while :; do
    p=$(marked)
    if [ -z "$p" ] && ! { [ -n "$g" ] && others; }; then
      # A process in the middle of an exec shows an empty environment
      # for an instant: look twice.
      p=$(marked)
      [ -z "$p" ] && return 0
    fi
    if [ "$n" -lt "$grace" ]; then
      for x in $p; do
        case " $termed " in *" $x "*) ;; *) kill -s TERM "$x" 2>/dev/null; termed="$termed $x" ;; esac
      done
    elif [ "$n" -lt $((grace + 100)) ]; then
      [ -n "$g" ] && kill -s KILL -- "-$g" 2>/dev/null
      [ -n "$p" ] && kill -s KILL $p 2>/dev/null
    else
      echo "still alive 10 s after KILL: group ${g:-none}, processes" $p >&2
      return 1
    fi
    sleep 0.1
    n=$((n+1))
  done
}
`

// ours succeeds while group $g is the one a pid file recorded, the leader
// having started at $st (field 22 of /proc/<pid>/stat), and has a member
// alive. A process with pid $g but another start time means the pid was
// handed out again, which the kernel does only once the recorded group is
// empty; a member that started before the leader cannot descend from it.
const oursFunc = `ours() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v g="$g" -v st="$st" '
    { pid = $1; sub(/.*\) /, ""); split($0, f, " ") }
    pid == g && f[20] != st { bad = 1 }
    f[3] == g && f[1] != "Z" && f[1] != "X" { if (f[20] + 0 < st + 0) bad = 1; else live = 1 }
    END { exit bad || !live }'
}
`

// runRel is the directory of the pid files, relative to the workdir:
// run/<owner>, or run without an owner.
func (b *Bastion) runRel() string {
	if b.cfg.Owner == "" {
		return "run"
	}
	return "run/" + b.cfg.Owner
}

func (b *Bastion) runPaths(id string) (pid, rc string) {
	dir := b.Workdir() + "/" + b.runRel() + "/"
	return dir + id + ".pid", dir + id + ".rc"
}

// launch is the session command: record the group id (the pid of this
// shell, which execs the wrapper), its start time and the boot id, then
// read the script from stdin with nothing but the base environment. It
// runs in the user's login shell (sh, bash or zsh), with builtins only: its
// stat line's second field, the command name, is one word ("bash"), and
// read splits the same in all of them, where zsh does not split an
// unquoted $var.
func (b *Bastion) launch(id string, events bool) string {
	pid, _ := b.runPaths(id)
	var keep strings.Builder
	for _, k := range bastion.BaseEnv {
		fmt.Fprintf(&keep, `${%s+"%s=$%s"} `, k, k, k)
	}
	// With events, the script's fd 3 is the session's stderr: a channel
	// of its own beside the log (stdout), for eventsMark.
	fd3 := ""
	if events {
		fd3 = "3>&2 "
	}
	// The run directory was made when the connection was (dial).
	return fmt.Sprintf(`read -r x x x x x x x x x x x x x x x x x x x x x st x < /proc/$$/stat && read -r bt < /proc/sys/kernel/random/boot_id && echo $$ $st $bt > %s && exec env -i %s/bin/sh -s %s2>&1`, q(pid), keep.String(), fd3)
}

// eventsPath is the events file of a build (bastion.Spec.Events).
func (b *Bastion) eventsPath(id string) string { return b.Workdir() + "/events/" + id + ".jsonl" }

// buildScript is the script of one build: environment, directory, the job
// as a child, then the sweep of what it left behind.
func (b *Bastion) buildScript(id string, spec bastion.Spec, grace time.Duration) string {
	pid, rc := b.runPaths(id)
	var s strings.Builder
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&s, "export %s=%s\n", k, q(spec.Env[k]))
	}
	closeFD3 := ""
	if spec.Events != nil {
		fmt.Fprintf(&s, "export %s=%s\n", bastion.EventsEnv, q(b.eventsPath(id)))
		closeFD3 = " 3>&-"
	}
	b.tag(&s, id)
	dir := spec.Dir
	if dir == "" {
		dir = b.Workdir()
	}
	// A directory that cannot be entered is the bastion's failure, not the
	// job's: say so with a signal no exit status of the job can look like.
	fmt.Fprintf(&s, "cd %s || { echo \"sortie: cannot enter %s\"; trap - %s; kill -%s $$; }\n", q(dir), strings.ReplaceAll(dir, `"`, ""), cdFailed, cdFailed)
	fmt.Fprintf(&s, "/bin/sh -c %s </dev/null%s\nrc=$?\n", q(spec.Command), closeFD3)
	if spec.Events != nil {
		// Say whether there are events to fetch: most builds have none.
		fmt.Fprintf(&s, "[ -e \"$%s\" ] && echo %s >&3\n", bastion.EventsEnv, eventsMark)
	}
	fmt.Fprintf(&s, "g=$$ grace=%d\n%s%s", tenths(grace), othersFunc, endGroupFunc)
	// Ignore TERM ourselves while ending the others; if some need KILL,
	// the KILL ends us too, so leave the status behind first.
	fmt.Fprintf(&s, "trap '' TERM\nif others; then echo 'sortie: ending the processes the job left behind'; echo $rc > %s; end_group; fi\nrm -f %s\nexit $rc\n", q(rc), q(pid))
	return s.String()
}

// tag exports, last so that the job's env cannot override them,
// bastion.RunEnv=id and, with an owner, bastion.OwnerEnv: every process of
// the build carries them, and a timeout, a cancel or KillOwner finds by
// them the processes that left the build's process group.
func (b *Bastion) tag(s *strings.Builder, id string) {
	fmt.Fprintf(s, "export %s=%s\n", bastion.RunEnv, id)
	if b.cfg.Owner != "" {
		fmt.Fprintf(s, "export %s=%s\n", bastion.OwnerEnv, b.cfg.Owner)
	}
}

// cdFailed is the signal the build script sends itself when it cannot
// enter the build's directory.
const cdFailed = "USR2"

func (b *Bastion) pidPath(id string) string {
	p, _ := b.runPaths(id)
	return p
}

func tenths(d time.Duration) int { return max(1, int(d/(100*time.Millisecond))) }

// Run runs one attempt of a build in its own session on the bastion.
func (b *Bastion) Run(ctx context.Context, spec bastion.Spec, log io.Writer) (bastion.Outcome, error) {
	if ctx.Err() != nil {
		return bastion.Outcome{ExitCode: -1, Canceled: true}, nil
	}
	grace := spec.Grace
	if grace <= 0 {
		grace = bastion.DefaultGrace
	}
	c, err := b.connect(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return bastion.Outcome{ExitCode: -1, Canceled: true}, nil // nothing started
		}
		return bastion.Outcome{}, err
	}
	id := bastion.NewRunID()
	sess, err := c.NewSession()
	if err != nil {
		return bastion.Outcome{}, b.infra(c, "open session", err)
	}
	defer sess.Close()
	sess.Stdin = strings.NewReader(b.buildScript(id, spec, grace))
	sink := &drain{w: log}
	sess.Stdout, sess.Stderr = sink, sink
	var ev *events
	if spec.Events != nil {
		ev = &events{b: b, c: c, path: b.eventsPath(id), w: spec.Events, other: sink}
		sess.Stderr = ev
	}
	if err := sess.Start(b.launch(id, ev != nil)); err != nil {
		return bastion.Outcome{}, b.infra(c, "start build", err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	// A build ended by its timeout or a cancel says nothing of its events
	// file: look for it anyway.
	ended := false
	if ev != nil {
		ev.follow()
		defer func() { ev.finish(context.WithoutCancel(ctx), ended) }()
	}

	var timeout <-chan time.Time
	if spec.Timeout > 0 {
		t := time.NewTimer(spec.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var out bastion.Outcome
	select {
	case err = <-done:
	case <-timeout:
		out.TimedOut, ended = true, true
		err = b.end(c, sess, id, grace, done)
	case <-spec.Expire:
		out.TimedOut, ended = true, true
		err = b.end(c, sess, id, grace, done)
	case <-ctx.Done():
		out.Canceled, ended = true, true
		err = b.end(c, sess, id, grace, done)
	}
	if out.TimedOut || out.Canceled {
		out.ExitCode = -1
		return out, nil
	}
	var ee *gossh.ExitError
	switch {
	case err == nil:
		return out, nil
	case errors.As(err, &ee) && ee.Signal() == cdFailed:
		_, _ = output(context.WithoutCancel(ctx), c, "rm -f "+q(b.pidPath(id)), nil)
		return bastion.Outcome{}, &bastion.InfraError{Op: "run", Err: fmt.Errorf("cannot enter %s on %s", spec.Dir, b.cfg.Host)}
	case errors.As(err, &ee) && ee.Signal() == "KILL":
		// The sweep killed stragglers and itself; the job's status is in
		// the file it left.
		// The pid file stayed too.
		pidPath, rcPath := b.runPaths(id)
		s, rerr := output(context.WithoutCancel(ctx), c, "cat "+q(rcPath)+" && rm -f "+q(rcPath)+" "+q(pidPath), nil)
		if code, perr := strconv.Atoi(strings.TrimSpace(s)); rerr == nil && perr == nil {
			out.ExitCode = code
			return out, nil
		}
		out.ExitCode = -1
		return out, nil
	case errors.As(err, &ee):
		out.ExitCode = ee.ExitStatus()
		if ee.Signal() != "" {
			out.ExitCode = -1
		}
		return out, nil
	}
	// No exit status: the connection went away mid-build. The job may still
	// run there; end it as soon as we are connected again.
	b.mu.Lock()
	b.orphans = append(b.orphans, id)
	b.mu.Unlock()
	return bastion.Outcome{}, b.infra(c, "build lost its connection", err)
}

// end ends a running build's process group and waits for its session.
// A kill that cannot be delivered now (sshd refusing another session,
// say) is tried again a few times, then left for the next connection; the
// session is closed rather than waited for forever, and the connection,
// which other builds share, is left alone.
func (b *Bastion) end(c *gossh.Client, sess *gossh.Session, id string, grace time.Duration, done <-chan error) error {
	var err error
	for try := range 3 {
		if err = b.kill(context.Background(), c, id, grace); err == nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	if err != nil {
		b.mu.Lock()
		b.orphans = append(b.orphans, id)
		b.mu.Unlock()
	}
	select {
	case err := <-done:
		return err
	case <-time.After(grace + 10*time.Second):
		sess.Close()
		return <-done
	}
}

// kill ends a build from another session: its process group and every
// process carrying its run id (bastion.RunEnv) wherever it went. A build
// cancelled just after it started may not have written its pid file yet:
// kill waits for it for up to the grace period. A group that is gone, or
// whose id is no longer the build's (a kill left for a reconnection after
// a reboot of the bastion, say), is left alone. Processes that outlive
// SIGKILL are left too, and said so on stderr, which nobody reads: the
// build is over for Sortie either way.
func (b *Bastion) kill(ctx context.Context, c *gossh.Client, id string, grace time.Duration) error {
	pid, rc := b.runPaths(id)
	script := fmt.Sprintf(`%s%s%s%sgrace=%d m=%s
n=0
while [ ! -s %[7]s ] && [ "$n" -lt "$grace" ]; do sleep 0.1; n=$((n+1)); done
g= st= bt=
read -r g st bt 2>/dev/null < %[7]s
case $g in ''|*[!0-9]*|0*|1) g= ;; esac
read -r boot < /proc/sys/kernel/random/boot_id
[ -n "$g" ] && [ "$bt" = "$boot" ] && ours || g=
end_all
rm -f %[7]s %[8]s
`, othersFunc, oursFunc, markedFunc, endAllFunc, tenths(grace), q(bastion.RunEnv+"="+id), q(pid), q(rc))
	// TERM, grace, KILL, and up to 10 s for the killed to go.
	ctx, cancel := context.WithTimeout(ctx, 3*grace+b.cfg.DialTimeout+15*time.Second)
	defer cancel()
	_, err := output(ctx, c, "exec /bin/sh -s", strings.NewReader(script))
	return err
}

// drain passes output to the log until a write fails, then keeps reading
// and drops it: the session must be drained or the remote job blocks on a
// full channel. The log keeps its first error for its Close.
type drain struct {
	w      io.Writer
	failed bool
}

func (d *drain) Write(p []byte) (int, error) {
	if !d.failed {
		if _, err := d.w.Write(p); err != nil {
			d.failed = true
		}
	}
	return len(p), nil
}

// exitStatus is the remote exit status of a session's error, or -1 when
// the session ended without one (the connection went away).
func exitStatus(err error) int {
	var ee *gossh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus()
	}
	return -1
}
