package coordinator

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sortie-ci/sortie/internal/store"
)

// legacyOwnersFile is the state dir's serve.owners of a sortie from before
// owners were rows: the ids of earlier server processes on it, still to be
// recovered. It is read once, by the first start that recovers them, and
// then removed.
func (c *Coordinator) legacyOwnersFile() string { return filepath.Join(c.opt.StateDir, "serve.owners") }

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

// recover takes over what the earlier server processes on this state dir
// left: the node owners registered with this node name, host and state
// dir but this one (and those a legacy serve.owners names). The state
// dir's lock, which the caller holds, proves them dead, so they are
// recovered at once, without waiting for their leases. In order, each
// step safe to repeat if this process dies too: fence those still live
// (FenceOwners with Force), end their process trees on the bastion
// (KillOwner), mark them ended, release their semaphores but the pipeline
// semaphores of their running buildsets (Kept), which leaves their
// ADMITTED and RUNNING buildsets with no owner, for the claims of this
// process or any other server (Claim, which moves those kept holders to
// the claimer).
func (c *Coordinator) recover(ctx context.Context) error {
	self := c.Owner()
	id := c.opt.Runner.Semaphores.Identity
	earlier, err := c.st.Owners(ctx, store.OwnerFilter{Kind: store.OwnerNode, Node: id.Node, Host: id.Host, StateDir: id.StateDir})
	if err != nil {
		return err
	}
	legacy, err := readOwners(c.legacyOwnersFile())
	if err != nil {
		return fmt.Errorf("read %s: %w", c.legacyOwnersFile(), err)
	}
	dead := map[string]bool{}
	for _, o := range earlier {
		dead[o.ID] = true
	}
	for _, o := range legacy {
		dead[o] = true
	}
	delete(dead, self)
	if len(dead) == 0 {
		return c.forgetLegacy(legacy)
	}
	if err := c.takeOver(ctx, dead, legacy); err != nil {
		return err
	}
	return c.forgetLegacy(legacy)
}

// takeOver takes over the work of the dead owners, known dead without
// waiting for their leases, and of the legacy owners among them (no row,
// perhaps): fence them (FenceOwners with Force), end their process trees
// on the bastion (KillOwner), mark them ended, release their semaphores
// but the pipeline semaphores of their running buildsets (Kept), which
// leaves their ADMITTED and RUNNING buildsets to be claimed, and wake the
// claims. Each step is safe to repeat if this process dies too.
func (c *Coordinator) takeOver(ctx context.Context, dead map[string]bool, legacy []string) error {
	ids := slices.Sorted(maps.Keys(dead))
	if _, err := c.st.FenceOwners(ctx, store.FenceOwnersParams{IDs: ids, Force: true}); err != nil {
		return err
	}
	owners, err := c.st.Owners(ctx, store.OwnerFilter{IDs: ids, States: []store.OwnerState{store.OwnerFenced, store.OwnerEnded}})
	if err != nil {
		return err
	}
	// A legacy owner may have no row (it died before its first
	// renewal), or one released or carried over without its host: its
	// process trees, if any, are ended whatever its row says.
	for _, id := range legacy {
		if err := c.opt.Runner.Bastion.KillOwner(ctx, id, c.opt.Runner.Grace); err != nil {
			return fmt.Errorf("end the builds of %s: %w", id, err)
		}
	}
	for _, o := range owners {
		if o.State != store.OwnerFenced {
			continue
		}
		c.log.Info("recovering after an earlier server process", "owner", o.ID)
		if err := c.opt.Runner.Bastion.KillOwner(ctx, o.ID, c.opt.Runner.Grace); err != nil {
			return fmt.Errorf("end the builds of %s: %w", o.ID, err)
		}
		if err := c.st.MarkOwnerEnded(ctx, o.ID); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	active, err := c.st.ActiveBuildsets(ctx)
	if err != nil {
		return err
	}
	for _, o := range owners {
		err := c.st.ReleaseOwner(ctx, store.ReleaseOwnerParams{ID: o.ID, Keep: Kept(o, active)})
		if err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	// Released, their buildsets have no owner: the claims of this
	// process, or of any other server, resume them, running ones first,
	// each with the pipeline semaphore kept for it.
	c.wakeClaims()
	return nil
}

// forgetLegacy removes the legacy serve.owners once its owners are
// recovered.
func (c *Coordinator) forgetLegacy(legacy []string) error {
	if legacy == nil {
		return nil
	}
	if err := os.Remove(c.legacyOwnersFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
