package ssh_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
)

// TestKeepaliveToleratesASlowLink: a connection that answers keepalives
// late, but within three intervals (OpenSSH's ServerAliveCountMax), is
// kept, and the build running over it goes on; one silent for longer is
// dropped, and the build is an infrastructure failure.
func TestKeepaliveToleratesASlowLink(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts) // keepalive every 500ms
	ctx := context.Background()

	runHung := func(hang time.Duration) (bastion.Outcome, error) {
		done := make(chan struct{})
		var o bastion.Outcome
		var err error
		go func() {
			defer close(done)
			o, _, err = run(t, b, ctx, bastion.Spec{Command: "sleep 2"})
		}()
		time.Sleep(300 * time.Millisecond) // the build runs
		resume := srv.Hang(t)
		time.Sleep(hang)
		resume()
		<-done
		return o, err
	}
	// Silent for two intervals: kept.
	if o, err := runHung(time.Second); err != nil || o.ExitCode != 0 {
		t.Fatalf("build over a link silent for 2 keepalive intervals: %+v %v; want it kept", o, err)
	}
	// Silent for four and a half: dropped.
	o, err := runHung(2250 * time.Millisecond)
	if err == nil || !bastion.IsInfra(err) {
		t.Fatalf("build over a link silent for 4.5 keepalive intervals: %+v %v; want an infrastructure failure", o, err)
	}
}

// TestMissingDirIsInfra: a build whose directory cannot be entered on the
// bastion (its checkout is gone) is an infrastructure failure, retried,
// not a FAILURE of the job; a job that itself exits 97 is still the job's
// status.
func TestMissingDirIsInfra(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	b := newBastion(t, srv, srv.KnownHosts)
	ctx := context.Background()
	o, log, err := run(t, b, ctx, bastion.Spec{Command: "true", Dir: "/nonexistent/sortie/src/x"})
	if err == nil || !bastion.IsInfra(err) || !strings.Contains(log, "cannot enter /nonexistent/sortie/src/x") {
		t.Fatalf("missing dir: %+v %v %q; want an infrastructure failure", o, err, log)
	}
	o, _, err = run(t, b, ctx, bastion.Spec{Command: "exit 97"})
	if err != nil || o.ExitCode != 97 {
		t.Fatalf("exit 97: %+v %v; want the job's status", o, err)
	}
}
