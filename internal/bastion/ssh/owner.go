package ssh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// killOwnerScript ends, in parallel, the groups of the pid files in $d
// that are of this boot and still the recorded ones (ours), TERM then KILL
// after $grace tenths of a second, waiting up to 10 s more for those it
// killed to be gone, and every process carrying $m (the owner's tag)
// wherever it went (end_all), then removes $d. Something alive after that
// keeps $d and fails the script.
const killOwnerScript = `d=%s
grace=%d
m=%s
%s%s%s%s%send_one() {
  end_group
  n=0
  while others && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n+1)); done
  if others; then echo "process group $g is still alive after KILL" >&2; exit 1; fi
}
jobs=
if [ -d "$d" ]; then
  read -r boot < /proc/sys/kernel/random/boot_id || exit 1
  for f in "$d"/*.pid; do
    [ -f "$f" ] || continue
    g= st= bt=
    read -r g st bt 2>/dev/null < "$f"
    # kill -- -1 would signal every process of the user.
    case $g in ''|*[!0-9]*|0*|1) continue ;; esac
    [ "$bt" = "$boot" ] && ours || continue
    end_one &
    jobs="$jobs $!"
  done
fi
(g=; end_all) &
jobs="$jobs $!"
failed=0
for j in $jobs; do wait "$j" || failed=1; done
[ "$failed" = 0 ] || exit 1
rm -rf "$d"
`

// SetOwner makes owner the bastion's Config.Owner from now on; see
// bastion.Bastion. It is called only while no build of the bastion runs.
func (b *Bastion) SetOwner(owner string) error {
	if err := bastion.CheckOwner(owner); err != nil {
		return fmt.Errorf("ssh bastion: set owner: %w", err)
	}
	b.cfg.Owner = owner
	return nil
}

// KillOwner ends the process groups of the builds that a Sortie process
// with Config.Owner owner started on the bastion and that are still
// alive, and every process carrying bastion.OwnerEnv=owner wherever it
// went (setsid, a double fork): each build's pid file in
// <workdir>/run/<owner>/ holds its group id, the start time of the
// group's leader and the bastion's boot id, and a group is signalled only
// if it is of this boot and is still the recorded one (see oursFunc), so
// that a process that merely reuses a recorded pid is never signalled.
// Groups and processes get TERM, then KILL once grace has passed (0 means
// bastion.DefaultGrace); KillOwner waits until they are gone, then
// removes the directory. The owner must be dead (its lease expired):
// KillOwner refuses Config.Owner.
func (b *Bastion) KillOwner(ctx context.Context, owner string, grace time.Duration) error {
	if err := bastion.CheckOwner(owner); err != nil {
		return fmt.Errorf("ssh bastion: kill owner: %w", err)
	}
	if owner == b.cfg.Owner {
		return fmt.Errorf("ssh bastion: kill owner %s: that is this bastion's own owner id", owner)
	}
	if grace <= 0 {
		grace = bastion.DefaultGrace
	}
	c, err := b.connect(ctx)
	if err != nil {
		return err
	}
	script := fmt.Sprintf(killOwnerScript, q(b.Workdir()+"/run/"+owner), tenths(grace), q(bastion.OwnerEnv+"="+owner),
		othersFunc, endGroupFunc, oursFunc, markedFunc, endAllFunc)
	// TERM, grace, KILL, then up to 10 s for the killed to go.
	rctx, cancel := context.WithTimeout(ctx, 2*grace+b.cfg.DialTimeout+15*time.Second)
	defer cancel()
	if _, err := output(rctx, c, "exec /bin/sh -s", strings.NewReader(script)); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			// The connection is fine, and other builds use it.
			return &bastion.InfraError{Op: "kill owner " + owner, Err: err}
		}
		return b.infra(c, "kill owner "+owner, err)
	}
	return nil
}
