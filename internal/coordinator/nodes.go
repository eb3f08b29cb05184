package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// ErrNodeLive is a ForgetNode of a node that still renews its lease,
// without Force.
var ErrNodeLive = errors.New("the node is live")

// ErrNodeSelf is a ForgetNode of the node that is asked.
var ErrNodeSelf = errors.New("a node cannot forget itself")

// ErrNodeNameTaken is a start under a node name that a live server on
// another host or state dir holds.
var ErrNodeNameTaken = errors.New("node name taken")

// checkNodeName refuses to start under a node name that a live server
// holds elsewhere: on another host, or on another state dir of this one.
// An owner of this name, host and state dir is an earlier process on this
// state dir, dead since the caller holds its lock (recover).
func (c *Coordinator) checkNodeName(ctx context.Context) error {
	id := c.opt.Runner.Semaphores.Identity
	owners, err := c.st.Owners(ctx, store.OwnerFilter{Kind: store.OwnerNode, Node: id.Node, States: []store.OwnerState{store.OwnerLive}})
	if err != nil {
		return fmt.Errorf("coordinator: read the owners of node %s: %w", id.Node, err)
	}
	now := time.Now()
	for _, o := range owners {
		if o.Host == id.Host && o.StateDir == id.StateDir {
			continue
		}
		if o.Alive(now) {
			return fmt.Errorf("coordinator: %w: node %q is live as owner %s on host %s (state dir %s, lease until %s); give this server another --node",
				ErrNodeNameTaken, id.Node, o.ID, o.Host, o.StateDir, o.ExpiresAt.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// Forgotten is what ForgetNode freed: the owners of the node, and what
// they held when it began.
type Forgotten struct {
	Node   string        `json:"node"`
	Owners []store.Owner `json:"owners"`
	// Buildsets are the buildsets they owned, not finished: left for the
	// servers to claim (Claim), running ones first.
	Buildsets []string `json:"buildsets"`
	// Holders are the semaphores they held: freed, but the pipeline
	// semaphores of running buildsets, which move with them.
	Holders []store.Holder `json:"holders"`
	// Waiters are the semaphore requests they had made, dropped.
	Waiters []store.Waiter `json:"waiters"`
}

// ForgetNode declares the node named gone for good: every owner of it not
// released is fenced, what it left running is taken as ended (ended on
// the bastion where this process can reach it), its semaphores are
// released and its buildsets left for the servers to claim, as a
// successor on its state dir would. A node that is live (it renews its lease) is
// refused with ErrNodeLive unless force; an unknown name, or one whose
// owners are all released, is ErrNotFound.
func (c *Coordinator) ForgetNode(ctx context.Context, name string, force bool) (*Forgotten, error) {
	owners, err := c.st.Owners(ctx, store.OwnerFilter{Kind: store.OwnerNode, Node: name,
		States: []store.OwnerState{store.OwnerLive, store.OwnerFenced, store.OwnerEnded}})
	if err != nil {
		return nil, fmt.Errorf("read the owners of node %s: %w", name, err)
	}
	if len(owners) == 0 {
		return nil, fmt.Errorf("node %s: %w", name, store.ErrNotFound)
	}
	self := c.Owner()
	now := time.Now()
	dead := map[string]bool{}
	for _, o := range owners {
		if o.ID == self {
			return nil, fmt.Errorf("node %s is this server (owner %s): %w", name, self, ErrNodeSelf)
		}
		if o.Alive(now) && !force {
			return nil, fmt.Errorf("node %s: owner %s renews its lease (last %s): %w; stop it, or force",
				name, o.ID, o.RenewedAt.UTC().Format(time.RFC3339), ErrNodeLive)
		}
		dead[o.ID] = true
	}
	f := &Forgotten{Node: name, Owners: owners, Buildsets: []string{}, Holders: []store.Holder{}, Waiters: []store.Waiter{}}
	active, err := c.st.ActiveBuildsets(ctx)
	if err != nil {
		return nil, err
	}
	for _, bs := range active {
		if dead[bs.Owner] {
			f.Buildsets = append(f.Buildsets, bs.ID)
		}
	}
	holders, err := c.st.Holders(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range holders {
		if dead[h.Owner] {
			f.Holders = append(f.Holders, h)
		}
	}
	waiters, err := c.st.Waiters(ctx)
	if err != nil {
		return nil, err
	}
	for _, w := range waiters {
		if dead[w.Owner] {
			f.Waiters = append(f.Waiters, w)
		}
	}
	c.log.Warn("forgetting a node: its owners are fenced and released, its buildsets left for the servers to claim",
		"node", name, "owners", len(owners), "buildsets", len(f.Buildsets), "holders", len(f.Holders), "forced", force)
	if err := c.takeOver(ctx, dead, nil); err != nil {
		return f, fmt.Errorf("forget node %s: %w", name, err)
	}
	return f, nil
}

// CheckDrift compares the config fingerprint of every live node with
// this process's (the leader's, when the reaper calls it) and returns the
// names of the nodes whose config differs. A change in that set is logged
// once: a warning naming them, or, once none differs any more, that the
// drift is over.
func (c *Coordinator) CheckDrift(ctx context.Context) ([]string, error) {
	owners, err := c.st.Owners(ctx, store.OwnerFilter{Kind: store.OwnerNode, States: []store.OwnerState{store.OwnerLive}})
	if err != nil {
		return nil, err
	}
	self := c.Owner()
	var differ []string
	mine := ""
	for _, o := range owners {
		if o.ID == self {
			continue
		}
		// Computed only when there is a node to compare with: a `sortie
		// run`, or a server alone, would spend 0.3 s of CPU on a
		// 10,000-job config for nothing.
		if mine == "" {
			mine = c.ConfigFingerprint()
		}
		if o.ConfigFP != mine {
			differ = append(differ, fmt.Sprintf("%s (%.12s)", o.Node, o.ConfigFP))
		}
	}
	now := strings.Join(differ, ", ")
	c.driftMu.Lock()
	defer c.driftMu.Unlock()
	if now != c.drift {
		if mine == "" {
			mine = c.ConfigFingerprint()
		}
		if now != "" {
			c.log.Warn("config drift: these nodes run another config than this one's; reload them with the same config",
				"nodes", now, "this_config", fmt.Sprintf("%.12s", mine))
		} else {
			c.log.Info("config drift over: every node runs this node's config", "this_config", fmt.Sprintf("%.12s", mine))
		}
		c.drift = now
	}
	return differ, nil
}
