package config_test

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
)

func TestZZExamplesRun(t *testing.T) {
	cfg, err := config.Load("../../examples/quickstart")
	if err != nil {
		t.Fatal(err)
	}
	for _, pl := range cfg.PipelineOrder {
		p, _ := graph.Select(cfg, pl, nil)
		for _, j := range p.Jobs {
			job := cfg.Jobs[j.Name]
			cmds := append([]string{}, job.Install...)
			if job.Run != "" {
				cmds = append(cmds, job.Run)
			}
			for _, c := range cmds {
				cmd := exec.Command("/bin/sh", "-c", c)
				cmd.Dir = "/tmp/qs-src"
				cmd.Env = append(os.Environ(), "SORTIE_SRC=/tmp/qs-src", "SORTIE_COMMIT=0123456789abcdef0123456789abcdef01234567", "SORTIE_JOB="+j.Name, "SORTIE_PIPELINE="+pl, "SORTIE_BUILDSET=bs-1", "SORTIE_ATTEMPT=1")
				for k, v := range job.Env {
					cmd.Env = append(cmd.Env, k+"="+v)
				}
				start := time.Now()
				out, err := cmd.CombinedOutput()
				t.Logf("[%s/%s] %v err=%v\n%s", pl, j.Name, time.Since(start).Round(time.Millisecond), err, out)
				if err != nil {
					t.Error(err)
				}
			}
		}
	}
}
