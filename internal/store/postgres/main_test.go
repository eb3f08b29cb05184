package postgres

import (
	"os"
	"testing"

	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
)

// TestMain stops the test cluster pgtest may have started and fails a run
// that passed but left goroutines (pools, the notifier's loop).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
