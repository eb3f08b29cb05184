//go:build !linux

package sshtest

import "syscall"

// DieWithParent does nothing where the kernel has no parent-death
// signal: a child of a test binary that dies is left to be killed by hand.
func DieWithParent(a *syscall.SysProcAttr) {}
