package local

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// waitExited blocks until process pid has exited, without reaping it. The
// zombie left keeps pid, and so the process group of that id, from being
// reused while the rest of the group is dealt with.
func waitExited(pid int) error {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// scanProcs reads /proc once. It returns the live processes of process
// group pgid other than leader, and, if mark ("KEY=value") is not nil, the
// live processes whose environment holds it. Zombies are dead and do not
// count: whoever reaps them (init, here) may take its time; a zombie's
// environment reads empty.
func scanProcs(pgid, leader int, mark []byte) (group, marked []int) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	self := os.Getpid()
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == leader || pid == self {
			continue
		}
		stat, err := os.ReadFile("/proc/" + name + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		state, pg, ok := parseStat(stat)
		if !ok || state == 'Z' || state == 'X' {
			continue
		}
		if pg == pgid {
			group = append(group, pid)
			continue
		}
		if mark != nil {
			if env, err := os.ReadFile("/proc/" + name + "/environ"); err == nil && hasEntry(env, mark) {
				marked = append(marked, pid)
			}
		}
	}
	return group, marked
}

// parseStat returns the state and the process group of a /proc/<pid>/stat
// line: "pid (comm) state ppid pgrp ...", where comm may hold anything,
// parentheses and spaces included.
func parseStat(stat []byte) (state byte, pgrp int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 3 || len(f[0]) != 1 {
		return 0, 0, false
	}
	pg, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return 0, 0, false
	}
	return f[0][0], pg, true
}

// procStat is what KillOwner needs of a /proc/<pid>/stat line.
type procStat struct {
	state byte
	pgrp  int
	start uint64 // field 22: clock ticks from boot to the process's start
}

// dead reports whether the process has ended (a zombie not yet reaped).
func (s procStat) dead() bool { return s.state == 'Z' || s.state == 'X' }

// parseProcStat parses a /proc/<pid>/stat line; see parseStat.
func parseProcStat(stat []byte) (procStat, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procStat{}, false
	}
	// f[0] is field 3 (state), so field n is f[n-3].
	f := bytes.Fields(stat[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, false
	}
	pg, err := strconv.Atoi(string(f[2]))
	if err != nil {
		return procStat{}, false
	}
	start, err := strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return procStat{}, false
	}
	return procStat{state: f[0][0], pgrp: pg, start: start}, true
}

// readProcStat reads the stat of process pid, a zombie included.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	st, ok := parseProcStat(b)
	if !ok {
		return procStat{}, errors.New("cannot parse /proc/" + strconv.Itoa(pid) + "/stat")
	}
	return st, nil
}

// allProcs reads the stat of every process, zombies included, by pid.
func allProcs() (map[int]procStat, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	all := make(map[int]procStat, len(names))
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil {
			all[pid] = st
		}
	}
	return all, nil
}

// bootID is this boot's random id: a start time means nothing across a
// reboot, and pids are handed out again from the start.
var bootID = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" || strings.ContainsAny(id, " \t\n") {
		return "", errors.New("bad boot id " + strconv.Quote(id))
	}
	return id, nil
})

func checkSupported() error { return nil }

// newPipe returns the read end of a new pipe, close-on-exec and
// non-blocking, for a watcher, and the write end as a blocking file to give
// a child. Neither is in Go's poller: the watcher's epoll instance is.
func newPipe() (r int, w *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, nil, err
	}
	// The read end's flags are O_RDONLY alone: one fcntl sets them.
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return -1, nil, err
	}
	return p[0], os.NewFile(uintptr(p[1]), "|1"), nil
}

// watcher waits in its caller's goroutine for what a build's leader does:
// output on its pipe, the pipe's end, and, given a pidfd, its exit. It is
// an epoll instance holding the pipe's read end and the pidfd, itself
// parked in Go's poller, so that waiting for a build takes no goroutine or
// thread of its own and a deadline (SetDeadline) interrupts it. One
// goroutine at a time calls poll and read; SetDeadline may come from any.
type watcher struct {
	ep     *epoll
	out    int  // the pipe's read end; -1 once it reached its end
	pidfd  int  // -1 when none
	exited bool // the exit was reported
	dirty  bool // a descriptor may be left in ep: close it, do not reuse it
	evs    [2]unix.EpollEvent
	// check is w.check, made once: a closure made at every poll was
	// most of what watching a build allocated.
	check func(uintptr) bool
	// What the last check saw.
	readable, exit bool
	err            error
}

// epoll is an epoll instance in Go's poller.
type epoll struct {
	f  *os.File
	rc syscall.RawConn
}

// idleEpolls keeps a few empty epoll instances for the next builds:
// making one, putting it in Go's poller and undoing both for every build
// cost more system time than the goroutines the watcher replaced. An
// instance is put back only once every descriptor of its build was
// removed from it, so that it never reports one of an earlier build.
var idleEpolls = make(chan *epoll, 4)

