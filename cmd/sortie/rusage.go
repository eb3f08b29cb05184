package main

import (
	"encoding/json"
	"os"
	"syscall"
	"time"
)

// rusageEnv names a file that a `sortie run` writes, as it exits, with the
// CPU time it used itself and the CPU time of the processes it started
// and waited for (the jobs, git): what the bench needs to give Sortie's
// own CPU a job, which the tool's and its children's CPU together (all
// that time(1) can see) does not tell apart. An environment variable
// rather than a flag, so that the bench can set it for older builds too,
// which ignore it.
const rusageEnv = "SORTIE_RUSAGE"

// Rusage is what the file of rusageEnv holds.
type Rusage struct {
	SelfUser     time.Duration `json:"self_user_ns"`
	SelfSys      time.Duration `json:"self_sys_ns"`
	ChildrenUser time.Duration `json:"children_user_ns"`
	ChildrenSys  time.Duration `json:"children_sys_ns"`
	// SelfSwitches counts the times one of Sortie's threads gave up its
	// core to wait (voluntary context switches): a run that hands its
	// threads' work around more waits more.
	SelfSwitches int64 `json:"self_voluntary_switches"`
}

// writeRusage writes the process's Rusage to the file rusageEnv names,
// if it names one and the command is run. A failure is not the run's:
// the file is then missing.
func writeRusage(args []string) {
	path := os.Getenv(rusageEnv)
	if path == "" || len(args) == 0 || args[0] != "run" {
		return
	}
	var self, kids syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) != nil || syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids) != nil {
		return
	}
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	data, err := json.Marshal(Rusage{
		SelfUser: tv(self.Utime), SelfSys: tv(self.Stime),
		ChildrenUser: tv(kids.Utime), ChildrenSys: tv(kids.Stime),
		SelfSwitches: self.Nvcsw,
	})
	if err != nil {
		return
	}
	_ = os.WriteFile(path, append(data, '\n'), 0o644)
}
