package pipeline

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/config"
)

const (
	serial      = config.ManagerSerial
	supercedent = config.ManagerSupercedent
	independent = config.ManagerIndependent
	coalesceM   = config.ManagerCoalesce
)

// Each scenario drives the recording harness through events and checks the
// actions it recorded.
var scenarios = []struct {
	name  string
	pipes []Pipeline
	run   func(w *world)
}{
	{
		name:  "serial runs one at a time in arrival order",
		pipes: []Pipeline{pipe("deploy", serial)},
		run: func(w *world) {
			w.arrive("deploy", "b1", "c1", "a")
			w.expect("start deploy/b1")
			w.arrive("deploy", "b2", "c2", "b")
			w.arrive("deploy", "b3", "c3", "c")
			w.expect() // b1 runs; b2 and b3 wait
			w.finish("b1")
			w.expect("start deploy/b2")
			w.finish("b2")
			w.expect("start deploy/b3")
			w.finish("b3")
			w.expect()
		},
	},
	{
		name:  "serial with several queued and nothing running starts only the oldest",
		pipes: []Pipeline{pipe("deploy", serial)},
		run: func(w *world) {
			w.queue("deploy", "b2", "c2", nil)
			w.queue("deploy", "b1", "c1", nil)
			w.queue("deploy", "b3", "c3", nil)
			// Listed out of order, b2 is still the oldest.
			plan := w.decide()
			w.expect("start deploy/b2")
			wantWaits(w.t, plan, "deploy/b1: waiting behind b2", "deploy/b3: waiting behind b2")
		},
	},
	{
		name:  "a pinned buildset (a sortie run's) is never superseded nor merged, and starts in its turn",
		pipes: []Pipeline{pipe("hourly", supercedent), pipe("merge", coalesceM), pipe("deploy", serial)},
		run: func(w *world) {
			w.arriveAll("hourly", "h1", "c1")
			w.expect("start hourly/h1")
			w.arrivePinned("hourly", "p2", "c2", nil, true)
			w.arriveAll("hourly", "h3", "c3")
			w.arriveAll("hourly", "h4", "c4")
			w.expect("supersede hourly/h3 by h4")
			w.finish("h1")
			w.expect("start hourly/p2")
			w.finish("p2")
			w.expect("start hourly/h4")

			w.arriveAll("merge", "g1", "c1")
			w.expect("start merge/g1")
			w.arrivePinned("merge", "q2", "c2", nil, true)
			w.arrive("merge", "g3", "c3", "a")
			w.arrive("merge", "g4", "c4", "b")
			w.expect()
			w.finish("g1")
			w.expect("start merge/q2")
			w.finish("q2")
			w.expect("coalesce merge/g3+g4 -> m1 @c4 files=[a b]")

			w.arrivePinned("deploy", "d1", "c1", nil, true)
			w.expect("start deploy/d1")
			w.arriveAll("deploy", "d2", "c2")
			w.expect()
			w.finish("d1")
			w.expect("start deploy/d2")
		},
	},
	{
		name:  "supercedent: three events while one runs leave only the newest waiting",
		pipes: []Pipeline{pipe("hourly", supercedent)},
		run: func(w *world) {
			w.arriveAll("hourly", "b1", "c1")
			w.expect("start hourly/b1")
			w.arriveAll("hourly", "b2", "c2")
			w.expect()
			w.arriveAll("hourly", "b3", "c3")
			w.expect("supersede hourly/b2 by b3")
			w.arriveAll("hourly", "b4", "c4444444444444444")
			w.expect("supersede hourly/b3 by b4")
			if got, want := w.fate["b3"], "superseded by b4"; got != want {
				w.t.Fatalf("fate of b3 = %q, want %q", got, want)
			}
			sup := w.plans[len(w.plans)-1].Actions[0].(Supersede)
			for _, s := range []string{"b4", "c44444444444", "supercedent"} {
				if !strings.Contains(sup.Reason, s) {
					w.t.Errorf("supersede reason %q does not say %q", sup.Reason, s)
				}
			}
			if got := w.queued("hourly"); !slices.Equal(got, []string{"b4"}) {
				w.t.Fatalf("queued = %v, want [b4]", got)
			}
			w.finish("b1")
			w.expect("start hourly/b4")
		},
	},
	{
		name:  "supercedent with several queued and nothing running starts the newest",
		pipes: []Pipeline{pipe("hourly", supercedent)},
		run: func(w *world) {
			w.queue("hourly", "b1", "c1", nil)
			w.queue("hourly", "b2", "c2", nil)
			w.queue("hourly", "b3", "c3", nil)
			w.decide()
			w.expect("supersede hourly/b1 by b3", "supersede hourly/b2 by b3", "start hourly/b3")
		},
	},
	{
		name:  "independent starts every buildset at once",
		pipes: []Pipeline{pipe("check", independent)},
		run: func(w *world) {
			w.arrive("check", "b1", "c1")
			w.arrive("check", "b2", "c2")
			w.expect("start check/b1", "start check/b2")
			w.queue("check", "b4", "c4", nil)
			w.queue("check", "b3", "c3", nil)
			w.decide()
			w.expect("start check/b4", "start check/b3") // arrival order
			if got := w.running("check"); len(got) != 4 {
				w.t.Fatalf("running = %v, want 4", got)
			}
		},
	},
	{
		name:  "coalesce merges the waiting ones into one for the newest commit with the union of files",
		pipes: []Pipeline{pipe("deploy", coalesceM)},
		run: func(w *world) {
			w.arrive("deploy", "b1", "c1", "x")
			w.expect("start deploy/b1")
			w.arrive("deploy", "b2", "c2", "playbooks/zuul.yaml", "docs/a")
			w.arrive("deploy", "b3", "c3", "inventory/zuul")
			w.arrive("deploy", "b4", "c4", "docs/a", "playbooks/base.yaml")
			w.expect() // nothing merges while b1 runs
			if got := w.queued("deploy"); len(got) != 3 {
				w.t.Fatalf("queued = %v, want 3 (merging waits for dispatch)", got)
			}
			plan := w.finish("b1")
			w.expect("coalesce deploy/b2+b3+b4 -> m1 @c4 files=[docs/a inventory/zuul playbooks/base.yaml playbooks/zuul.yaml]")
			c := plan.Actions[0].(Coalesce)
			if c.Into != NewBuildset || !c.Since.Equal(w.made["b2"].CreatedAt) {
				w.t.Fatalf("into %q since %v, want %q and b2's creation", c.Into, c.Since, NewBuildset)
			}
			if !strings.Contains(c.Reason, "c4") || !strings.Contains(c.Reason, "b4") {
				w.t.Errorf("reason %q does not name the newest commit and its buildset", c.Reason)
			}
			if got, want := c.MemberReason("bs-9"), "coalesced into bs-9 with b2, b3, b4, for commit c4"; got != want {
				w.t.Errorf("member reason = %q, want %q", got, want)
			}
			w.arrive("deploy", "b5", "c5", "y")
			w.finish("m1")
			w.expect("start deploy/b5")
		},
	},
	{
		name:  "coalesce: a member without a file list makes the merge run every job",
		pipes: []Pipeline{pipe("deploy", coalesceM)},
		run: func(w *world) {
			w.arrive("deploy", "b1", "c1", "x")
			w.arrive("deploy", "b2", "c2", "a")
			w.arriveAll("deploy", "b3", "c3") // cron or manual: no file list
			w.arrive("deploy", "b4", "c4", "b")
			w.finish("b1")
			w.expect("start deploy/b1", "coalesce deploy/b2+b3+b4 -> m1 @c4 files=all")
			c := w.plans[len(w.plans)-1].Actions[0].(Coalesce)
			if !strings.Contains(c.Reason, "b3 has no file list") {
				w.t.Errorf("reason %q does not say why every job runs", c.Reason)
			}
		},
	},
	{
		name:  "coalesce: an empty file list also means every job",
		pipes: []Pipeline{pipe("deploy", coalesceM)},
		run: func(w *world) {
			w.arrive("deploy", "b1", "c1", "x")
			w.arriveFiles("deploy", "b2", "c2", []string{}) // an empty commit
			w.arrive("deploy", "b3", "c3", "a")
			w.finish("b1")
			w.expect("start deploy/b1", "coalesce deploy/b2+b3 -> m1 @c3 files=all")
		},
	},
	{
		name:  "coalesce with a single waiter just starts it",
		pipes: []Pipeline{pipe("deploy", coalesceM)},
		run: func(w *world) {
			w.arrive("deploy", "b1", "c1", "x")
			w.arrive("deploy", "b2", "c2", "y")
			w.finish("b1")
			w.expect("start deploy/b1", "start deploy/b2")
		},
	},
	{
		name:  "pause of one pipeline: events queue, nothing starts, running and other pipelines go on",
		pipes: []Pipeline{pipe("deploy", serial), pipe("check", independent), pipe("hourly", supercedent)},
		run: func(w *world) {
			w.arrive("deploy", "d1", "c1")
			w.expect("start deploy/d1")
			w.pause("deploy", "alice", "incident 42")
			w.arrive("deploy", "d2", "c2")
			w.arrive("check", "k1", "c2")
			w.expect("start check/k1")
			w.finish("d1") // a running buildset finishes normally
			plan := w.decide()
			w.expect()
			wantWaits(w.t, plan, "deploy/d2: pipeline deploy paused by alice: incident 42")
			w.pause("hourly", "alice", "")
			w.arriveAll("hourly", "h1", "c1")
			w.arriveAll("hourly", "h2", "c2")
			w.expect("supersede hourly/h1 by h2") // bookkeeping goes on while paused
			w.resume("deploy")
			w.expect("start deploy/d2")
			w.resume("hourly")
			w.expect("start hourly/h2")
		},
	},
	{
		name:  "pause of all pipelines: nothing starts anywhere until resumed; merging waits for dispatch",
		pipes: []Pipeline{pipe("deploy", coalesceM), pipe("check", independent), pipe("hourly", supercedent)},
		run: func(w *world) {
			w.arrive("deploy", "d1", "c1", "a")
			w.expect("start deploy/d1")
			w.pause("check", "carol", "flaky")
			w.pauseEverything("bob", "freeze")
			w.arrive("deploy", "d2", "c2", "b")
			w.arrive("deploy", "d3", "c3", "c")
			w.arrive("check", "k1", "c3")
			w.arriveAll("hourly", "h1", "c1")
			w.arriveAll("hourly", "h2", "c2")
			w.arriveAll("hourly", "h3", "c3")
			w.finish("d1")
			plan := w.plans[len(w.plans)-1]
			w.expect("supersede hourly/h1 by h2", "supersede hourly/h2 by h3")
			wantWaits(w.t, plan,
				"check/k1: all pipelines paused by bob: freeze",
				"deploy/d2: all pipelines paused by bob: freeze",
				"deploy/d3: all pipelines paused by bob: freeze",
				"hourly/h3: all pipelines paused by bob: freeze")
			w.resumeEverything()
			// check is still paused on its own.
			w.expect("coalesce deploy/d2+d3 -> m1 @c3 files=[b c]", "start hourly/h3") // d2 arrived before h3
		},
	},
	{
		name: "starts are ordered by precedence, then age, across pipelines",
		pipes: []Pipeline{
			pipe("periodic", serial).with(config.PrecedenceLow),
			pipe("hourly", supercedent),
			pipe("deploy", coalesceM).with(config.PrecedenceHigh),
			pipe("check", independent),
			pipe("release", serial).with(config.PrecedenceHigh),
		},
		run: func(w *world) {
			w.pauseEverything("ops", "maintenance")
			w.queue("periodic", "p1", "c1", nil)
			w.queue("hourly", "h1", "c1", nil)
			w.queue("check", "k1", "c1", nil)
			w.queue("deploy", "d1", "c1", []string{"a"})
			w.queue("release", "r1", "c1", nil)
			w.queue("deploy", "d2", "c2", []string{"b"})
			w.queue("check", "k2", "c2", nil)
			w.resumeEverything()
			w.expect(
				"coalesce deploy/d1+d2 -> m1 @c2 files=[a b]", // high, as old as d1
				"start release/r1",                            // high, newer than d1
				"start hourly/h1",                             // normal
				"start check/k1",
				"start check/k2",
				"start periodic/p1", // low, although the oldest
			)
		},
	},
	{
		name:  "equal creation times are ordered by arrival sequence",
		pipes: []Pipeline{pipe("a", independent), pipe("b", independent)},
		run: func(w *world) {
			w.pauseEverything("", "")
			at := w.clock
			w.queue("b", "x1", "c", nil)
			w.queue("a", "x2", "c", nil)
			for _, p := range w.pipes {
				for i := range p.Queued {
					p.Queued[i].CreatedAt = at
				}
			}
			w.resumeEverything()
			w.expect("start b/x1", "start a/x2")
		},
	},
	{
		name:  "a serial pipeline with two running (manager changed by a reload) starts nothing until both finish",
		pipes: []Pipeline{pipe("deploy", independent)},
		run: func(w *world) {
			w.arrive("deploy", "b1", "c1")
			w.arrive("deploy", "b2", "c2")
			w.expect("start deploy/b1", "start deploy/b2")
			w.pipes["deploy"].Manager = serial
			w.arrive("deploy", "b3", "c3")
			w.finish("b1")
			w.expect()
			w.finish("b2")
			w.expect("start deploy/b3")
		},
	},
	{
		name:  "an unknown manager acts as serial",
		pipes: []Pipeline{pipe("deploy", "fifo"), pipe("x", "")},
		run: func(w *world) {
			w.arrive("deploy", "b1", "c1")
			w.arrive("deploy", "b2", "c2")
			w.arrive("x", "x1", "c1")
			w.arrive("x", "x2", "c2")
			w.expect("start deploy/b1", "start x/x1")
		},
	},
}

