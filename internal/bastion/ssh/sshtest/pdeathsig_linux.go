package sshtest

import "syscall"

// DieWithParent has the child killed when the thread that started it
// exits.
func DieWithParent(a *syscall.SysProcAttr) { a.Pdeathsig = syscall.SIGKILL }
