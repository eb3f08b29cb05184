package pipeline_test

import (
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/pipeline"
)

func ExampleDecide() {
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	s := pipeline.Snapshot{Pipelines: []pipeline.Pipeline{
		{
			Name: "deploy", Manager: config.ManagerCoalesce, Precedence: config.PrecedenceHigh,
			Queued: []pipeline.Buildset{
				{ID: "d1", Commit: "aaa", Files: []string{"playbooks/zuul.yaml"}, CreatedAt: at(1), Seq: 1},
				{ID: "d2", Commit: "bbb", Files: []string{"inventory/base"}, CreatedAt: at(3), Seq: 3},
			},
		},
		{
			Name: "hourly", Manager: config.ManagerSupercedent, Precedence: config.PrecedenceNormal,
			Running: []pipeline.Buildset{{ID: "h1", Commit: "aaa"}},
			Queued: []pipeline.Buildset{
				{ID: "h2", Commit: "aaa", CreatedAt: at(0), Seq: 0},
				{ID: "h3", Commit: "bbb", CreatedAt: at(2), Seq: 2},
			},
		},
		{
			Name: "periodic", Manager: config.ManagerSerial, Precedence: config.PrecedenceLow,
			Paused: &pipeline.Pause{By: "alice", Reason: "disk full"},
			Queued: []pipeline.Buildset{{ID: "p1", Commit: "aaa", CreatedAt: at(0)}},
		},
	}}
	fmt.Print(pipeline.Decide(s))
	// Output:
	// supersede hourly/h2 by h3: superseded by h3 (commit bbb), a newer event of supercedent pipeline hourly
	// coalesce deploy/d1+d2 into new: 2 waiting and nothing running: one buildset for the newest commit bbb (from d2) with the union of their files (2) (coalesce)
	// wait hourly/h3: waiting behind h1 (supercedent: one at a time; a newer event replaces this one)
	// wait periodic/p1: pipeline periodic paused by alice: disk full
}
