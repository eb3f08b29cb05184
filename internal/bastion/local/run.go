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
// spec.Timeout passes (or spec.Expire is closed) or ctx is done, the
// group and every process carrying that id, wherever it went (setsid, a
// daemon's double fork), get SIGTERM, then SIGKILL once spec.Grace has
// passed with one still alive, and Run returns once none is. When the
// command ends by itself, any process it left in its group (a "cmd &")
// is ended the same way, so a build leaves nothing behind; a process that
// left the group is let be, as a daemon a job starts on purpose (ssh's
// ControlPersist master) must, and Run does not wait for it to close its
// output. While b.Owner is set, the group is recorded for KillOwner until
// it is gone.
//
// A ctx done before the start gives Canceled without running anything.
func (b *Bastion) Run(ctx context.Context, spec bastion.Spec, log io.Writer) (bastion.Outcome, error) {
	if ctx.Err() != nil {
		return bastion.Outcome{ExitCode: -1, Canceled: true}, nil
	}
	if err := b.checkOwner(); err != nil {
		return bastion.Outcome{}, &bastion.InfraError{Op: "run", Err: err}
	}
	var ev *events
	var evEntry string // the events file named in the environment
	if spec.Events != nil {
		var err error
		if ev, err = b.newEvents(spec.Events); err != nil {
			// The side channel is never worth failing the build for.
			fmt.Fprintf(log, "sortie: no events file: %v\n", err)
		} else {
			evEntry = bastion.EventsEnv + "=" + ev.path
		}
	}
	env, err := environ(spec.Env, evEntry)
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
	p, err := startProcess(spec.Command, dir, b.tag(env), log, b.record)
	if err != nil {
		return bastion.Outcome{}, &bastion.InfraError{Op: "run", Err: err}
	}
	if ev == nil {
		return p.wait(ctx, spec.Timeout, spec.Expire, grace), nil
	}
	ev.follow()
	o := p.wait(ctx, spec.Timeout, spec.Expire, grace)
	ev.finish()
	return o, nil
}

// environ is the process environment: this machine's values of
// bastion.BaseEnv, then env over them, then entry ("KEY=value", or "")
// over both, as a sorted KEY=VALUE list; never nil, so that exec does not
// fall back to inheriting Sortie's whole environment.
func environ(env map[string]string, entry string) ([]string, error) {
	entryKey, _, _ := strings.Cut(entry, "=")
	list := make([]string, 0, len(bastion.BaseEnv)+len(env)+1)
	for _, k := range bastion.BaseEnv {
		if _, set := env[k]; set || k == entryKey {
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
		if k != entryKey {
			list = append(list, k+"="+v)
		}
	}
	if entry != "" {
		list = append(list, entry)
	}
	slices.Sort(list)
	return list, nil
}

// process is a command started by startProcess: the leader of its process
// group, whose output a goroutine copies to the log.
type process struct {
	pid     int                 // the leader's, and its group's id
	status  *syscall.WaitStatus // once reaped
	mark    []byte              // "<bastion.RunEnv>=<id>": the environment entry of its processes
	log     io.Writer           // written by copy, then by wait once copy is done
	out     *os.File            // the read end of the output pipe
	exited  chan error          // the leader has exited, not yet reaped; buffered
	copied  chan struct{}       // the copy goroutine is done; closed
	untrack func()              // removes the group's record once it is gone
}

// startProcess starts /bin/sh -c command. It starts two goroutines that
// wait ends. track, if not nil, records the process group led by the new
// process and returns what undoes that; a group that cannot be recorded is
// killed and the start fails.
func startProcess(command, dir string, env []string, log io.Writer, track func(pgid int) (func(), error)) (*process, error) {
	if err := checkSupported(); err != nil {
		return nil, err
	}
	if log == nil {
		log = io.Discard
	}
	pr, pw, rfd, err := outputPipe()
	if err != nil {
		return nil, fmt.Errorf("pipe: %w", err)
	}
	// Last, so that it overrides a value in env: exec keeps the last.
	mark := bastion.RunEnv + "=" + bastion.NewRunID()
	env = append(env[:len(env):len(env)], mark)
	shArgv, shEnv := []string{"/bin/sh", "-c", command}, env
	path, argv, direct := shArgv[0], shArgv, false
	if p, d, ok := directArgv(command, env); ok {
		// sh exports PWD to what it runs; so does a direct start.
		path, argv, env, direct = p, d, append(env, "PWD="+dir), true
	}
	// syscall.ForkExec rather than exec.Cmd, which costs some 25 µs more a
	// start (a look-up, a context, goroutines) on runs of short jobs, or
	// os.StartProcess, which also opens a pidfd for every process and
	// registers its cleanup with the runtime (see forkExec). The child
	// gets the write end of the pipe directly, so no copying goroutine's
	// wait blocks while a leftover child holds it; stdin is /dev/null, as
	// exec.Cmd would make it.
	null, err := devNull()
	if err != nil {
		pr.Close()
		pw.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	attr := &syscall.ProcAttr{Dir: dir, Env: lastWins(env), Files: []uintptr{null.Fd(), pw.Fd(), pw.Fd()}, Sys: &syscall.SysProcAttr{Setpgid: true}}
	pid, err := forkExec(path, argv, attr)
	if err != nil && direct && execFailed(err) {
		// A program started directly that cannot be exec'd (missing, not
		// executable, a script without #!) is the shell's to run or to
		// say why not, with its message and exit status, as it would
		// have been without the direct start.
		attr.Env = lastWins(shEnv)
		pid, err = forkExec(shArgv[0], shArgv, attr)
	}
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("start: %w", err)
	}
	untrack := func() {}
	if track != nil {
		// The leader is alive or an unreaped zombie: pid is its group's id.
		u, err := track(pid)
		if err != nil {
			// Out of KillOwner's reach, it must not run at all.
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_, _ = wait4(pid)
			pr.Close()
			return nil, fmt.Errorf("record the process group: %w", err)
		}
		untrack = u
	}
	p := &process{pid: pid, mark: []byte(mark), log: log, out: pr, exited: make(chan error, 1), copied: make(chan struct{}), untrack: untrack}
	go func() {
		// pr, whose descriptor rfd is, stays open until wait has
		// received from p.exited.
		_ = waitBriefly(rfd)
		p.exited <- waitExited(pid)
	}()
	go p.copy(log)
	return p, nil
}

// execFailed says whether a start failed at the program's exec (or at
// the directory, where the shell fails the same way), not for a want of
// resources.
func execFailed(err error) bool {
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "fork/exec" {
		return false
	}
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EACCES) ||
		errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ELOOP)
}

