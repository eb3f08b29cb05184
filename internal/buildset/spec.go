package buildset

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
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
	// Mode says whether playbooks only check what they would change, and
	// on which hosts: frozen with the buildset, shown with it.
	Mode
}

// Mode is how a buildset runs its playbooks. A `playbook:` job gets it as
// ansible-playbook's options (--check --diff, --limit), a `run:` job as
// SORTIE_CHECK=1 and SORTIE_LIMIT, for its own ansible-playbook calls.
type Mode struct {
	// Check runs in check mode: what would change, with the diffs,
	// changing nothing.
	Check bool `json:"check,omitempty"`
	// Limit, when set, is an Ansible host pattern the plays are limited
	// to.
	Limit string `json:"limit,omitempty"`
}

// MaxLimit is the longest host pattern a buildset takes.
const MaxLimit = 1000

// CheckLimit refuses a host pattern that no shell or environment can
// carry as given: a control character (a newline, a NUL), or more than
// MaxLimit bytes.
func CheckLimit(limit string) error {
	if len(limit) > MaxLimit {
		return fmt.Errorf("limit: %d bytes, more than %d", len(limit), MaxLimit)
	}
	for _, c := range limit {
		if c < ' ' || c == 0x7f {
			return fmt.Errorf("limit %q: a control character; give an Ansible host pattern (web*:!web03)", limit)
		}
	}
	return nil
}

// Allowed refuses a check mode or limit asked of a pipeline (pl, named
// name) where it cannot be kept apart: a supercedent pipeline would let a
// check run replace a real deploy waiting, and a coalesce one merge them
// into one. A nil pl is left to whoever finds the pipeline unknown.
func (m Mode) Allowed(name string, pl *config.Pipeline) error {
	if err := CheckLimit(m.Limit); err != nil {
		return err
	}
	if pl == nil || (!m.Check && m.Limit == "") || (pl.Check && m.Limit == "") {
		return nil
	}
	switch pl.Manager {
	case config.ManagerSupercedent, config.ManagerCoalesce:
		return fmt.Errorf("pipeline %s is %s: its waiting buildsets are replaced or merged, and a check or limited run must not stand for a deploy; trigger a serial or independent pipeline (or one with check: true, for previews)", name, pl.Manager)
	}
	return nil
}

// String says the mode for people: "check mode", "limit web*", both, or
// "" for a plain run.
func (m Mode) String() string {
	var parts []string
	if m.Check {
		parts = append(parts, "check mode")
	}
	if m.Limit != "" {
		parts = append(parts, "limit "+m.Limit)
	}
	return strings.Join(parts, ", ")
}

// Env adds the mode to a job's environment: SORTIE_CHECK=1 in check mode,
// SORTIE_LIMIT with a limit.
func (m Mode) Env(env map[string]string) {
	if m.Check {
		env["SORTIE_CHECK"] = "1"
	}
	if m.Limit != "" {
		env["SORTIE_LIMIT"] = m.Limit
	}
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

// Freeze takes from cfg what the plan's jobs need to run, in mode (the
// pipeline's check adds to the event's).
func Freeze(cfg *config.Config, plan *graph.Plan, mode Mode) (*Spec, error) {
	pl := cfg.Pipelines[plan.Pipeline]
	if pl == nil {
		return nil, &graph.UnknownPipelineError{Pipeline: plan.Pipeline}
	}
	if err := CheckLimit(mode.Limit); err != nil {
		return nil, err
	}
	mode.Check = mode.Check || pl.Check
	s := &Spec{
		Pipeline: plan.Pipeline, Precedence: pl.Precedence.Rank(),
		MaxParallel: cfg.Limits.MaxParallel, Jobs: map[string]JobSpec{}, Mode: mode,
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
			Bootstrap: job.Bootstrap, Install: job.Install, Command: command(job, mode),
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

// ModeOf reads the mode a buildset was made with: the one kept apart
// (store.Buildset.Mode), else the one frozen into its spec; the zero Mode
// when it has neither.
func ModeOf(bs *store.Buildset) Mode {
	var m Mode
	if bs.Mode != nil {
		if json.Unmarshal(bs.Mode, &m) != nil {
			return Mode{}
		}
		return m
	}
	// A buildset made before the mode was kept apart: only the spec's
	// top-level "check" and "limit" are decoded: the rest of a
	// 10,000-job spec (some 650 KB) is skipped, not parsed, where
	// json.Unmarshal parsed it all for every report and hosts read.
	err := topLevel(bs.Spec, func(key string, value []byte) error {
		switch key {
		case "check":
			return json.Unmarshal(value, &m.Check)
		case "limit":
			return json.Unmarshal(value, &m.Limit)
		}
		return nil
	})
	if err != nil {
		return Mode{} // a spec that does not decode has no mode to show
	}
	return m
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
