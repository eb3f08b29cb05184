package sqlite_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// BenchmarkJobWrites is what the store costs a run per job of a chain:
// the end of one build and the start of the next, as two transactions
// (FinishAttemptAndBuild, then StartAttempt), as one (WriteBuilds, the
// journal off), or journaled (WriteBuilds), timed until the journal is
// applied: on two cores, its applier runs beside the writer, so the
// process's CPU a job (cpu-µs/op, getrusage) is reported too.
//
//	go test ./internal/store/sqlite -run '^$' -bench JobWrites -benchtime 5000x -count 5
func BenchmarkJobWrites(b *testing.B) {
	for _, mode := range []string{"two transactions", "one batch", "one batch, journaled"} {
		b.Run(mode, func(b *testing.B) {
			// As a run writes: its context cannot be cancelled, so that
			// neither database/sql nor the driver watches it in a goroutine.
			ctx := context.Background()
			s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "sortie.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if mode != "one batch, journaled" {
				sqlite.JournalOff(s)
			}
			f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "run", Kind: store.OwnerRun, Lease: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			jobs := make([]string, b.N+1)
			for i := range jobs {
				jobs[i] = fmt.Sprintf("job-%d", i)
			}
			if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{
				Buildset: &store.Buildset{ID: "bs", Pipeline: "bench", Commit: "c", CreatedAt: time.Now()}, Jobs: jobs,
			}); err != nil {
				b.Fatal(err)
			}
			start := func(job string) *store.StartAttemptParams {
				return &store.StartAttemptParams{Attempt: &store.Attempt{BuildsetID: "bs", Job: job, Number: 1, Owner: "run",
					StartedAt: time.Now(), Log: job + ".log"}, Fence: f}
			}
			if err := s.StartAttempt(ctx, *start(jobs[0])); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			cpu := selfCPU(b)
			for i := range b.N {
				now := time.Now()
				a := store.FinishAttemptParams{BuildsetID: "bs", Job: jobs[i], Number: 1, Result: store.Success, At: now, Fence: f}
				e := store.FinishBuildParams{BuildsetID: "bs", Job: jobs[i], Result: store.Success, At: now, Fence: f}
				if mode != "two transactions" {
					err = s.WriteBuilds(ctx, []store.BuildWrite{{FinishAttempt: &a}, {FinishBuild: &e}, {Start: start(jobs[i+1])}})
				} else if err = s.FinishAttemptAndBuild(ctx, a, e); err == nil {
					err = s.StartAttempt(ctx, *start(jobs[i+1]))
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if err := sqlite.Settle(ctx, s); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((selfCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// selfCPU is the CPU time this process has used, user and system.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
