package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/store"
)

// NodesJSON is the servers sharing the store (GET /api/v1/nodes).
type NodesJSON struct {
	// Self is the name of the node that answers.
	Self string `json:"self"`
	// Leader is the leader's term, if a node leads.
	Leader *LeaderJSON `json:"leader"`
	// ConfigReference says whose config fingerprint ConfigDiffers
	// compares with: "leader", or "self" while no node leads.
	ConfigReference string     `json:"config_reference"`
	Nodes           []NodeJSON `json:"nodes"`
}

// LeaderJSON is the leader's term.
type LeaderJSON struct {
	Node      string    `json:"node"`
	Owner     string    `json:"owner"`
	Term      int64     `json:"term"`
	ElectedAt time.Time `json:"elected_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// NodeJSON is one server process (an owner of kind node, not released).
type NodeJSON struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
	Epoch int64  `json:"epoch"`
	// State is "live" (it renews its lease), "expired" (live, but its
	// lease ran out: dead or cut off, not fenced yet), "fenced" or
	// "ended" (dead, being reaped).
	State string `json:"state"`
	// Self is the node that answers.
	Self bool `json:"self"`
	// Leader is set on the leader, with its term.
	Leader            bool      `json:"leader"`
	LeaderTerm        int64     `json:"leader_term,omitempty"`
	Host              string    `json:"host"`
	StateDir          string    `json:"state_dir"`
	StartedAt         time.Time `json:"started_at"`
	LastRenewal       time.Time `json:"last_renewal"`
	ExpiresAt         time.Time `json:"expires_at"`
	Version           string    `json:"version"`
	ConfigFingerprint string    `json:"config_fingerprint"`
	// ConfigDiffers says its config is not the reference's
	// (NodesJSON.ConfigReference).
	ConfigDiffers bool `json:"config_differs"`
	SlotsInUse    int  `json:"slots_in_use"`
	SlotsMax      int  `json:"slots_max"`
}

// Node states of NodeJSON.
const (
	nodeLive    = "live"
	nodeExpired = "expired"
)

func (s *Server) getNodes(w http.ResponseWriter, r *http.Request) {
	n, err := s.Nodes(r.Context())
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

// Nodes lists the servers on the store, the leader marked, and whose
// config differs from the leader's.
func (s *Server) Nodes(ctx context.Context) (*NodesJSON, error) {
	owners, err := s.reads.Owners(ctx, store.OwnerFilter{Kind: store.OwnerNode,
		States: []store.OwnerState{store.OwnerLive, store.OwnerFenced, store.OwnerEnded}})
	if err != nil {
		return nil, err
	}
	term, err := s.reads.Leader(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	self := s.coord.Owner()
	cs := s.coord.Status()
	out := &NodesJSON{Nodes: []NodeJSON{}, ConfigReference: "self"}
	selfFP := s.coord.ConfigFingerprint()
	ref := selfFP
	for _, o := range owners {
		n := NodeJSON{
			Name: o.Node, Owner: o.ID, Epoch: o.Epoch, State: string(o.State), Host: o.Host, StateDir: o.StateDir,
			StartedAt: o.StartedAt, LastRenewal: o.RenewedAt, ExpiresAt: o.ExpiresAt, Version: o.Version,
			ConfigFingerprint: o.ConfigFP, SlotsInUse: o.SlotsUsed, SlotsMax: o.SlotsMax,
		}
		if o.State == store.OwnerLive && !o.Alive(now) {
			n.State = nodeExpired
		}
		if o.ID == self {
			// This node knows itself better than its last renewal did.
			n.Self, out.Self = true, o.Node
			n.ConfigFingerprint, n.SlotsInUse, n.SlotsMax = selfFP, cs.SlotsInUse, cs.SlotsMax
		}
		if term != nil && term.Owner == o.ID && !term.ExpiresAt.Before(now) && o.State == store.OwnerLive {
			n.Leader, n.LeaderTerm = true, term.Term
			out.Leader = &LeaderJSON{Node: o.Node, Owner: o.ID, Term: term.Term, ElectedAt: term.ElectedAt, ExpiresAt: term.ExpiresAt}
			ref, out.ConfigReference = n.ConfigFingerprint, "leader"
		}
		out.Nodes = append(out.Nodes, n)
	}
	for i := range out.Nodes {
		out.Nodes[i].ConfigDiffers = out.Nodes[i].ConfigFingerprint != ref
	}
	return out, nil
}

// forgetBody is the body of POST /api/v1/nodes/{name}/forget.
type forgetBody struct {
	By string `json:"by"`
	// Force forgets a node that is live (still renews its lease).
	Force bool `json:"force"`
}

func (s *Server) postForgetNode(w http.ResponseWriter, r *http.Request) {
	var body forgetBody
	if err := decode(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := r.PathValue("name")
	s.log.Warn("forget node", "node", name, "by", by(body.By), "force", body.Force)
	f, err := s.coord.ForgetNode(r.Context(), name, body.Force)
	switch {
	case errors.Is(err, coordinator.ErrNodeLive), errors.Is(err, coordinator.ErrNodeSelf):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		storeError(w, err)
	default:
		writeJSON(w, http.StatusOK, f)
	}
}

// nodesCollector gives the metrics of the nodes at each scrape: how many
// servers share the store, by state, those whose config differs, this
// node's build slots, and the writes the store refused as fenced.
type nodesCollector struct {
	s                              *Server
	nodes, differs, used, slotsMax *prometheus.Desc
	fenced                         *prometheus.Desc
}

func newNodesCollector(s *Server) *nodesCollector {
	return &nodesCollector{
		s: s,
		nodes: prometheus.NewDesc("sortie_cluster_nodes",
			"Servers sharing the store, by state: live, expired (not renewed, not fenced yet), fenced, ended.", []string{"state"}, nil),
		differs: prometheus.NewDesc("sortie_cluster_nodes_config_differs",
			"Servers whose config fingerprint differs from the leader's (this server's while none leads).", nil, nil),
		used:     prometheus.NewDesc("sortie_node_slots_in_use", "Build slots of this server in use.", nil, nil),
		slotsMax: prometheus.NewDesc("sortie_node_slots_max", "Build slots of this server (limits.slotsMaxparallel).", nil, nil),
		fenced: prometheus.NewDesc("sortie_store_fenced_writes_total",
			"Writes of this server the store refused because their owner was fenced (its lease was lost).", nil, nil),
	}
}

func (c *nodesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodes, c.differs, c.used, c.slotsMax, c.fenced} {
		ch <- d
	}
}

func (c *nodesCollector) Collect(ch chan<- prometheus.Metric) {
	cs := c.s.coord.Status()
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(cs.SlotsInUse))
	ch <- prometheus.MustNewConstMetric(c.slotsMax, prometheus.GaugeValue, float64(cs.SlotsMax))
	if fc, ok := c.s.st.(interface{ FencedWrites() int64 }); ok {
		ch <- prometheus.MustNewConstMetric(c.fenced, prometheus.CounterValue, float64(fc.FencedWrites()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ns, err := c.s.Nodes(ctx)
	if err != nil {
		// Missing for this scrape, rather than failing the whole of it.
		return
	}
	count := map[string]int{nodeLive: 0, nodeExpired: 0, string(store.OwnerFenced): 0, string(store.OwnerEnded): 0}
	differs := 0
	for _, n := range ns.Nodes {
		count[n.State]++
		if n.ConfigDiffers {
			differs++
		}
	}
	for state, n := range count {
		ch <- prometheus.MustNewConstMetric(c.nodes, prometheus.GaugeValue, float64(n), state)
	}
	ch <- prometheus.MustNewConstMetric(c.differs, prometheus.GaugeValue, float64(differs))
}
