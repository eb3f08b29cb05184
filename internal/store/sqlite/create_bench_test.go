package sqlite_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// BenchmarkCreateBuildset10k creates a buildset of 10,000 builds, as
// `sortie run` does before a run of 10,000 jobs starts.
func BenchmarkCreateBuildset10k(b *testing.B) {
	s, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "sortie.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	jobs := make([]string, 10_000)
	for i := range jobs {
		jobs[i] = fmt.Sprintf("j%d", i)
	}
	n := 0
	for b.Loop() {
		n++
		bs := &store.Buildset{ID: fmt.Sprintf("bs-%d", n), Pipeline: "bench", Commit: "c", CreatedAt: time.Now()}
		if err := s.CreateBuildset(b.Context(), store.CreateBuildsetParams{Buildset: bs, Jobs: jobs}); err != nil {
			b.Fatal(err)
		}
	}
}
