package logs_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store"
)

// BenchmarkLog10000Lines writes a 10,000-line log (lines of about 100
// bytes, as a chatty deploy prints them) and closes it: to a file, and to
// chunks in SQLite and in PostgreSQL. Recorded in docs/benchmarks.md.
func BenchmarkLog10000Lines(b *testing.B) {
	text := strings.Repeat("x", 60)
	write := func(b *testing.B, sink logs.Sink) {
		// Each line: a 30-byte timestamp, " | ", 27 + 60 bytes of text, "\n".
		b.SetBytes(121 * 10_000)
		for i := 0; b.Loop(); i++ {
			l := sink.Create(b.Context(), store.LogKey{BuildsetID: fmt.Sprintf("bs%d", i), Job: "deploy", Attempt: 1}, []string{"hunter2"})
			for n := range 10_000 {
				fmt.Fprintf(l, "TASK [deploy : line %05d] %s\n", n, text)
			}
			if err := l.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("file", func(b *testing.B) { write(b, logs.Files{Dir: b.TempDir()}) })
	b.Run("chunks-sqlite", func(b *testing.B) {
		write(b, logs.Chunks{Store: openSQLite(b)})
	})
	b.Run("chunks-postgres", func(b *testing.B) {
		write(b, logs.Chunks{Store: openPostgres(b)})
	})
}
