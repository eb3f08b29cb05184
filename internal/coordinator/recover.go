package coordinator

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// ownersFile lists the owner ids of server processes on this state dir
// whose leftovers may not be recovered yet: the current one, and any that
// died before their successor finished recovering them.
func (c *Coordinator) ownersFile() string { return filepath.Join(c.opt.StateDir, "serve.owners") }

func readOwners(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if o := strings.TrimSpace(sc.Text()); o != "" {
			out = append(out, o)
		}
	}
	return out, sc.Err()
}

func writeOwners(path string, owners []string) error {
	err := writeOwnersFile(path, owners)
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

func writeOwnersFile(path string, owners []string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	for _, o := range owners {
		fmt.Fprintln(f, o)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// recover takes over what earlier server processes on this state dir left
// (the state dir's lock, which the caller holds, proves them dead). In
// order, each step safe to repeat if this process dies too: note this
// process as one to recover (so a crash during recovery loses nothing),
// end their process trees on the bastion, release their semaphores but
// the pipeline semaphores of their running buildsets
// (semaphore.ReleaseDead), adopt their buildsets (SetBuildsetOwner, which
// moves those kept holders to this process) and run them on, running ones
// first, then forget them.
func (c *Coordinator) recover(ctx context.Context) error {
	dead, err := readOwners(c.ownersFile())
	if err != nil {
		return err
	}
	dead = slices.DeleteFunc(dead, func(o string) bool { return o == c.owner })
	if err := writeOwners(c.ownersFile(), append(slices.Clone(dead), c.owner)); err != nil {
		return err
	}
	isDead := map[string]bool{}
	for _, o := range dead {
		isDead[o] = true
		c.log.Info("recovering after an earlier server process", "owner", o)
		if err := c.opt.Runner.Bastion.KillOwner(ctx, o, c.opt.Runner.Grace); err != nil {
			return fmt.Errorf("end the builds of %s: %w", o, err)
		}
		if err := semaphore.ReleaseDead(ctx, c.st, o); err != nil {
			return err
		}
	}
	active, err := c.st.ActiveBuildsets(ctx)
	if err != nil {
		return err
	}
	// Adopt them all before launching any: a running one's pipeline
	// semaphore, kept for it by ReleaseDead, moves to this process with
	// it, and the running ones are launched first (they hold what they
	// need; the admitted ones wait behind them).
	var adopted []*store.Buildset
	for _, bs := range active {
		if bs.State == store.BuildsetQueued || !isDead[bs.Owner] {
			continue
		}
		if err := c.st.SetBuildsetOwner(ctx, bs.ID, c.owner); err != nil {
			return err
		}
		bs.Owner = c.owner
		adopted = append(adopted, bs)
	}
	slices.SortStableFunc(adopted, func(a, b *store.Buildset) int {
		return cmp.Compare(stateOrder(a.State), stateOrder(b.State))
	})
	for _, bs := range adopted {
		c.log.Info("resuming buildset", "buildset", bs.ID, "pipeline", bs.Pipeline, "state", bs.State)
		c.launch(bs)
	}
	return writeOwners(c.ownersFile(), []string{c.owner})
}

// stateOrder puts running buildsets before admitted ones.
func stateOrder(st store.BuildsetState) int {
	if st == store.BuildsetRunning {
		return 0
	}
	return 1
}
