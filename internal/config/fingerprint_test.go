package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFingerprint(t *testing.T) {
	const body = `
source:
  url: https://example.com/infra.git
jobs:
  prepare:
    bootstrap: true
    run: "true"
  deploy:
    run: echo deploy
pipelines:
  prod:
    jobs: [deploy]
`
	load := func(dir, text string) *Config {
		t.Helper()
		p := filepath.Join(dir, "sortie.yaml")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	a := load(t.TempDir(), body)
	// Another place, and another layout: a comment moves every line.
	b := load(t.TempDir(), "# the same settings\n"+body)
	if a.Fingerprint() != b.Fingerprint() {
		t.Errorf("the same content from two paths: %s and %s", a.Fingerprint(), b.Fingerprint())
	}
	if len(a.Fingerprint()) != 64 {
		t.Errorf("fingerprint %q is not a sha256 in hex", a.Fingerprint())
	}
	c := load(t.TempDir(), body+"limits:\n  max_parallel: 3\n")
	if a.Fingerprint() == c.Fingerprint() {
		t.Errorf("a changed max_parallel keeps the fingerprint %s", a.Fingerprint())
	}
}