// devNull is /dev/null open for reading, every build's stdin: opened once
// for the life of the process, not once a build.
// Blocking, out of the poller, like the pipe's write end.
var devNull = sync.OnceValues(func() (*os.File, error) {
	fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: os.DevNull, Err: err}
	}
	return os.NewFile(uintptr(fd), os.DevNull), nil
})

// copyBufs are the output copies' buffers: 32 KiB a build was most of
// what a build allocated, on runs of thousands of short jobs.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copy copies the output to log until every holder of the pipe closed it,
// or wait gives up on them. After a failed log write it keeps reading and
// drops the output, so that the build is not killed by SIGPIPE because its
// log could not be written; a logs.Writer keeps the error for its Close.
func (p *process) copy(log io.Writer) {
	defer close(p.copied)
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	failed := false
	for {
		n, err := p.out.Read(buf)
		if n > 0 && !failed {
			_, werr := log.Write(buf[:n])
			failed = werr != nil
		}
		if err != nil {
			return
		}
	}
}

// wait waits for the process, ends what Run says it ends, reaps it, and
// stops the goroutines of startProcess.
func (p *process) wait(ctx context.Context, timeout time.Duration, expire <-chan struct{}, grace time.Duration) bastion.Outcome {
	var out bastion.Outcome
	var timer <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		timer = t.C
	}
	exited := false
	select {
	case <-p.exited:
		exited = true
	case <-timer:
		out.TimedOut = true
	case <-expire:
		out.TimedOut = true
	case <-ctx.Done():
		out.Canceled = true
	}
	var stuck []int
	if exited {
		// Reap the leader first: then one kill(-pgid, 0) says whether the
		// job left anything in its group, where scanning /proc after every
		// build cost more than half of Sortie's CPU on a 10,000-job run.
		// Members that remain keep the group id from being reused; if
		// there are none, the id is free, but a pid just freed is not
		// reissued before the pid space wraps around.
		p.reap()
		if err := syscall.Kill(-p.pid, 0); !errors.Is(err, syscall.ESRCH) {
			stuck = p.end(true, false, grace)
		}
	} else {
		stuck = p.end(false, true, grace)
		// The rest is gone or killed: reap the leader.
		p.reap()
	}
	p.untrack()
	out.ExitCode = -1
	if p.status != nil && p.status.Exited() {
		out.ExitCode = p.status.ExitStatus()
	}

	if err := p.out.SetReadDeadline(time.Now().Add(drainDelay)); err != nil {
		p.out.Close()
	}
	<-p.copied
	p.out.Close()
	if len(stuck) > 0 {
		fmt.Fprintf(p.log, "sortie: processes %v of the job are still alive %v after SIGKILL\n", stuck, killWait)
	}
	return out
}

// reap waits for the leader, which has exited or been killed, and keeps
// its state.
func (p *process) reap() {
	if ws, err := wait4(p.pid); err == nil {
		p.status = &ws
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
	pgid := p.pid
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

// forkExec starts the program at path with argv and returns its pid; a
// failure is an *os.PathError, as os.StartProcess gives it, for
// execFailed. The process is known by its pid alone, as the rest of this
// file needs it (its group is killed by id, its exit seen by
// waitExited): no pidfd is opened, to be closed again, and nothing is
// left for the garbage collector, which took some 7 µs of Sortie's CPU a
// job on a run of 10,000 no-op jobs (docs/benchmarks.md). The pid stays
// this process's until wait4 reaps it.
func forkExec(path string, argv []string, attr *syscall.ProcAttr) (int, error) {
	pid, err := syscall.ForkExec(path, argv, attr)
	if err != nil {
		return 0, &os.PathError{Op: "fork/exec", Path: path, Err: err}
	}
	return pid, nil
}

// wait4 reaps the exited (or killed) process pid and returns its status.
func wait4(pid int) (syscall.WaitStatus, error) {
	for {
		var ws syscall.WaitStatus
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			return ws, err
		}
	}
}
