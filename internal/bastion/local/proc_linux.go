package local

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

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

// briefWait is how long a job's output pipe is watched, before the job's
// exit is waited for the usual way; see waitBriefly. A variable for tests.
var briefWait = time.Millisecond

// waitBriefly blocks the calling goroutine's thread for up to briefWait, or
// until fd, the read end of a job's output pipe, has output or is hung up:
// for a job that writes nothing and leaves nothing behind, until it exits.
//
// The thread keeps the Go scheduler's P while it waits, where waitExited's
// system call lets the runtime hand the P to another thread. Once the
// runtime's monitor has done that for one job, it checks every 20 µs and
// does it for every short job after it: two more thread switches a job,
// and a run of 10,000 no-op jobs some 10-20% slower, in about one run of
// three (docs/benchmarks.md). Holding the P instead, for at most briefWait
// a job start, is what the runtime does anyway in the runs it does not.
// As many goroutines as there are Ps may wait here at once, so for a
// millisecond nothing else of Sortie's runs: a job that needs Sortie
// before it ends (its output read) ends the wait with that output.
//
// It reports whether fd had output or was hung up.
func waitBriefly(fd int) bool {
	fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(int64(briefWait))
	// A raw system call does not tell the scheduler, which is the point.
	// A signal (a preemption for the collector) ends it early with EINTR.
	n, _, errno := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&fds[0])), 1, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	return errno == 0 && n == 1 && fds[0].Revents != 0
}

// outputPipe makes the pipe of a build's output. Only the read end, which
// Sortie reads, is in Go's poller; the write end, the child's, is left
// blocking, as the child needs it, rather than registered with the poller,
// made blocking again for the child and unregistered: three system calls
// a build that os.Pipe would cost.
func outputPipe() (r, w *os.File, rfd int, err error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		return nil, nil, -1, err
	}
	if err := syscall.SetNonblock(p[0], true); err != nil {
		syscall.Close(p[0])
		syscall.Close(p[1])
		return nil, nil, -1, err
	}
	// os.NewFile puts a non-blocking descriptor in the poller. r.Fd()
	// would make it blocking again, hence rfd.
	return os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1"), p[0], nil
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