// getEpoll returns an idle epoll instance, or a new one.
func getEpoll() (*epoll, error) {
	select {
	case e := <-idleEpolls:
		// Only a file in Go's poller takes a deadline; an earlier build's
		// is cleared.
		if err := e.f.SetReadDeadline(time.Time{}); err == nil {
			return e, nil
		}
		e.f.Close()
	default:
	}
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's poller; its flags
	// are O_RDWR alone.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, unix.O_RDWR|unix.O_NONBLOCK); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	e := &epoll{f: os.NewFile(uintptr(fd), "epoll")}
	if e.rc, err = e.f.SyscallConn(); err != nil {
		e.f.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	// Only a file in Go's poller takes a deadline: without one, a poll
	// could not be interrupted.
	if err := e.f.SetReadDeadline(time.Time{}); err != nil {
		e.f.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return e, nil
}

// newWatcher watches out (a non-blocking pipe it then owns) and, if not -1,
// pidfd (which it then owns too).
func newWatcher(out, pidfd int) (*watcher, error) {
	w := &watcher{out: out, pidfd: pidfd}
	ep, err := getEpoll()
	if err != nil {
		w.closeFDs()
		return nil, err
	}
	w.ep = ep
	w.check = w.checkOnce
	// The pidfd, readable for good once the leader has exited, is
	// reported once (EPOLLONESHOT).
	for _, e := range []unix.EpollEvent{{Events: unix.EPOLLIN, Fd: int32(out)}, {Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(pidfd)}} {
		if e.Fd < 0 {
			continue
		}
		if err := unix.EpollCtl(w.epfd(), unix.EPOLL_CTL_ADD, int(e.Fd), &e); err != nil {
			w.dirty = true
			w.close()
			return nil, fmt.Errorf("epoll: %w", err)
		}
	}
	return w, nil
}

func (w *watcher) epfd() int { return int(w.ep.f.Fd()) }

// forget removes fd from the epoll instance and closes it.
func (w *watcher) forget(fd int) {
	if err := unix.EpollCtl(w.epfd(), unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		w.dirty = true
	}
	unix.Close(fd)
}

// hasPidfd reports whether the watcher reports the leader's exit.
func (w *watcher) hasPidfd() bool { return w.pidfd >= 0 }

// SetDeadline makes a poll in progress or to come return
// os.ErrDeadlineExceeded once t has passed; zero means none.
func (w *watcher) SetDeadline(t time.Time) error { return w.ep.f.SetReadDeadline(t) }

// poll waits until the pipe can be read (or has reached its end), the
// leader has exited, or the deadline passes. An exit is reported once.
func (w *watcher) poll() (readable, exited bool, err error) {
	w.readable, w.exit, w.err = false, false, nil
	err = w.ep.rc.Read(w.check)
	if err == nil {
		err = w.err
	}
	if w.exit {
		w.exited = true
	}
	return w.readable, w.exit, err
}

// checkOnce takes what the epoll instance has ready, without waiting, and
// reports whether there was anything.
func (w *watcher) checkOnce(fd uintptr) bool {
	n, err := unix.EpollWait(int(fd), w.evs[:], 0)
	if err != nil {
		if errors.Is(err, unix.EINTR) {
			return false
		}
		w.err = err
		return true
	}
	for _, e := range w.evs[:n] {
		switch {
		case int(e.Fd) == w.out && w.out >= 0:
			w.readable = true
		case int(e.Fd) == w.pidfd && w.pidfd >= 0 && !w.exited:
			w.exit = true
		}
	}
	return n > 0
}

// read reads what the pipe holds into buf, calling fn with each part, until
// it would block; at the pipe's end it stops watching it.
func (w *watcher) read(buf []byte, fn func([]byte)) {
	for w.out >= 0 {
		n, err := unix.Read(w.out, buf)
		switch {
		case n > 0:
			fn(buf[:n])
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return
		default: // the end, or a broken pipe that will not mend
			w.forget(w.out)
			w.out = -1
		}
	}
}

// done reports whether the pipe reached its end and no exit is left to
// report.
func (w *watcher) done() bool { return w.out < 0 && (w.pidfd < 0 || w.exited) }

// outDone reports whether the pipe reached its end.
func (w *watcher) outDone() bool { return w.out < 0 }

func (w *watcher) closeFDs() {
	for _, fd := range []*int{&w.out, &w.pidfd} {
		if *fd < 0 {
			continue
		}
		if w.ep != nil {
			w.forget(*fd)
		} else {
			unix.Close(*fd)
		}
		*fd = -1
	}
}

// close releases everything, and keeps the epoll instance for another
// build if it is empty; the watcher is not used after.
func (w *watcher) close() {
	w.closeFDs()
	if w.ep == nil {
		return
	}
	if !w.dirty {
		select {
		case idleEpolls <- w.ep:
			w.ep = nil
			return
		default:
		}
	}
	w.ep.f.Close()
	w.ep = nil
}

// closeFD closes fd unless it is -1.
func closeFD(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

// sysProcAttr makes a child lead a process group of its own and has its
// pidfd stored in *pidfd (-1 when the kernel has none).
func sysProcAttr(pidfd *int) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, PidFD: pidfd}
}
