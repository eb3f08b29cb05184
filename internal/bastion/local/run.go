package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

const (
	// pollInterval is how soon after a signal a build's processes are
	// first checked for members still alive; the checks then come at
	// doubling intervals up to maxPoll, since a check reads all of /proc
	// (about 4 ms with 500 processes) and what has not ended at once is
	// waiting for SIGKILL anyway.
	pollInterval = 10 * time.Millisecond
	maxPoll      = 160 * time.Millisecond
	// killWait is how long processes may take to die after SIGKILL (one
	// stuck in the kernel, on a dead NFS server say, takes until the
	// kernel lets go) before the build stops waiting for them and says so
	// in its log.
	killWait = 10 * time.Second
	// drainDelay is how long output is still read once the process group
	// is gone. Only a process that left the group (setsid, a daemon) can
	// still hold the pipe then, and its output is not the build's.
	drainDelay = 500 * time.Millisecond
)

// Run runs spec.Command with /bin/sh -c in spec.Dir ("" means the workdir)
// with exactly spec.Env as its environment, nothing inherited, and stdout
// and stderr merged into one pipe copied to log.
//
// The command leads a process group of its own, and every process it
// starts carries bastion.RunEnv, set to an id of this Run alone. When
// spec.Timeout passes or ctx is done, the group and every process carrying
// that id, wherever it went (setsid, a daemon's double fork), get SIGTERM,
// then SIGKILL once spec.Grace has passed with one still alive, and Run
// returns once none is. When the command ends by itself, any process it
// left in its group (a "cmd &") is ended the same way, so a build leaves
// nothing behind; a process that left the group is let be, as a daemon a
// job starts on purpose (ssh's ControlPersist master) must, and Run does
// not wait for it to close its output. While b.Owner is set, the group is
// recorded for KillOwner until it is gone.
//
// Run waits in its caller's goroutine: it copies the output, follows the
// events file and watches for the leader's exit, the timeout and ctx
// there, and starts goroutines (which it waits for) only to end a process
// tree that did not end by itself.
//
// A ctx done before the start gives Canceled without running anything.
func (b *Bastion) Run(ctx context.Context, spec bastion.Spec, log io.Writer) (bastion.Outcome, error) {
	if ctx.Err() != nil {
		return bastion.Outcome{ExitCode: -1, Canceled: true}, nil
	}
	if err := b.checkOwner(); err != nil {
		return bastion.Outcome{}, &bastion.InfraError{Op: "run", Err: err}
	}
	id := bastion.NewRunID()
	var ev *events
	eventsPath := ""
	if spec.Events != nil {
		var err error
		if ev, err = b.newEvents(id, spec.Events); err != nil {
			// The side channel is never worth failing the build for.
			fmt.Fprintf(log, "sortie: no events file: %v\n", err)
		} else {
			eventsPath = ev.path
		}
	}
	env, err := environ(spec.Env, eventsPath)
	if err != nil {
		return bastion.Outcome{}, &bastion.InfraError{Op: "run", Err: err}
	}
	dir := spec.Dir
	if dir == "" {
		dir = b.workdir
	}
	grace := spec.Grace
	if grace <= 0 {
		grace = bastion.DefaultGrace
	}
	p, err := b.startProcess(spec.Command, dir, b.tag(env), id, log)
	if err != nil {
		return bastion.Outcome{}, &bastion.InfraError{Op: "run", Err: err}
	}
	o := p.wait(ctx, spec.Timeout, grace, ev)
	if ev != nil {
		ev.finish()
	}
	return o, nil
}

// environ is the process environment: this machine's values of
// bastion.BaseEnv, then env over them, then, if not "", bastion.EventsEnv
// set to events, as a sorted KEY=VALUE list with room for the entries
// startProcess adds; never nil, so that exec does not fall back to
// inheriting Sortie's whole environment.
func environ(env map[string]string, events string) ([]string, error) {
	list := make([]string, 0, len(bastion.BaseEnv)+len(env)+4)
	for _, k := range bastion.BaseEnv {
		if _, over := env[k]; over {
			continue
		}
		if v, ok := os.LookupEnv(k); ok {
			list = append(list, k+"="+v)
		}
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("bad environment variable %q", k)
		}
		if events != "" && k == bastion.EventsEnv {
			continue
		}
		list = append(list, k+"="+v)
	}
	if events != "" {
		list = append(list, bastion.EventsEnv+"="+events)
	}
	slices.Sort(list)
	return list, nil
}

