package buildset_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
)

// BenchmarkReportJSON1000 encodes the report of a buildset of 1,001
// builds as `sortie run --report` writes it, after the last build.
func BenchmarkReportJSON1000(b *testing.B) {
	t0 := time.Date(2026, 12, 5, 3, 0, 0, 123456789, time.UTC)
	rep := &buildset.Report{ID: "01a24410-29b6-7579-87c2-56cd7dcb17fc", Pipeline: "bench", Commit: "e67e8a01cc142cbb423f1077803488a06d53009e",
		Result: "SUCCESS", StartedAt: buildset.TimeOf(&t0), FinishedAt: buildset.TimeOf(&t0)}
	for i := range 1001 {
		s, e := t0.Add(time.Duration(i)*time.Millisecond), t0.Add(time.Duration(i+1)*time.Millisecond)
		rep.Builds = append(rep.Builds, buildset.BuildReport{Job: fmt.Sprintf("l%03d-%04d", i/50, i%50), Result: "SUCCESS", Attempt: 1,
			StartedAt: buildset.TimeOf(&s), FinishedAt: buildset.TimeOf(&e), Log: "/state/logs/x/job.1.log"})
	}
	for b.Loop() {
		if _, err := json.MarshalIndent(rep, "", "  "); err != nil {
			b.Fatal(err)
		}
	}
}

// A report's times are RFC 3339 in UTC with nine fraction digits, never
// trimmed, and null when unset; they read back as the same instant.
func TestTimeJSON(t *testing.T) {
	at := time.Date(2026, 12, 5, 4, 0, 0, 1000, time.FixedZone("X", 2*3600))
	got, err := json.Marshal(struct {
		A, B buildset.Time
	}{buildset.TimeOf(&at), buildset.TimeOf(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"A":"2026-12-05T02:00:00.000001000Z","B":null}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	var back struct{ A, B buildset.Time }
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if a := back.A.Get(); a == nil || !a.Equal(at) || back.B.Get() != nil {
		t.Fatalf("read back %v, %v; want %v, nil", back.A.Get(), back.B.Get(), at)
	}
}
