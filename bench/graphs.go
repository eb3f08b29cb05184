package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
)

// dag is a job graph to run: jobs in a topological order, each with its
// dependencies, all running the same command. Job 0 is the bootstrap.
type dag struct {
	family string
	jobs   []string
	deps   map[string][]string
	cmd    string
	// sleep is the nominal duration of one job (0 for no-op jobs).
	sleep time.Duration
}

func (d *dag) n() int { return len(d.jobs) - 1 } // jobs besides the bootstrap

func newDAG(family string, cmd string, sleep time.Duration) *dag {
	return &dag{family: family, jobs: []string{"boot"}, deps: map[string][]string{"boot": nil}, cmd: cmd, sleep: sleep}
}

func (d *dag) add(name string, deps ...string) {
	d.jobs = append(d.jobs, name)
	d.deps[name] = append([]string{"boot"}, deps...)
}

// wide: n independent jobs after the bootstrap.
func wide(n int, cmd string, sleep time.Duration) *dag {
	d := newDAG("wide", cmd, sleep)
	for i := range n {
		d.add(fmt.Sprintf("j%05d", i))
	}
	return d
}

// chain: n jobs, each depending on the one before.
func chain(n int, cmd string, sleep time.Duration) *dag {
	d := newDAG("chain", cmd, sleep)
	prev := ""
	for i := range n {
		name := fmt.Sprintf("j%05d", i)
		if prev == "" {
			d.add(name)
		} else {
			d.add(name, prev)
		}
		prev = name
	}
	return d
}

// layered: layers of width jobs, each depending on 1-3 random jobs of the
// layer above (the same graph for the same size).
func layered(n, width int, cmd string, sleep time.Duration) *dag {
	d := newDAG("layered", cmd, sleep)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range n {
		l, w := i/width, i%width
		name := fmt.Sprintf("l%03d-%04d", l, w)
		var deps []string
		if l > 0 {
			for range 1 + r.IntN(3) {
				dep := fmt.Sprintf("l%03d-%04d", l-1, r.IntN(width))
				if !slices.Contains(deps, dep) {
					deps = append(deps, dep)
				}
			}
		}
		d.add(name, deps...)
	}
	return d
}

// realistic: the shape of examples/infra's deploy pipeline (39 jobs with
// its hard and soft dependencies), every job running cmd.
func realistic(examples, cmd string, sleep time.Duration) (*dag, error) {
	cfg, err := config.Load(examples + "/infra")
	if err != nil {
		return nil, err
	}
	p, err := graph.Select(cfg, "deploy", nil)
	if err != nil {
		return nil, err
	}
	d := newDAG("realistic", cmd, sleep)
	for _, j := range p.Jobs[1:] {
		var deps []string
		for _, dep := range j.Dependencies {
			if dep != p.Bootstrap {
				deps = append(deps, dep)
			}
		}
		d.add(j.Name, deps...)
	}
	return d, nil
}

// bound is max(critical path, total work / parallelism) with every job
// taking its nominal duration: no tool can finish sooner.
func (d *dag) bound(parallel int) time.Duration {
	depth := map[string]int{}
	longest := 0
	for _, j := range d.jobs {
		x := 0
		for _, dep := range d.deps[j] {
			x = max(x, depth[dep])
		}
		depth[j] = x + 1
		longest = max(longest, depth[j])
	}
	cp := time.Duration(longest) * d.sleep
	work := time.Duration(len(d.jobs)) * d.sleep / time.Duration(parallel)
	return max(cp, work)
}
