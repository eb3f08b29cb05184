package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sortie-ci/sortie/internal/store/sqlite"
	"github.com/sortie-ci/sortie/internal/store/storetest"
)

// BenchmarkListBig: the reads that list buildsets, on big ones (see
// storetest.ListBig).
//
//	go test ./internal/store/sqlite -run '^$' -bench ListBig -count 5
func BenchmarkListBig(b *testing.B) {
	s, err := sqlite.Open(context.Background(), filepath.Join(b.TempDir(), "sortie.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.ListBig(b, s)
}
