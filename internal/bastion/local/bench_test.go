//go:build linux

package local

import (
	"context"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// BenchmarkScanProcs is one check of a build's processes while a timeout
// or a cancel ends them, on a bastion running 500 other processes, each
// with a job's environment:
//
//	go test ./internal/bastion/local -run '^$' -bench ScanProcs
func BenchmarkScanProcs(b *testing.B) {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=/home/deploy", "LANG=C.UTF-8",
		bastion.OwnerEnv + "=srv-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "SORTIE_BUILDSET=0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"SORTIE_JOB=service-zuul", bastion.RunEnv + "=" + bastion.NewRunID()}
	for range 500 {
		cmd := exec.Command("sleep", "300")
		cmd.Env = env
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	mark := []byte(bastion.RunEnv + "=" + bastion.NewRunID())
	b.ResetTimer()
	for b.Loop() {
		scanProcs(-1, -1, mark)
	}
}

// BenchmarkRunTrue is a build of a no-op job on the local bastion, as many
// at a time as GOMAXPROCS (two on the two cores of the bench's machines,
// as in its wide graph): reported as Sortie's own CPU time a build (user and system, without the children's), which is steadier on
// a shared machine than the wall time, most of which is the children's:
//
//	go test ./internal/bastion/local -run '^$' -bench RunTrue -benchtime 5000x
func BenchmarkRunTrue(b *testing.B) {
	benchmarkRun(b, bastion.Spec{Command: "true", Env: map[string]string{"PATH": os.Getenv("PATH")}})
}

// BenchmarkRunTrueEvents is BenchmarkRunTrue with an events file offered,
// as every build of Sortie's has, which the job does not make, as most
// jobs do not:
//
//	go test ./internal/bastion/local -run '^$' -bench RunTrueEvents -benchtime 5000x
func BenchmarkRunTrueEvents(b *testing.B) {
	benchmarkRun(b, bastion.Spec{Command: "true", Env: map[string]string{"PATH": os.Getenv("PATH")}, Events: io.Discard})
}

func benchmarkRun(b *testing.B, spec bastion.Spec) {
	bst := New(b.TempDir())
	b.SetParallelism(1) // GOMAXPROCS goroutines
	before := selfCPU(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o, err := bst.Run(context.Background(), spec, io.Discard)
			if err != nil || o.ExitCode != 0 {
				b.Errorf("run: %v %+v", err, o)
				return
			}
		}
	})
	b.ReportMetric(float64((selfCPU(b)-before).Microseconds())/float64(b.N), "own-µs/op")
}

// selfCPU is this process's CPU time so far, its children's excluded.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLookPath is the look-up of a job's program (true) in this
// machine's PATH, one stat a directory until it is found:
//
//	go test ./internal/bastion/local -run '^$' -bench LookPath
func BenchmarkLookPath(b *testing.B) {
	env := []string{"PATH=" + os.Getenv("PATH")}
	for b.Loop() {
		if _, ok := lookPath("true", env); !ok {
			b.Fatal("true not in PATH")
		}
	}
}
