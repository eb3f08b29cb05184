package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
)

const nodesConfig = `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  p: {jobs: [boot, work]}
`

func nodesByName(t *testing.T, e *env) (*NodesJSON, map[string]NodeJSON) {
	t.Helper()
	var ns NodesJSON
	e.getJSON("/api/v1/nodes", &ns)
	m := map[string]NodeJSON{}
	for _, n := range ns.Nodes {
		m[n.Name] = n
	}
	return &ns, m
}

// TestNodes: two servers on one PostgreSQL database each list both, the
// first (alone at its start) as the leader, with their versions, slots and
// config fingerprints, the second's config (another source) flagged as
// differing from the leader's. Forgetting a node needs the token; the
// second, stopped cleanly, has handed itself over and is gone; a dead
// node's forget is refused while its lease runs, and, forced, fences and
// releases it.
func TestNodes(t *testing.T) {
	db := pgtest.NewDatabase(t)
	a := start(t, nodesConfig, envOpt{db: db, node: "alpha"})
	b := start(t, nodesConfig+"limits: {max_parallel: 3}\n", envOpt{db: db, node: "beta"})

	ns, m := nodesByName(t, a)
	if ns.Self != "alpha" || len(ns.Nodes) != 2 {
		t.Fatalf("nodes from alpha: %+v, want self alpha and two nodes", ns)
	}
	al, be := m["alpha"], m["beta"]
	if !al.Leader || al.LeaderTerm == 0 || be.Leader || ns.Leader == nil || ns.Leader.Node != "alpha" || ns.ConfigReference != "leader" {
		t.Errorf("leader: alpha %+v, beta %+v, term %+v, reference %q; want alpha leading", al, be, ns.Leader, ns.ConfigReference)
	}
	if al.State != "live" || be.State != "live" || al.Version != "v-test" || al.Owner != a.srv.coord.Owner() || al.Epoch == 0 {
		t.Errorf("alpha %+v, beta %+v: want both live, version v-test, alpha's owner %s", al, be, a.srv.coord.Owner())
	}
	if al.SlotsMax != 8 || be.SlotsMax != 3 || al.LastRenewal.IsZero() || al.ExpiresAt.Before(al.LastRenewal) {
		t.Errorf("slots and lease: alpha %+v, beta %+v", al, be)
	}
	if len(al.ConfigFingerprint) != 64 || al.ConfigFingerprint != a.srv.Config().Fingerprint() {
		t.Errorf("alpha's fingerprint %q, want its config's %q", al.ConfigFingerprint, a.srv.Config().Fingerprint())
	}
	if al.ConfigDiffers || !be.ConfigDiffers {
		t.Errorf("config differs: alpha %v, beta %v; want beta's only", al.ConfigDiffers, be.ConfigDiffers)
	}
	// Beta says the same of the cluster, itself as self.
	ns2, m2 := nodesByName(t, b)
	if ns2.Self != "beta" || !m2["alpha"].Leader || !m2["beta"].Self || !m2["beta"].ConfigDiffers {
		t.Errorf("nodes from beta: %+v", ns2)
	}

	// The metrics say the same.
	_, out := a.do("GET", "/metrics", nil, "")
	for _, w := range []string{`sortie_cluster_nodes{state="live"} 2`, `sortie_cluster_nodes{state="fenced"} 0`,
		"sortie_cluster_nodes_config_differs 1", "sortie_node_slots_in_use 0", "sortie_node_slots_max 8",
		"sortie_store_fenced_writes_total 0"} {
		if !strings.Contains(string(out), w+"\n") {
			t.Errorf("metrics lack %s:\n%s", w, grepLines(string(out), "sortie_"))
		}
	}

	// Forgetting is a mutation: the token is needed.
	if code, out := a.do("POST", "/api/v1/nodes/beta/forget", map[string]any{"force": true}, ""); code != http.StatusUnauthorized {
		t.Fatalf("forget without a token: %d %s", code, out)
	}
	// Stopped cleanly, beta hands its owner over: it leaves the list at
	// once, and there is nothing left to forget.
	b.stop()
	if _, m := nodesByName(t, a); len(m) != 1 || m["beta"].Name != "" {
		t.Errorf("nodes after beta's clean stop: %+v, want alpha alone", m)
	}
	if code, out := a.do("POST", "/api/v1/nodes/beta/forget", map[string]any{"force": true}, testToken); code != http.StatusNotFound {
		t.Errorf("forget a node stopped cleanly: %d %s, want 404", code, out)
	}
	// A node that died (killed, its host gone) leaves its owner live
	// until its lease runs out: forgetting it is refused without force.
	st, err := openStore(t.Context(), db, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const gammaOwner = "o-00000000000000ga"
	if _, err := st.RegisterOwner(t.Context(), store.RegisterOwnerParams{ID: gammaOwner, Kind: store.OwnerNode,
		Node: "gamma", Host: "gone", StateDir: "/gone", Lease: time.Hour, Now: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if code, out := a.do("POST", "/api/v1/nodes/gamma/forget", nil, testToken); code != http.StatusConflict || !strings.Contains(string(out), "live") {
		t.Fatalf("forget a node whose lease runs: %d %s, want 409", code, out)
	}
	var f coordinator.Forgotten
	if err := json.Unmarshal(a.post("/api/v1/nodes/gamma/forget", map[string]any{"force": true}, http.StatusOK), &f); err != nil {
		t.Fatal(err)
	}
	if f.Node != "gamma" || len(f.Owners) != 1 || f.Owners[0].ID != gammaOwner {
		t.Errorf("forgotten %+v, want gamma's owner %s", f, gammaOwner)
	}
	if _, m := nodesByName(t, a); len(m) != 1 || m["gamma"].Name != "" {
		t.Errorf("nodes after the forget: %+v, want alpha alone", m)
	}
	if code, out := a.do("POST", "/api/v1/nodes/alpha/forget", map[string]any{"force": true}, testToken); code != http.StatusConflict {
		t.Errorf("alpha forgets itself: %d %s, want 409", code, out)
	}
}
