package sqlite_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// TestOpenRefusesDamagedFile: a database with random bytes over the middle
// half of its pages, or a file that is no database, is refused by Open
// with a *CorruptError naming the file, before anything reads it. (Not a
// few KiB: those may land on free pages, which a migration that drops a
// table leaves, and which no check reads.)
func TestOpenRefusesDamagedFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sortie.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := len(data) / 4; i < 3*len(data)/4; i++ {
		data[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	noDB := filepath.Join(dir, "not.db")
	if err := os.WriteFile(noDB, []byte(strings.Repeat("not a database\n", 1000)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, noDB} {
		_, err := sqlite.Open(t.Context(), p)
		var ce *sqlite.CorruptError
		if !errors.As(err, &ce) || ce.Path != p || !strings.Contains(err.Error(), "Backups of the state") {
			t.Errorf("Open(%s) = %v, want a *CorruptError naming it", p, err)
		}
	}
}
