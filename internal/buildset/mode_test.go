package buildset_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/store"
)

// TestModeOf: ModeOf, which skips all but the spec's top-level "check"
// and "limit", reads what decoding the whole spec reads, from specs whose
// jobs hold those keys, quotes, backslashes and brackets in their
// strings; a spec that is not JSON has no mode.
func TestModeOf(t *testing.T) {
	nasty := []string{"", "deploy", `a "quoted" {word}`, `back\slash\`, "tab\tnl\n", "[[{", "}]]", `\"}`, "ünï ✓", `"check": true`, "limit"}
	r := rand.New(rand.NewPCG(3, 4))
	pick := func() string { return nasty[r.IntN(len(nasty))] }
	reference := func(spec []byte) buildset.Mode {
		var s struct{ buildset.Mode }
		if json.Unmarshal(spec, &s) != nil {
			return buildset.Mode{}
		}
		return s.Mode
	}
	var specs [][]byte
	for i := range 300 {
		s := buildset.Spec{Pipeline: pick(), MaxParallel: r.IntN(5), Jobs: map[string]buildset.JobSpec{},
			Secrets: []string{pick()}, Mode: buildset.Mode{Check: r.IntN(2) == 0, Limit: pick()}}
		for j := range r.IntN(6) {
			s.Jobs[fmt.Sprintf("%s-%d", pick(), j)] = buildset.JobSpec{Command: pick(), Install: []string{pick(), pick()},
				Env: map[string]string{"check": pick(), "limit": pick()}, Attempts: 1}
		}
		data, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			data, _ = json.MarshalIndent(s, "", "\t")
		}
		specs = append(specs, data)
	}
	specs = append(specs, nil, []byte("{}"), []byte(` { "limit" : "web*" , "check" : true } `),
		[]byte(`{"jobs":{"a":{"check":true,"limit":"x"}}}`), []byte(`{"check": true, "limit": "x"`), []byte(`{"check": tru`),
		[]byte(`[1, 2]`), []byte(`{"a": "unterminated}`), []byte(`not json`))
	for i, spec := range specs {
		got, want := buildset.ModeOf(&store.Buildset{Spec: spec}), reference(spec)
		if got != want {
			t.Errorf("spec %d %q: ModeOf = %+v, want %+v", i, spec, got, want)
		}
	}
}

// BenchmarkModeOf10k reads the mode of a 10,000-job spec, as every report
// and hosts read does, against decoding the whole spec for it.
//
//	go test ./internal/buildset -run '^$' -bench ModeOf10k -count 5
func BenchmarkModeOf10k(b *testing.B) {
	s := buildset.Spec{Pipeline: "bench", Jobs: map[string]buildset.JobSpec{}, Mode: buildset.Mode{Check: true, Limit: "web*"}}
	for i := range 10000 {
		s.Jobs[fmt.Sprintf("j%05d", i)] = buildset.JobSpec{Command: "/bin/true", Attempts: 1, Weight: 1}
	}
	data, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	bs := &store.Buildset{Spec: data}
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			var s struct{ buildset.Mode }
			if err := json.Unmarshal(data, &s); err != nil || !s.Check {
				b.Fatal(err)
			}
		}
	})
	b.Run("ModeOf", func(b *testing.B) {
		for b.Loop() {
			if m := buildset.ModeOf(bs); !m.Check {
				b.Fatal(m)
			}
		}
	})
}

// TestModeKeptApart: a buildset is made with its mode kept apart from its
// spec (store.Buildset.Mode), and so is its rerun; the lists, which
// leave specs out, show it; and the mode kept apart is the one read.
func TestModeKeptApart(t *testing.T) {
	r, cfg := setup(t, twoJobs)
	ctx := context.Background()
	mode := buildset.Mode{Check: true, Limit: "web*"}
	checked, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p", Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if res, _ := r.Run(ctx, checked); res == store.Success {
		t.Fatalf("buildset %s: %s, want a failure to rerun", checked.ID, res)
	}
	rerun, err := r.Rerun(ctx, checked.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	list, err := r.Store.ListBuildsets(ctx, store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]buildset.Mode{checked.ID: mode, plain.ID: {}, rerun.ID: mode}
	for _, bs := range list {
		if bs.Spec != nil || bs.Mode == nil {
			t.Errorf("listed %s with spec %.30q, mode %q: want its mode alone", bs.ID, bs.Spec, bs.Mode)
		}
		if got := buildset.ModeOf(bs); got != want[bs.ID] {
			t.Errorf("listed %s: mode %+v, want %+v", bs.ID, got, want[bs.ID])
		}
		delete(want, bs.ID)
	}
	if len(want) != 0 {
		t.Errorf("not listed: %v", want)
	}
	// The mode kept apart wins over a spec that says otherwise.
	got := buildset.ModeOf(&store.Buildset{Mode: []byte(`{"limit":"db*"}`), Spec: []byte(`{"check":true}`)})
	if got != (buildset.Mode{Limit: "db*"}) {
		t.Errorf("ModeOf with a mode and a spec: %+v, want the mode's", got)
	}
}