func TestScenarios(t *testing.T) {
	t.Parallel()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			sc.run(newWorld(t, sc.pipes...))
		})
	}
}

// wantWaits checks the plan's Waiting entries, each as "pipeline/id: reason
// prefix".
func wantWaits(t testing.TB, plan Plan, want ...string) {
	t.Helper()
	var got []string
	for _, w := range plan.Waiting {
		got = append(got, w.Pipeline+"/"+w.Buildset+": "+w.Reason)
	}
	if len(got) != len(want) {
		t.Fatalf("waiting:\n  got  %q\n  want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("waiting[%d] = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

func TestWaitReasonsNameWhatIsWaitedFor(t *testing.T) {
	t.Parallel()
	s := Snapshot{Pipelines: []Pipeline{
		{Name: "deploy", Manager: serial, Precedence: config.PrecedenceHigh,
			Running: []Buildset{{ID: "b1"}}, Queued: []Buildset{{ID: "b2", Seq: 2}, {ID: "b3", Seq: 3}}},
		{Name: "hourly", Manager: supercedent, Running: []Buildset{{ID: "h1"}}, Queued: []Buildset{{ID: "h2"}}},
		{Name: "merge", Manager: coalesceM, Running: []Buildset{{ID: "m1"}}, Queued: []Buildset{{ID: "m2"}}},
	}}
	want := "" +
		"wait deploy/b2: waiting behind b1 (serial: one at a time, in arrival order)\n" +
		"wait deploy/b3: waiting behind b1 (serial: one at a time, in arrival order)\n" +
		"wait hourly/h2: waiting behind h1 (supercedent: one at a time; a newer event replaces this one)\n" +
		"wait merge/m2: waiting behind m1 (coalesce: the buildsets waiting merge into one when it finishes)\n"
	if got := Decide(s).String(); got != want {
		t.Fatalf("plan:\n%s\nwant:\n%s", got, want)
	}
}

func TestDecideDoesNotModifyTheSnapshot(t *testing.T) {
	t.Parallel()
	s := Snapshot{Pipelines: []Pipeline{
		{Name: "deploy", Manager: coalesceM, Queued: []Buildset{
			{ID: "b3", Seq: 3, Files: []string{"z", "a"}}, {ID: "b1", Seq: 1, Files: []string{"m"}}}},
		{Name: "a", Manager: supercedent, Queued: []Buildset{{ID: "a2", Seq: 2}, {ID: "a1", Seq: 1}}},
	}}
	before := clone(s)
	Decide(s)
	if _, err := Enqueue(s, "a", Buildset{ID: "a3", Seq: 4}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, before) {
		t.Fatalf("snapshot changed:\n%+v\nwas\n%+v", s, before)
	}
}

func TestEnqueueRefusesUnknownPipelineAndDuplicateID(t *testing.T) {
	t.Parallel()
	s := Snapshot{Pipelines: []Pipeline{{Name: "deploy", Manager: serial, Running: []Buildset{{ID: "b1"}}}}}
	if _, err := Enqueue(s, "nope", Buildset{ID: "b2"}); !errors.Is(err, ErrUnknownPipeline) {
		t.Errorf("unknown pipeline: err = %v, want ErrUnknownPipeline", err)
	}
	if _, err := Enqueue(s, "deploy", Buildset{ID: "b1"}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate: err = %v, want ErrDuplicate", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	good := Snapshot{Pipelines: []Pipeline{
		{Name: "deploy", Manager: serial, Precedence: config.PrecedenceHigh, Queued: []Buildset{{ID: "b2"}}, Running: []Buildset{{ID: "b1"}}},
	}}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid snapshot: %v", err)
	}
	bad := Snapshot{Pipelines: []Pipeline{
		{Name: "deploy", Manager: "fifo", Precedence: "urgent", Queued: []Buildset{{ID: "b1"}}},
		{Name: "deploy", Manager: serial, Precedence: config.PrecedenceLow, Running: []Buildset{{ID: "b1"}}},
	}}
	err := bad.Validate()
	if !errors.Is(err, ErrDuplicate) {
		t.Fatalf("err = %v, want ErrDuplicate among others", err)
	}
	for _, s := range []string{`listed twice`, `unknown manager "fifo"`, `unknown precedence "urgent"`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("err %q does not say %q", err, s)
		}
	}
}