// devNull is the standard input of every process: one descriptor, open
// for as long as Sortie runs, rather than an open and a close a build.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// copyBufs are the buffers output is copied through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// process is a command started by startProcess: the leader of its process
// group, whose output it copies to the log and whose exit it watches with
// a watcher.
type process struct {
	proc    *os.Process
	state   *os.ProcessState // once reaped
	mark    []byte           // "<bastion.RunEnv>=<id>": the environment entry of its processes
	log     io.Writer        // written by whoever copies, then by wait once copying is done
	failed  bool             // a write to log failed: drop the rest
	buf     *[]byte          // from copyBufs
	w       *watcher
	exited  chan error    // the leader has exited, not yet reaped; buffered; for end
	copied  chan struct{} // closed when the goroutine of goCopy is done; nil before it
	untrack func()        // removes the group's record once it is gone
}

// startProcess starts /bin/sh -c command, with bastion.RunEnv=id, and
// nothing to wait for it yet (wait does). It records the process group led
// by the new process (b.record); a group that cannot be recorded is killed
// and the start fails.
func (b *Bastion) startProcess(command, dir string, env []string, id string, log io.Writer) (*process, error) {
	if err := checkSupported(); err != nil {
		return nil, err
	}
	if log == nil {
		log = io.Discard
	}
	null, err := devNull()
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	pr, pw, err := newPipe()
	if err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	// Last, so that it overrides a value in env: exec keeps the last.
	mark := bastion.RunEnv + "=" + id
	env = append(env[:len(env):len(env)], mark)
	sh := []string{"/bin/sh", "-c", command}
	argv, procEnv := sh, env
	direct, isDirect := directArgv(command, env)
	if isDirect {
		// sh exports PWD to what it runs; so does a direct start.
		argv, procEnv = direct, append(env, "PWD="+dir)
	}
	// os.StartProcess rather than exec.Cmd, which costs some 25 µs more a
	// start (a look-up, a context, goroutines) on runs of short jobs. The
	// child gets the write end of the pipe directly, so no copying
	// waits while a leftover child holds it; stdin is /dev/null, as
	// exec.Cmd would make it. The pidfd tells the leader's exit to the
	// watcher without a goroutine blocked in wait.
	pidfd := -1
	pidfdp := &pidfd
	if b.noPidfd {
		pidfdp = nil
	}
	attr := &os.ProcAttr{Dir: dir, Env: lastWins(procEnv), Files: []*os.File{null, pw, pw}, Sys: sysProcAttr(pidfdp)}
	proc, err := os.StartProcess(argv[0], argv, attr)
	if err != nil && isDirect {
		// What sh makes of what could not be exec'd: a script without
		// #!, or the message and status of a program not found.
		attr.Env = lastWins(env)
		proc, err = os.StartProcess(sh[0], sh, attr)
	}
	pw.Close()
	if err != nil {
		closeFD(pr)
		return nil, fmt.Errorf("start: %w", err)
	}
	pid := proc.Pid
	// The leader is alive or an unreaped zombie: pid is its group's id.
	untrack, err := b.record(pid)
	if err != nil {
		// Out of KillOwner's reach, it must not run at all.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_, _ = proc.Wait()
		closeFD(pr)
		closeFD(pidfd)
		return nil, fmt.Errorf("record the process group: %w", err)
	}
	w, err := newWatcher(pr, pidfd)
	if err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_, _ = proc.Wait()
		untrack()
		return nil, fmt.Errorf("start: %w", err)
	}
	p := &process{proc: proc, mark: []byte(mark), log: log, w: w, buf: copyBufs.Get().(*[]byte), exited: make(chan error, 1), untrack: untrack}
	if !w.hasPidfd() {
		// No pidfd (a kernel before 5.3): a goroutine waits for the exit.
		go func() { p.exited <- waitExited(pid) }()
		p.goCopy()
	}
	return p, nil
}

// write copies output to the log. After a failed log write it drops the
// output, so that the build is not killed by SIGPIPE because its log could
// not be written; a logs.Writer keeps the error for its Close.
func (p *process) write(b []byte) {
	if !p.failed {
		_, err := p.log.Write(b)
		p.failed = err != nil
	}
}

