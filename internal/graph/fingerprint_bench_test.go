package graph_test

import (
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
)

// BenchmarkFingerprint10k is the cost of a config's fingerprint, which a
// process computes when it registers and at each renewal of its lease:
// beside BenchmarkLoadAndPlan10k, on the same generated config.
func BenchmarkFingerprint10k(b *testing.B) {
	data, _ := generated(10_000, 1_000, 42)
	cfg, err := config.Parse("gen.yaml", data)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		cfg.Fingerprint()
	}
}
