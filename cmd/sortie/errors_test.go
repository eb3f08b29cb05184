package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReloadRefusesEmptyConfig: a config emptied under a running server
// (no bootstrap job, no pipeline) is refused on reload, with positions, and
// the server keeps its pipelines.
func TestReloadRefusesEmptyConfig(t *testing.T) {
	t.Parallel()
	s := startClientServer(t, "jobs:\n  boot: {bootstrap: true, run: \"true\"}\npipelines:\n  deploy: {jobs: [boot]}\n")
	defer s.stop(t)
	cfg := filepath.Join(s.dir, "sortie.yaml")
	for _, empty := range []string{"", "# emptied for now\n", "jobs: {}\n"} {
		if err := os.WriteFile(cfg, []byte(empty), 0o644); err != nil {
			t.Fatal(err)
		}
		r := s.client(t, nil, "reload")
		if r.code != 2 || !strings.Contains(r.stderr, cfg+":1:1: jobs: no bootstrap job") || !strings.Contains(r.stderr, ": pipelines: no pipeline") {
			t.Fatalf("reload of %q: exit %d\n%s%s", empty, r.code, r.stdout, r.stderr)
		}
		st := s.client(t, nil, "status")
		if st.code != 0 || !strings.Contains(st.stdout, "LAST RELOAD REFUSED") || !strings.Contains(st.stdout, "\ndeploy ") {
			t.Fatalf("status after a refused reload of %q: exit %d\n%s%s", empty, st.code, st.stdout, st.stderr)
		}
	}
}
