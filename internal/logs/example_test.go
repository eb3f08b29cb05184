package logs_test

import (
	"fmt"
	"os"
	"time"

	"github.com/sortie-ci/sortie/internal/logs"
)

func ExampleNewWriter() {
	clock := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC) }
	w := logs.NewWriter(os.Stdout, []string{"hunter2"}, clock)
	fmt.Fprint(w, "login with hun")
	fmt.Fprint(w, "ter2\nstill running")
	w.Close() // writes the partial line
	// Output:
	// 2026-01-02T03:04:05.000000006Z | login with ***
	// 2026-01-02T03:04:05.000000006Z | still running
}
