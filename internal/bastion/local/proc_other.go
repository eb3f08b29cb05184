//go:build !linux

package local

import (
	"errors"
	"os"
)

// The local bastion needs to wait for a process without reaping it and to
// list the members of a process group, which it does the Linux way.

func checkSupported() error { return errors.New("the local bastion needs linux") }

func waitExited(pid int) error { return checkSupported() }

func waitBriefly(fd int) bool { return false }

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

func outputPipe() (r, w *os.File, rfd int, err error) { return nil, nil, -1, checkSupported() }
