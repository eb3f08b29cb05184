package buildset

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// Batch implements scheduler.Batcher: a turn of the scheduler's loop (a
// build's end and the starts it makes possible) is recorded in one
// transaction (store.Buildsets.WriteBuilds) instead of one each.
func (rc *recorder) Batch() scheduler.Batch { return &batch{rc: rc} }

// batch gathers a turn's writes; the observer hears of them once they
// are committed.
type batch struct {
	rc     *recorder
	writes []store.BuildWrite
	job    string   // the first write's build and what it is, to name
	what   string   // the batch in messages
	told   []func() // the observer's calls, made after the commit
}

func (b *batch) Len() int { return len(b.writes) }

func (b *batch) add(job, what string, told func(), writes ...store.BuildWrite) {
	if len(b.writes) == 0 {
		b.job, b.what = job, what
	}
	b.writes = append(b.writes, writes...)
	if told != nil && b.rc.r.Observer != nil {
		b.told = append(b.told, told)
	}
}

func (b *batch) AttemptStarted(_ context.Context, job string, n int, at time.Time) error {
	rc := b.rc
	f := rc.r.Semaphores.Fence()
	b.add(job, "start of attempt "+strconv.Itoa(n), func() { rc.r.Observer.AttemptStarted(job, n, at) },
		store.BuildWrite{Start: &store.StartAttemptParams{
			Attempt: &store.Attempt{
				BuildsetID: rc.bs.ID, Job: job, Number: n, Owner: f.Owner,
				StartedAt: at, Log: rc.r.logSink().Path(store.LogKey{BuildsetID: rc.bs.ID, Job: job, Attempt: n}),
			},
			Fence: f,
		}})
	return nil
}

func (b *batch) AttemptFinished(_ context.Context, job string, n int, res store.Result, msg string, at time.Time) error {
	rc := b.rc
	b.add(job, "end of attempt "+strconv.Itoa(n), nil, store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{
		BuildsetID: rc.bs.ID, Job: job, Number: n, Result: res, Error: msg, At: at, Fence: rc.r.Semaphores.Fence(),
	}})
	return nil
}

func (b *batch) BuildEnded(_ context.Context, job string, n int, ares store.Result, msg string, res store.Result, reason string, at time.Time) error {
	rc := b.rc
	f := rc.r.Semaphores.Fence()
	b.add(job, "end ("+string(res)+")", func() { rc.r.Observer.BuildFinished(job, res, reason, at) },
		store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{BuildsetID: rc.bs.ID, Job: job, Number: n, Result: ares, Error: msg, At: at, Fence: f}},
		store.BuildWrite{FinishBuild: &store.FinishBuildParams{BuildsetID: rc.bs.ID, Job: job, Result: res, Reason: reason, At: at, Fence: f}})
	return nil
}

func (b *batch) BuildFinished(_ context.Context, job string, res store.Result, reason string, at time.Time) error {
	rc := b.rc
	b.add(job, "end ("+string(res)+")", func() { rc.r.Observer.BuildFinished(job, res, reason, at) },
		store.BuildWrite{FinishBuild: &store.FinishBuildParams{
			BuildsetID: rc.bs.ID, Job: job, Result: res, Reason: reason, At: at, Fence: rc.r.Semaphores.Fence(),
		}})
	return nil
}

// Commit records the batch as the recorder records one change (waiting
// while the store refuses writes for now), then tells the observer.
func (b *batch) Commit(ctx context.Context) error {
	if len(b.writes) == 0 {
		return nil
	}
	writes, told, job, what := b.writes, b.told, b.job, b.what
	if len(writes) > 1 {
		what += fmt.Sprintf(" and %d more writes", len(writes)-1)
	}
	b.writes, b.told, b.job, b.what = nil, nil, "", ""
	err := b.rc.persist(job, what, func() error { return b.rc.r.Store.WriteBuilds(ctx, writes) })
	if err != nil {
		return err
	}
	for _, f := range told {
		f()
	}
	return nil
}
