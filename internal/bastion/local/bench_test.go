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

// BenchmarkRunNoop runs /bin/true as a build, two at a time as the bench's
// wide graph at parallelism 2 does, with an events writer as every build
// has, and reports Sortie's own CPU time a build (user and system, the
// children's excluded), which is what the bastion's share of a job costs:
//
//	go test ./internal/bastion/local -run '^$' -bench RunNoop -count 5
func BenchmarkRunNoop(b *testing.B) {
	bs := New(b.TempDir())
	dir := b.TempDir()
	env := map[string]string{"PATH": os.Getenv("PATH"), "SORTIE_JOB": "j"}
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.SetParallelism(1) // GOMAXPROCS goroutines: 2 on the bench's machine
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			o, err := bs.Run(context.Background(), bastion.Spec{Command: "/bin/true", Dir: dir, Env: env, Events: io.Discard}, io.Discard)
			if err != nil || o.ExitCode != 0 {
				b.Errorf("%+v %v", o, err)
				return
			}
		}
	})
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	user := time.Duration(after.Utime.Nano() - before.Utime.Nano())
	sys := time.Duration(after.Stime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64((user+sys).Microseconds())/float64(b.N), "self-cpu-µs/op")
	b.ReportMetric(float64(sys.Microseconds())/float64(b.N), "self-sys-µs/op")
}
