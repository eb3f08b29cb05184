package ssh_test

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/bastion/ssh"
	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
)

// The peers of docs/benchmarks.md's SSH table, measured in one run:
//
//	go test ./internal/bastion/ssh -run '^$' -bench . -benchtime 50x -count 3

func benchBastion(b *testing.B, srv *sshtest.Server) *ssh.Bastion {
	bs, err := ssh.New(ssh.Config{Host: srv.Host, Port: srv.Port, User: srv.User, IdentityFile: srv.IdentityFile,
		KnownHosts: srv.KnownHosts, Workdir: filepath.Join(b.TempDir(), "bastion")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bs.Close() })
	return bs
}

// BenchmarkJob is one no-op build: over SSH with the connection Sortie
// reuses, on the local bastion, and as a fresh `ssh host true` (what a
// setup that runs each job with its own ssh pays).
func BenchmarkJob(b *testing.B) {
	srv := sshtest.Start(b)
	b.Run("ssh-reused", func(b *testing.B) {
		bs := benchBastion(b, srv)
		if _, err := bs.Run(context.Background(), bastion.Spec{Command: "true"}, io.Discard); err != nil {
			b.Fatal(err) // connect outside the timing
		}
		b.ResetTimer()
		for b.Loop() {
			o, err := bs.Run(context.Background(), bastion.Spec{Command: "true"}, io.Discard)
			if err != nil || o.ExitCode != 0 {
				b.Fatal(o, err)
			}
		}
	})
	b.Run("local", func(b *testing.B) {
		lb := local.New(b.TempDir())
		for b.Loop() {
			o, err := lb.Run(context.Background(), bastion.Spec{Command: "true"}, io.Discard)
			if err != nil || o.ExitCode != 0 {
				b.Fatal(o, err)
			}
		}
	})
	b.Run("fresh-ssh-true", func(b *testing.B) {
		args := append(srv.SSHArgs(), "true")
		for b.Loop() {
			if out, err := exec.Command("ssh", args...).CombinedOutput(); err != nil {
				b.Fatal(err, string(out))
			}
		}
	})
}

// BenchmarkBootstrapUnchanged is the bootstrap of a buildset whose commit
// the bastion has and whose install list did not change: the checkout and
// the stamp check, over the reused connection.
func BenchmarkBootstrapUnchanged(b *testing.B) {
	srv := sshtest.Start(b)
	bs := benchBastion(b, srv)
	repo := b.TempDir()
	for _, args := range [][]string{{"init", "-q", "-b", "main", repo}, {"-C", repo, "commit", "-q", "--allow-empty", "-m", "x"}} {
		cmd := exec.Command("git", args...)
		cmd.Env = append(cmd.Environ(), "GIT_AUTHOR_NAME=b", "GIT_AUTHOR_EMAIL=b@x", "GIT_COMMITTER_NAME=b", "GIT_COMMITTER_EMAIL=b@x")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatal(err, string(out))
		}
	}
	out, _ := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output()
	commit := string(out[:40])
	ctx := context.Background()
	install := []string{"true"}
	if _, err := bs.Checkout(ctx, repo, "warm", commit, io.Discard); err != nil {
		b.Fatal(err)
	}
	if _, err := bs.Install(ctx, install, nil, io.Discard); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		i++
		if _, err := bs.Checkout(ctx, repo, fmt.Sprint("bs-", i), commit, io.Discard); err != nil {
			b.Fatal(err)
		}
		if ran, err := bs.Install(ctx, install, nil, io.Discard); err != nil || ran {
			b.Fatal("install ran again", err)
		}
	}
}
