//go:build !linux

package local

import (
	"errors"
	"os"
	"syscall"
	"time"
)

// The local bastion needs to wait for a process without reaping it and to
// list the members of a process group, which it does the Linux way.

func checkSupported() error { return errors.New("the local bastion needs linux") }

func waitExited(pid int) error { return checkSupported() }

func scanProcs(pgid, leader int, mark []byte) (group, marked []int) { return nil, nil }

type procStat struct {
	state byte
	pgrp  int
	start uint64
}

func (s procStat) dead() bool { return true }

func readProcStat(pid int) (procStat, error) { return procStat{}, checkSupported() }

func allProcs() (map[int]procStat, error) { return nil, checkSupported() }

func bootID() (string, error) { return "", checkSupported() }

func newPipe() (int, *os.File, error) { return -1, nil, checkSupported() }

func closeFD(fd int) {}

type watcher struct{ exited bool }

func newWatcher(out, pidfd int) (*watcher, error)           { return nil, checkSupported() }
func (w *watcher) hasPidfd() bool                           { return false }
func (w *watcher) SetDeadline(t time.Time) error            { return checkSupported() }
func (w *watcher) poll() (readable, exited bool, err error) { return false, false, checkSupported() }
func (w *watcher) read(buf []byte, fn func([]byte))         {}
func (w *watcher) done() bool                               { return true }
func (w *watcher) outDone() bool                            { return true }
func (w *watcher) closeFDs()                                {}
func (w *watcher) close()                                   {}

func sysProcAttr(pidfd *int) *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