// goCopy hands the watcher to a goroutine, which copies the output to the
// log until the pipe's end or the watcher's deadline (set by wait), and
// sends the leader's exit to p.exited if the watcher sees it. The caller
// polls the watcher no more.
func (p *process) goCopy() {
	if p.copied != nil {
		return
	}
	p.copied = make(chan struct{})
	_ = p.w.SetDeadline(time.Time{})
	go func() {
		defer close(p.copied)
		for !p.w.done() {
			readable, exited, err := p.w.poll()
			if readable {
				p.w.read(*p.buf, p.write)
			}
			if exited {
				p.exited <- nil
			}
			if err != nil {
				if p.w.hasPidfd() && !p.w.exited && !errors.Is(err, os.ErrDeadlineExceeded) {
					// The watcher failed before the exit (it never has):
					// whoever waits for it must still hear of it.
					p.exited <- waitExited(p.proc.Pid)
				}
				return
			}
		}
	}()
}

// watch waits, in the caller's goroutine, for the leader to exit, the
// timeout to pass or ctx to be done, copying the output meanwhile and the
// events file every eventsPoll if ev is set. ok is false when the watcher
// cannot tell the exit (goCopy runs then and wait watches p.exited).
func (p *process) watch(ctx context.Context, timeout time.Duration, ev *events) (exited, timedOut, canceled, ok bool) {
	if !p.w.hasPidfd() {
		return false, false, false, false
	}
	if ctx.Done() != nil {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(fired)
			_ = p.w.SetDeadline(time.Unix(1, 0))
		})
		defer func() {
			if !stop() {
				<-fired
			}
		}()
	}
	var timeoutAt, nextPoll, deadline time.Time
	now := time.Now()
	if timeout > 0 {
		timeoutAt = now.Add(timeout)
	}
	if ev != nil {
		nextPoll = now.Add(eventsPoll)
	}
	for {
		d := timeoutAt
		if !nextPoll.IsZero() && (d.IsZero() || nextPoll.Before(d)) {
			d = nextPoll
		}
		if !d.Equal(deadline) {
			deadline = d
			if err := p.w.SetDeadline(d); err != nil {
				return false, false, false, false
			}
		}
		if ctx.Err() != nil {
			return false, false, true, true
		}
		readable, exited, err := p.w.poll()
		if readable {
			p.w.read(*p.buf, p.write)
		}
		switch {
		case exited:
			return true, false, false, true
		case errors.Is(err, os.ErrDeadlineExceeded):
			if ctx.Err() != nil {
				return false, false, true, true
			}
			now := time.Now()
			if !timeoutAt.IsZero() && !now.Before(timeoutAt) {
				return false, true, false, true
			}
			if !nextPoll.IsZero() && !now.Before(nextPoll) {
				ev.copy()
				nextPoll = now.Add(eventsPoll)
			}
		case err != nil:
			return false, false, false, false
		}
	}
}

// await is watch with the exit told by p.exited, while goCopy copies.
func (p *process) await(ctx context.Context, timeout time.Duration, ev *events) (exited, timedOut, canceled bool) {
	var timer, tick <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	if ev != nil {
		t := time.NewTicker(eventsPoll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-p.exited:
			return true, false, false
		case <-timer:
			return false, true, false
		case <-ctx.Done():
			return false, false, true
		case <-tick:
			ev.copy()
		}
	}
}

// wait waits for the process, ends what Run says it ends, reaps it, and
// stops and waits for what it started.
func (p *process) wait(ctx context.Context, timeout, grace time.Duration, ev *events) bastion.Outcome {
	defer p.release()
	var out bastion.Outcome
	exited, timedOut, canceled, ok := p.watch(ctx, timeout, ev)
	if !ok {
		p.goCopy()
		exited, timedOut, canceled = p.await(ctx, timeout, ev)
	}
	out.TimedOut, out.Canceled = timedOut, canceled
	var stuck []int
	if exited {
		// Reap the leader first: then one kill(-pgid, 0) says whether the
		// job left anything in its group, where scanning /proc after every
		// build cost more than half of Sortie's CPU on a 10,000-job run.
		// Members that remain keep the group id from being reused; if
		// there are none, the id is free, but a pid just freed is not
		// reissued before the pid space wraps around.
		p.reap()
		if err := syscall.Kill(-p.proc.Pid, 0); !errors.Is(err, syscall.ESRCH) {
			// Their output is copied while they are ended.
			p.goCopy()
			stuck = p.end(true, false, grace)
		}
	} else {
		p.goCopy() // which tells end the leader's exit
		stuck = p.end(false, true, grace)
		// The rest is gone or killed: reap the leader.
		p.reap()
	}
	p.untrack()
	out.ExitCode = -1
	if p.state != nil {
		out.ExitCode = p.state.ExitCode()
	}

	// What is left of the output comes at once, unless a process that
	// left the group holds the pipe.
	_ = p.w.SetDeadline(time.Now().Add(drainDelay))
	if p.copied != nil {
		<-p.copied
	} else {
		for !p.w.outDone() {
			readable, _, err := p.w.poll()
			if readable {
				p.w.read(*p.buf, p.write)
			}
			if err != nil {
				break
			}
		}
	}
	if len(stuck) > 0 {
		fmt.Fprintf(p.log, "sortie: processes %v of the job are still alive %v after SIGKILL\n", stuck, killWait)
	}
	return out
}

