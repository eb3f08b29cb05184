package storetest

import (
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

func hostsBuildset(t *testing.T, s store.Store, id string, jobs ...string) {
	t.Helper()
	create(t, s, &store.Buildset{ID: id, Pipeline: "deploy", Commit: "c", CreatedAt: at(0)}, jobs...)
}

func updateHosts(t *testing.T, s store.Store, p store.HostsUpdate) {
	t.Helper()
	must(t, "update hosts of "+p.BuildsetID+"/"+p.Job, s.UpdateHosts(t.Context(), p))
}

func buildHosts(t *testing.T, s store.Store, id, job string) *store.BuildHosts {
	t.Helper()
	b, err := s.BuildHosts(t.Context(), id, job)
	must(t, "hosts of "+id+"/"+job, err)
	return b
}

func testHosts(t *testing.T, s store.Store) {
	hostsBuildset(t, s, "bs1", "boot", "web")
	if got := buildHosts(t, s, "bs1", "web"); got.Summary.Attempt != 0 || got.Recaps != nil || got.Tasks != nil || got.Results != nil {
		t.Fatalf("hosts of a build that recorded nothing: %+v, want nothing", got)
	}
	first := store.HostsUpdate{
		BuildsetID: "bs1", Job: "web",
		Summary: store.HostsSummary{Attempt: 1, Runs: 1, Plays: 1},
		Tasks:   []store.HostTask{{Index: 0, Play: "web servers", Name: "install nginx"}, {Index: 1, Play: "web servers", Name: "write the site"}},
		Results: []store.HostResult{
			{Seq: 0, Task: 0, Host: "web01", Status: store.HostChanged, Duration: 1500 * time.Millisecond, Diff: "--- before\n+++ after\n"},
			{Seq: 1, Task: 0, Host: "web02", Status: store.HostFailed, Duration: 20 * time.Millisecond, Message: "no package nginx"},
			{Seq: 2, Task: 1, Host: "web01", Status: store.HostFailed, Ignored: true, Message: "ignored"},
		},
		Recaps: []store.HostRecap{
			{Host: "web02", HostCounts: store.HostCounts{Failed: 1}},
			{Host: "web01", HostCounts: store.HostCounts{OK: 2, Changed: 1, Ignored: 1}},
			// Byte order: upper case before lower case.
			{Host: "Web03", HostCounts: store.HostCounts{Unreachable: 1}},
		},
	}
	updateHosts(t, s, first)
	want := &store.BuildHosts{
		Job: "web", Summary: first.Summary, Tasks: first.Tasks, Results: first.Results,
		Recaps: []store.HostRecap{first.Recaps[2], first.Recaps[1], first.Recaps[0]},
	}
	diff(t, "hosts after the first update", want, buildHosts(t, s, "bs1", "web"))

	// A second write of the same attempt: a row kept already stays as it
	// is (a write tried again), new ones are added, recaps replaced by
	// host, the summary as a whole.
	second := store.HostsUpdate{
		BuildsetID: "bs1", Job: "web",
		Summary: store.HostsSummary{Attempt: 1, Runs: 2, Plays: 3, Dropped: 7, Note: "the output ended early"},
		Tasks:   []store.HostTask{{Index: 1, Play: "other", Name: "other"}, {Index: 2, Play: "db", Name: "restart"}},
		Results: []store.HostResult{
			{Seq: 2, Task: 0, Host: "x", Status: store.HostOK},
			{Seq: 3, Task: 2, Host: "web01", Status: store.HostSkipped, Duration: 3 * time.Millisecond},
		},
		Recaps: []store.HostRecap{{Host: "web01", HostCounts: store.HostCounts{OK: 3, Changed: 1, Skipped: 1, Rescued: 2, Ignored: 1}}},
	}
	updateHosts(t, s, second)
	want.Summary = second.Summary
	want.Tasks = append(want.Tasks, second.Tasks[1])
	want.Results = append(want.Results, second.Results[1])
	want.Recaps[1] = second.Recaps[0]
	diff(t, "hosts after the second update", want, buildHosts(t, s, "bs1", "web"))
	if got := buildHosts(t, s, "bs1", "boot"); got.Summary.Attempt != 0 || got.Results != nil {
		t.Errorf("hosts of the other build: %+v, want nothing", got)
	}
}

func testHostsNewAttempt(t *testing.T, s store.Store) {
	hostsBuildset(t, s, "bs1", "web")
	updateHosts(t, s, store.HostsUpdate{
		BuildsetID: "bs1", Job: "web", Summary: store.HostsSummary{Attempt: 1, Runs: 1, Note: "first"},
		Tasks:   []store.HostTask{{Index: 0, Name: "a"}},
		Results: []store.HostResult{{Seq: 0, Task: 0, Host: "h1", Status: store.HostUnreachable, Message: "down"}},
		Recaps:  []store.HostRecap{{Host: "h1", HostCounts: store.HostCounts{Unreachable: 1}}},
	})
	// The next attempt starts afresh: nothing of the first is left.
	second := store.HostsUpdate{
		BuildsetID: "bs1", Job: "web", Summary: store.HostsSummary{Attempt: 2, Runs: 1, Plays: 1},
		Tasks:   []store.HostTask{{Index: 0, Name: "b"}},
		Results: []store.HostResult{{Seq: 0, Task: 0, Host: "h2", Status: store.HostOK}},
		Recaps:  []store.HostRecap{{Host: "h2", HostCounts: store.HostCounts{OK: 1}}},
	}
	updateHosts(t, s, second)
	want := &store.BuildHosts{Job: "web", Summary: second.Summary, Tasks: second.Tasks, Results: second.Results, Recaps: second.Recaps}
	diff(t, "hosts of attempt 2", want, buildHosts(t, s, "bs1", "web"))
	// A late write of the earlier attempt changes nothing.
	err := s.UpdateHosts(t.Context(), store.HostsUpdate{
		BuildsetID: "bs1", Job: "web", Summary: store.HostsSummary{Attempt: 1, Note: "late"},
		Recaps: []store.HostRecap{{Host: "h1", HostCounts: store.HostCounts{Failed: 1}}},
	})
	wantErr(t, "a write of attempt 1 after attempt 2's", err, store.ErrConflict)
	diff(t, "hosts after the late write", want, buildHosts(t, s, "bs1", "web"))
}

func testHostsUnknown(t *testing.T, s store.Store) {
	hostsBuildset(t, s, "bs1", "web")
	err := s.UpdateHosts(t.Context(), store.HostsUpdate{BuildsetID: "bs1", Job: "nope", Summary: store.HostsSummary{Attempt: 1}})
	wantErr(t, "update hosts of an unknown build", err, store.ErrNotFound)
	err = s.UpdateHosts(t.Context(), store.HostsUpdate{BuildsetID: "nope", Job: "web", Summary: store.HostsSummary{Attempt: 1}})
	wantErr(t, "update hosts of an unknown buildset", err, store.ErrNotFound)
	_, err = s.BuildHosts(t.Context(), "bs1", "nope")
	wantErr(t, "hosts of an unknown build", err, store.ErrNotFound)
	_, err = s.BuildsetHosts(t.Context(), "nope")
	wantErr(t, "hosts of an unknown buildset", err, store.ErrNotFound)
	list, err := s.BuildsetHosts(t.Context(), "bs1")
	must(t, "hosts of a buildset without results", err)
	if list != nil {
		t.Errorf("hosts of a buildset without results: %+v, want nil", list)
	}
}

func testHostsBuildset(t *testing.T, s store.Store) {
	hostsBuildset(t, s, "bs1", "boot", "zz-first", "aa-second", "quiet")
	hostsBuildset(t, s, "bs2", "boot", "aa-second")
	up := func(id, job string, recaps ...store.HostRecap) {
		updateHosts(t, s, store.HostsUpdate{BuildsetID: id, Job: job, Summary: store.HostsSummary{Attempt: 1, Runs: 1, Plays: 1, Note: job}, Recaps: recaps})
	}
	r := func(host string, failed int) store.HostRecap {
		return store.HostRecap{Host: host, HostCounts: store.HostCounts{OK: 1, Failed: failed}}
	}
	up("bs1", "aa-second", r("web02", 0), r("web01", 1))
	up("bs1", "zz-first", r("web01", 0))
	up("bs2", "aa-second", r("other", 0))
	got, err := s.BuildsetHosts(t.Context(), "bs1")
	must(t, "hosts of bs1", err)
	sm := store.HostsSummary{Attempt: 1, Runs: 1, Plays: 1}
	want := []*store.BuildHosts{
		{Job: "zz-first", Summary: withNote(sm, "zz-first"), Recaps: []store.HostRecap{r("web01", 0)}},
		{Job: "aa-second", Summary: withNote(sm, "aa-second"), Recaps: []store.HostRecap{r("web01", 1), r("web02", 0)}},
	}
	diff(t, "hosts of bs1, in build order", want, got)
}

func withNote(s store.HostsSummary, note string) store.HostsSummary {
	s.Note = note
	return s
}
