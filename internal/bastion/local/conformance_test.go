//go:build linux

package local_test

import (
	"testing"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/bastiontest"
	"github.com/sortie-ci/sortie/internal/bastion/local"
)

// TestConformance runs the suite on bastions that record their process
// groups, as a server's do.
func TestConformance(t *testing.T) {
	t.Parallel()
	bastiontest.Run(t, newHost(false))
}

// TestConformanceUntracked runs the suite on bastions that only tag their
// processes, as `sortie run`'s do.
func TestConformanceUntracked(t *testing.T) {
	t.Parallel()
	bastiontest.Run(t, newHost(true))
}

func newHost(untracked bool) bastiontest.NewHost {
	return func(t *testing.T) func(owner string) bastion.Bastion {
		work := t.TempDir()
		return func(owner string) bastion.Bastion {
			b := local.New(work)
			b.Owner, b.Untracked = owner, untracked
			return b
		}
	}
}
