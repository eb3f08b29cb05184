package ssh_test

import (
	"path/filepath"
	"testing"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/bastiontest"
	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	bastiontest.Run(t, func(t *testing.T) func(owner string) bastion.Bastion {
		srv := sshtest.Start(t)
		workdir := filepath.Join(t.TempDir(), "bastion")
		return func(owner string) bastion.Bastion { return ownerBastion(t, srv, workdir, owner) }
	})
}
