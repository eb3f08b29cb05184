package buildset_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
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
	b.Run("MarshalIndent", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.MarshalIndent(rep, "", "  "); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendIndented", func(b *testing.B) {
		for b.Loop() {
			rep.AppendIndented(nil)
		}
	})
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

// TestAppendIndented: AppendIndented writes what json.MarshalIndent
// writes, byte for byte, for reports with and without their optional
// fields, builds or times, and strings with everything encoding/json
// escapes.
func TestAppendIndented(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 3, 0, 0, 123456789, time.FixedZone("X", 3600))
	nasty := []string{"", "plain", "a\"b", `back\slash`, "tab\tnew\nline\r", "\x00\x01\x1f", "<a href=x>&amp;</a>",
		"ünïcødé ✓", "\u2028\u2029", "bad \xff utf8", "\ufffd", "mixed ✓ <", "a<b", "a>b", "a&b", "x\"y", "/state/logs/01a2/job-1.1.log", "emoji 🚀"}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() string { return nasty[r.IntN(len(nasty))] }
	tm := func() buildset.Time {
		if r.IntN(4) == 0 {
			return buildset.TimeOf(nil)
		}
		at := t0.Add(time.Duration(r.Int64N(1e12)))
		return buildset.TimeOf(&at)
	}
	reports := []*buildset.Report{{}, {Builds: []buildset.BuildReport{}}}
	for range 200 {
		rep := &buildset.Report{ID: pick(), Pipeline: pick(), Commit: pick(), Result: pick(), Error: pick(),
			StartedAt: tm(), FinishedAt: tm(), Check: r.IntN(2) == 0, Limit: pick()}
		switch n := r.IntN(5); n {
		case 0:
			rep.Builds = nil
		default:
			rep.Builds = []buildset.BuildReport{}
			for range n - 1 {
				rep.Builds = append(rep.Builds, buildset.BuildReport{Job: pick(), Result: pick(), Attempt: r.IntN(3) - 1,
					StartedAt: tm(), FinishedAt: tm(), Log: pick(), Reason: pick()})
			}
		}
		reports = append(reports, rep)
	}
	for i, rep := range reports {
		want, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if got := rep.AppendIndented(nil); !bytes.Equal(got, want) {
			t.Fatalf("report %d:\n%s\nMarshalIndent:\n%s", i, got, want)
		}
	}
}
