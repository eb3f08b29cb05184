package sqlite_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// TestChangedBuildsetsAtRest: on SQLite, whose writes are one at a time,
// a read from the last cursor returns exactly what changed since, and
// nothing when nothing did, however many buildsets are active; a second
// process on the file sees the first's changes.
func TestChangedBuildsetsAtRest(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "sortie.db")
	s, other := open(t, path), open(t, path)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 50 {
		err := s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: &store.Buildset{
			ID: "q" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Pipeline: "deploy", Commit: "c", Plan: []byte(`{}`), CreatedAt: now,
		}, Jobs: []string{"a"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	read := func(since store.BuildsetCursor) ([]string, store.BuildsetCursor) {
		t.Helper()
		ch, err := other.ChangedBuildsets(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, bs := range ch.Buildsets {
			ids = append(ids, bs.ID+":"+string(bs.State))
		}
		return ids, ch.Cursor
	}
	all, c := read(0)
	if len(all) != 50 {
		t.Fatalf("a full read: %d buildsets, want 50", len(all))
	}
	if got, _ := read(c); got != nil {
		t.Errorf("a read with nothing changed: %v, want none", got)
	}
	f, err := s.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "leader", Kind: store.OwnerNode, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AdmitBuildset(ctx, "qaa", f, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: "qba", Result: store.Canceled, BuildResult: store.Canceled, At: now}); err != nil {
		t.Fatal(err)
	}
	// A write that sets none of state, owner and pinned_to is no change.
	if err := s.RequestCancel(ctx, "qca", "someone"); err != nil {
		t.Fatal(err)
	}
	got, c2 := read(c)
	slices.Sort(got)
	if want := []string{"qaa:ADMITTED", "qba:DONE"}; !slices.Equal(got, want) {
		t.Errorf("the read after an admission and an end: %v, want %v", got, want)
	}
	if got, _ := read(c2); got != nil {
		t.Errorf("a read with nothing changed since: %v, want none", got)
	}
}
