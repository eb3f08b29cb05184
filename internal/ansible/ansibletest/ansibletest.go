// Package ansibletest helps tests that run real ansible-playbook: it finds
// it (a test skips without it, but fails in CI, which installs it), reads
// the PLAY RECAP of its output, and keeps a build's results in memory as a
// store would. It is for tests only.
package ansibletest

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"testing"

	"github.com/sortie-ci/sortie/internal/store"
)

// Need skips the test without ansible-playbook on the PATH, or fails it in
// CI (CI set).
func Need(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal("ansible-playbook not installed: apt-get install ansible-core (see .ci/run)")
		}
		tb.Skip("ansible-playbook not installed: apt-get install ansible-core (see .ci/run)")
	}
}

// recapLine is one host's line of a PLAY RECAP, as Ansible's default
// stdout callback prints it (ANSI colours aside).
var recapLine = regexp.MustCompile(`(?m)^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)`)

// Recaps reads every PLAY RECAP line of an ansible-playbook output (or a
// build log holding several) and returns each host's counts, summed over
// the recaps.
func Recaps(out string) map[string]store.HostCounts {
	sums := map[string]store.HostCounts{}
	for _, m := range recapLine.FindAllStringSubmatch(out, -1) {
		n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
		c := store.HostCounts{OK: n(2), Changed: n(3), Unreachable: n(4), Failed: n(5), Skipped: n(6), Rescued: n(7), Ignored: n(8)}
		sums[m[1]] = sums[m[1]].Add(c)
	}
	return sums
}

// RecapMap returns recaps as Recaps does, for comparing.
func RecapMap(recaps []store.HostRecap) map[string]store.HostCounts {
	out := map[string]store.HostCounts{}
	for _, r := range recaps {
		out[r.Host] = r.HostCounts
	}
	return out
}

// Sink keeps one build's results in memory as store.Hosts does: a
// function-field fake of the store, whose Fail, when set, refuses a write.
type Sink struct {
	// Fail, when set, is asked before each write; an error refuses it.
	Fail func(store.HostsUpdate) error

	mu      sync.Mutex
	b       store.BuildHosts
	updates int
}

// UpdateHosts applies p as a store would.
func (s *Sink) UpdateHosts(_ context.Context, p store.HostsUpdate) error {
	if s.Fail != nil {
		if err := s.Fail(p); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updates++
	if p.Summary.Attempt > s.b.Summary.Attempt {
		s.b = store.BuildHosts{Job: p.Job}
	}
	s.b.Summary = p.Summary
	for _, t := range p.Tasks {
		if t.Index == len(s.b.Tasks) {
			s.b.Tasks = append(s.b.Tasks, t)
		}
	}
	for _, r := range p.Results {
		if r.Seq == len(s.b.Results) {
			s.b.Results = append(s.b.Results, r)
		}
	}
	for _, r := range p.Recaps {
		i := sort.Search(len(s.b.Recaps), func(i int) bool { return s.b.Recaps[i].Host >= r.Host })
		if i < len(s.b.Recaps) && s.b.Recaps[i].Host == r.Host {
			s.b.Recaps[i] = r
		} else {
			s.b.Recaps = append(s.b.Recaps[:i], append([]store.HostRecap{r}, s.b.Recaps[i:]...)...)
		}
	}
	return nil
}

// Hosts returns a copy of what is kept.
func (s *Sink) Hosts() store.BuildHosts {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b
	b.Tasks = append([]store.HostTask(nil), b.Tasks...)
	b.Results = append([]store.HostResult(nil), b.Results...)
	b.Recaps = append([]store.HostRecap(nil), b.Recaps...)
	return b
}

// Updates counts the writes taken.
func (s *Sink) Updates() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updates
}
