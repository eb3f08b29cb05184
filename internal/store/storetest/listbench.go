package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// ListBig benchmarks the reads that list buildsets, on 20 buildsets of
// 10,000 jobs, each with a plan of 1.5 MB and a spec of 0.65 MB as the
// wide 10,000-job graph's: a page of history (ListBuildsets), the active
// ones as the pipelines' queues read them every 2 s for the status page
// (ChangedBuildsets from zero), and the active ones whole
// (ActiveBuildsets), as those queues were read before.
func ListBig(b *testing.B, s store.Store) {
	ctx := context.Background()
	blob := func(n, seed int) []byte { // JSON that does not compress to nothing
		var sb strings.Builder
		sb.WriteString(`{"jobs":[`)
		for i := 0; sb.Len() < n; i++ {
			fmt.Fprintf(&sb, `{"name":"j%d-%d","run":"/bin/true"},`, i, seed)
		}
		return []byte(strings.TrimSuffix(sb.String(), ",") + `]}`)
	}
	for i := range 20 {
		bs := &store.Buildset{ID: fmt.Sprintf("bs%02d", i), Pipeline: "bench", Commit: "c", CreatedAt: time.Unix(int64(i), 0),
			Plan: blob(1_500_000, i), Spec: blob(650_000, -i), Mode: []byte(`{}`)}
		if err := s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs, Jobs: []string{"boot"}}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("history page", func(b *testing.B) {
		for b.Loop() {
			if l, err := s.ListBuildsets(ctx, store.Filter{Limit: 20}); err != nil || len(l) != 20 {
				b.Fatal(len(l), err)
			}
		}
	})
	b.Run("queues", func(b *testing.B) {
		for b.Loop() {
			if ch, err := s.ChangedBuildsets(ctx, 0); err != nil || len(ch.Buildsets) != 20 {
				b.Fatal(err)
			}
		}
	})
	b.Run("active whole", func(b *testing.B) {
		for b.Loop() {
			if l, err := s.ActiveBuildsets(ctx); err != nil || len(l) != 20 {
				b.Fatal(len(l), err)
			}
		}
	})
}