// release closes the watcher and gives back the buffer, once nothing
// copies.
func (p *process) release() {
	p.w.close()
	copyBufs.Put(p.buf)
	p.buf = nil
}

// reap waits for the leader, which has exited or been killed, and keeps
// its state.
func (p *process) reap() {
	if st, err := p.proc.Wait(); err == nil {
		p.state = st
	}
}

// lastWins drops every entry of env whose key comes again later, so that
// an entry appended last overrides, as exec.Cmd does: a program's getenv
// may return the first of two.
func lastWins(env []string) []string {
	seen := make(map[string]bool, len(env))
	out := make([]string, len(env))
	i := len(out)
	for j := len(env) - 1; j >= 0; j-- {
		k, _, _ := strings.Cut(env[j], "=")
		if seen[k] {
			continue
		}
		seen[k] = true
		i--
		out[i] = env[j]
	}
	return out[i:]
}

// end ends the process group led by the process and, if sweep is set,
// every process carrying its run id (p.mark) wherever it went. The group
// gets SIGTERM at once, each process found by its id when first seen
// (one may fork while this runs); once grace has passed with any of them
// alive, all of them get SIGKILL, again at every check until none is left.
// exited says whether the leader has exited already, in which case a group
// without other members is left alone. end returns once the leader has
// exited and nothing else is left, or, for processes that outlive SIGKILL
// by killWait, once the leader has exited; it returns those.
func (p *process) end(exited, sweep bool, grace time.Duration) (stuck []int) {
	pgid := p.proc.Pid
	var mark []byte
	if sweep {
		mark = p.mark
	}
	scan := func() (group, marked []int) {
		group, marked = scanProcs(pgid, pgid, mark)
		if len(group)+len(marked) == 0 && mark != nil {
			// A process in the middle of an exec shows an empty
			// environment for an instant: look twice.
			group, marked = scanProcs(pgid, pgid, mark)
		}
		return group, marked
	}
	group, marked := scan()
	if exited && len(group) == 0 && len(marked) == 0 {
		return nil
	}
	// The leader is alive or a zombie not yet reaped, or a member is left:
	// pgid is still this group's.
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	termed := map[int]bool{}
	term := func(pids []int) {
		for _, pid := range pids {
			if !termed[pid] {
				termed[pid] = true
				// Read from /proc a moment ago: the pid could only be
				// another process's if the process died and the pid space
				// wrapped around since.
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
	}
	term(marked)

	leader := p.exited
	if exited {
		leader = nil
	}
	deadline := time.NewTimer(grace)
	defer deadline.Stop()
	interval := pollInterval
	poll := time.NewTimer(interval)
	defer poll.Stop()
	var killedAt time.Time
	for {
		select {
		case <-leader:
			exited, leader = true, nil
		case <-poll.C:
			interval = min(2*interval, maxPoll)
			poll.Reset(interval)
		case <-deadline.C:
			killedAt = time.Now()
		}
		group, marked = scan()
		left := len(group) + len(marked)
		switch {
		case exited && left == 0:
			return nil
		case killedAt.IsZero():
			term(marked)
		case exited && time.Since(killedAt) > killWait:
			return append(group, marked...)
		default:
			if !exited || len(group) > 0 {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			}
			for _, pid := range marked {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// exitError describes an install command that did not succeed.
func exitError(o bastion.Outcome) error {
	switch {
	case o.ExitCode >= 0:
		return fmt.Errorf("exit status %d", o.ExitCode)
	default:
		return errors.New("killed by a signal")
	}
}
