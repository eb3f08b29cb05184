package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestTargetsWide: the wide graph's lines give the ratios and per-job
// figures of the medians, the median of the repetitions' own wall ratios
// beside them, and make's own CPU as what is left of Sortie's
// once what it spends beyond make is taken out, each repetition's wall, and
// Sortie's threads' voluntary switches; without Sortie's own usage,
// nothing is said of make's own CPU nor of the switches.
func TestTargetsWide(t *testing.T) {
	d := newDAG("wide", "/bin/true", 0)
	for i := range 10_000 {
		d.jobs = append(d.jobs, fmt.Sprintf("j%05d", i))
	}
	w := workload{dag: d, parallel: 2}
	r := &result{w: w, samples: map[string][]sample{
		// Medians: Sortie 2.4 s wall, 4.0 s CPU, 1.2 s own; make 2.0 s, 3.2 s.
		// Run by run, the walls' ratios are 1.20, 1.15 (a slow moment
		// for both) and 1.15: their median is 1.15.
		"sortie": {
			{wall: 2400 * time.Millisecond, cpu: 4000 * time.Millisecond, own: 1200 * time.Millisecond, waits: 30_000, rss: 100 << 20},
			{wall: 3000 * time.Millisecond, cpu: 4100 * time.Millisecond, own: 1300 * time.Millisecond, waits: 52_000, rss: 110 << 20},
			{wall: 2300 * time.Millisecond, cpu: 3900 * time.Millisecond, own: 1100 * time.Millisecond, waits: 31_000, rss: 90 << 20},
		},
		"make": {
			{wall: 2000 * time.Millisecond, cpu: 3200 * time.Millisecond},
			{wall: 2600 * time.Millisecond, cpu: 3300 * time.Millisecond},
			{wall: 2000 * time.Millisecond, cpu: 3100 * time.Millisecond},
		},
	}}
	var b strings.Builder
	targets(&b, r, "sortie")
	got := b.String()
	for _, want := range []string{
		"Sortie / make wall = **1.20** (target ≤ 1.30); run by run (each run / make's beside it, median), 1.15.",
		"Sortie's CPU beyond make's = **80 µs/job** (so make's own is about 40, if the jobs cost both tools the same)",
		"Sortie's own CPU = **120 µs/job** (target ≤ 250 µs/job)",
		"peak memory 100.0 MiB",
		"each repetition's wall (s), Sortie 2.40 3.00 2.30; make 2.00 2.60 2.00.",
		"Sortie's threads' voluntary context switches = 3.1 a job (each repetition: 3.0 5.2 3.1).",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("targets say:\n%s\nwant a line with %q", got, want)
		}
	}

	for i := range r.samples["sortie"] {
		r.samples["sortie"][i].own = 0
		r.samples["sortie"][i].waits = 0
	}
	b.Reset()
	targets(&b, r, "sortie")
	got = b.String()
	if !strings.Contains(got, "Sortie's CPU beyond make's = **80 µs/job**.\n") || strings.Contains(got, "make's own") || strings.Contains(got, "Sortie's own CPU") || strings.Contains(got, "switches") {
		t.Errorf("without Sortie's own CPU, targets say:\n%s\nwant the CPU beyond make's alone", got)
	}
}
