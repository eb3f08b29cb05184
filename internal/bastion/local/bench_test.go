//go:build linux

package local

import (
	"os"
	"os/exec"
	"testing"

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