func TestEmptySnapshotGivesEmptyPlan(t *testing.T) {
	t.Parallel()
	if p := Decide(Snapshot{}); !p.Empty() || len(p.Waiting) != 0 {
		t.Fatalf("plan = %v", p)
	}
	p := Decide(Snapshot{Pipelines: []Pipeline{{Name: "idle", Manager: serial, Running: []Buildset{{ID: "b1"}}}}})
	if !p.Empty() || len(p.Waiting) != 0 {
		t.Fatalf("plan = %v", p)
	}
}

func clone(s Snapshot) Snapshot {
	c := s
	c.Pipelines = slices.Clone(s.Pipelines)
	for i, p := range c.Pipelines {
		p.Queued = slices.Clone(p.Queued)
		p.Running = slices.Clone(p.Running)
		for j := range p.Queued {
			p.Queued[j].Files = slices.Clone(p.Queued[j].Files)
		}
		c.Pipelines[i] = p
	}
	return c
}

func TestEqualTimeAndSequenceFallBackToID(t *testing.T) {
	t.Parallel()
	s := Snapshot{Pipelines: []Pipeline{{Name: "deploy", Manager: serial, Queued: []Buildset{{ID: "b2"}, {ID: "b1"}}}}}
	if got := Decide(s).Actions; len(got) != 1 || got[0].(Start).Buildset != "b1" {
		t.Fatalf("actions = %v, want start b1", got)
	}
}
