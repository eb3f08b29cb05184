package postgres_test

import (
	"context"
	"testing"

	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/store/storetest"
)

// BenchmarkListBig: the reads that list buildsets, on big ones (see
// storetest.ListBig), on a throwaway cluster.
//
//	go test ./internal/store/postgres -run '^$' -bench ListBig -count 5
func BenchmarkListBig(b *testing.B) {
	s, err := postgres.Open(context.Background(), pgtest.NewDatabase(b))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	storetest.ListBig(b, s)
}
