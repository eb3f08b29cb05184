package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
)

const nodesYAML = `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  p: {jobs: [boot, work]}
`

// TestClientNodes: two `sortie serve --node` on one PostgreSQL database;
// a third under a name in use does not start, naming the live one;
// `sortie nodes` lists both (table and --json), the leader and the config
// that differs marked; `sortie node forget` needs the token, refuses a
// live node without --force, and, for one killed, says what it freed.
func TestClientNodes(t *testing.T) {
	db := pgtest.NewDatabase(t)
	a := startClientServer(t, nodesYAML, "--database", db, "--node", "alpha")
	b := startClientServer(t, nodesYAML+"limits: {max_parallel: 2}\n", "--database", db, "--node", "beta")

	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("source: {url: %q, branch: main}\n%s", repo, nodesYAML))
	r := runSortie(t, nil, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--database", db,
		"--node", "alpha", "--state-dir", filepath.Join(dir, "state"))
	if r.code == 0 || !strings.Contains(r.stderr, `node "alpha" is live`) {
		t.Errorf("a second serve --node alpha: exit %d\n%s", r.code, r.stderr)
	}

	r = a.client(t, nil, "nodes")
	if r.code != 0 {
		t.Fatalf("nodes: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "NODE") {
		t.Fatalf("nodes table:\n%s", r.stdout)
	}
	alpha, beta := lines[1], lines[2]
	if !strings.HasPrefix(alpha, "alpha (this)") || !strings.Contains(alpha, "term ") || !strings.Contains(alpha, " 0/8 ") || strings.Contains(alpha, "DIFFERS") {
		t.Errorf("alpha's line %q: want this node, leading, 0/8 slots, its config the reference", alpha)
	}
	if !strings.HasPrefix(beta, "beta ") || strings.Contains(beta, "term ") || !strings.Contains(beta, " 0/2 ") || !strings.Contains(beta, "DIFFERS") {
		t.Errorf("beta's line %q: want a follower, 0/2 slots, its config differing", beta)
	}
	if !strings.Contains(r.stdout, "1 node(s) run a config that differs from the leader's") {
		t.Errorf("no drift line:\n%s", r.stdout)
	}
	r = b.client(t, nil, "nodes", "--json")
	var ns server.NodesJSON
	if err := json.Unmarshal([]byte(r.stdout), &ns); err != nil || ns.Self != "beta" || len(ns.Nodes) != 2 || ns.Leader == nil || ns.Leader.Node != "alpha" {
		t.Fatalf("nodes --json from beta: %v\n%s", err, r.stdout)
	}

	if r := a.client(t, []string{"SORTIE_TOKEN="}, "node", "forget", "beta", "--force"); r.code == 0 {
		t.Errorf("forget without a token succeeded:\n%s", r.stdout)
	}
	if r := a.client(t, nil, "node", "forget", "beta"); r.code == 0 || !strings.Contains(r.stderr, "--force") {
		t.Errorf("forget a live node without --force: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Killed, beta leaves its owner live until its lease runs out (a
	// clean stop would have handed it over): forget it now.
	b.kill()
	r = a.client(t, nil, "node", "forget", "beta", "--force")
	if r.code != 0 || !strings.Contains(r.stdout, "forgot node beta: owner ") || !strings.Contains(r.stdout, "it held no semaphore") {
		t.Fatalf("forget beta: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = a.client(t, nil, "nodes")
	if strings.Contains(r.stdout, "beta") {
		t.Errorf("beta still listed after the forget:\n%s", r.stdout)
	}
}
