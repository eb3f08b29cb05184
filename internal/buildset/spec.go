package buildset

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

// Spec is everything a buildset needs to run, frozen from the config when
// the buildset is made and kept in the store with it (store.Buildset.Spec).
// A buildset runs its Spec, not the config of the moment: a reload after it
// was made changes nothing in it, and a server restarted after a crash runs
// what was frozen even if the config on disk changed meanwhile.
//
// It holds no secret: secret_env values are read from Sortie's environment
// when an attempt starts; only their names are kept.
type Spec struct {
	Pipeline   string `json:"pipeline"`
	Precedence int    `json:"precedence"`
	// Semaphore is the pipeline's semaphore, held by the whole buildset;
	// nil for none.
	Semaphore   *SemaphoreSpec `json:"semaphore,omitempty"`
	MaxParallel int            `json:"max_parallel"`
	// Jobs has every selected job, by name.
	Jobs map[string]JobSpec `json:"jobs"`
	// Secrets names every secret_env of the config: their values are
	// redacted from every log of the buildset.
	Secrets []string `json:"secrets,omitempty"`
	// Reports are the reporters of each event of the buildset.
	Reports map[ReportEvent][]ReporterSpec `json:"reports,omitempty"`
}

// SemaphoreSpec is a semaphore with its max as the config said.
type SemaphoreSpec struct {
	Name string `json:"name"`
	Max  int    `json:"max"`
}

// JobSpec is one job as it runs.
type JobSpec struct {
	Bootstrap bool `json:"bootstrap,omitempty"`
	// Install is the bootstrap job's install commands.
	Install []string `json:"install,omitempty"`
	// Command is the shell command; "" for a bootstrap job that only
	// installs.
	Command    string            `json:"command,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	SecretEnv  []string          `json:"secret_env,omitempty"`
	Timeout    time.Duration     `json:"timeout,omitempty"`
	Attempts   int               `json:"attempts"`
	Semaphores map[string]int    `json:"semaphores,omitempty"`
	// Weight orders ready jobs until history exists (duration_hint, or the
	// mean of the hints given, or 1s).
	Weight time.Duration `json:"weight"`
}

// Freeze takes from cfg what the plan's jobs need to run.
func Freeze(cfg *config.Config, plan *graph.Plan) (*Spec, error) {
	pl := cfg.Pipelines[plan.Pipeline]
	if pl == nil {
		return nil, &graph.UnknownPipelineError{Pipeline: plan.Pipeline}
	}
	s := &Spec{
		Pipeline: plan.Pipeline, Precedence: pl.Precedence.Rank(),
		MaxParallel: cfg.Limits.MaxParallel, Jobs: map[string]JobSpec{},
		Reports: freezeReports(cfg, pl),
	}
	if name := pl.Semaphore.Name; name != "" {
		s.Semaphore = &SemaphoreSpec{Name: name, Max: cfg.Semaphores[name].Max}
	}
	weight := graph.HintWeights(cfg, plan)
	for _, j := range plan.Jobs {
		job := cfg.Jobs[j.Name]
		if job == nil {
			return nil, fmt.Errorf("job %s of the plan is not in the config", j.Name)
		}
		js := JobSpec{
			Bootstrap: job.Bootstrap, Install: job.Install, Command: command(job),
			Env: job.Env, SecretEnv: job.SecretEnv, Timeout: job.Timeout,
			Attempts: job.Attempts, Weight: weight(j.Name),
		}
		if len(job.Semaphores) > 0 {
			js.Semaphores = map[string]int{}
			for _, r := range job.Semaphores {
				js.Semaphores[r.Name] = cfg.Semaphores[r.Name].Max
			}
		}
		s.Jobs[j.Name] = js
	}
	seen := map[string]bool{}
	for _, j := range cfg.Jobs {
		for _, name := range j.SecretEnv {
			if !seen[name] {
				seen[name] = true
				s.Secrets = append(s.Secrets, name)
			}
		}
	}
	sort.Strings(s.Secrets)
	return s, nil
}

// SpecOf decodes the Spec frozen into a buildset.
func SpecOf(bs *store.Buildset) (*Spec, error) {
	if len(bs.Spec) == 0 {
		return nil, fmt.Errorf("buildset %s has no frozen spec (made by an older sortie): trigger it again", bs.ID)
	}
	var s Spec
	if err := json.Unmarshal(bs.Spec, &s); err != nil {
		return nil, fmt.Errorf("buildset %s: decode its spec: %w", bs.ID, err)
	}
	return &s, nil
}
