package store_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// TestBuildWriteCheck: a write no store could make is refused, the error
// naming it; a good one passes.
func TestBuildWriteCheck(t *testing.T) {
	f := store.Fence{Owner: "p1", Epoch: 1}
	att := func(n int, at time.Time, owner string) store.BuildWrite {
		return store.BuildWrite{Start: &store.StartAttemptParams{
			Attempt: &store.Attempt{BuildsetID: "bs", Job: "web", Number: n, Owner: owner, StartedAt: at}, Fence: f}}
	}
	now := time.Now()
	for _, tc := range []struct {
		name string
		w    store.BuildWrite
		want string // "" for none
	}{
		{"start", att(1, now, "p1"), ""},
		{"no attempt", store.BuildWrite{Start: &store.StartAttemptParams{Fence: f}}, "nil attempt"},
		{"number 0", att(0, now, "p1"), "bs/web #0: number must be at least 1"},
		{"no time", att(1, time.Time{}, "p1"), "bs/web #1: StartedAt is zero"},
		{"another owner", att(1, now, "p2"), `owner "p2" is not the fence's "p1"`},
		{"attempt end", store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs", Job: "web", Number: 1, Result: store.Success}}, ""},
		{"attempt end without result", store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs", Job: "web", Number: 1}}, "finish attempt bs/web #1: empty result"},
		{"build end without result", store.BuildWrite{FinishBuild: &store.FinishBuildParams{BuildsetID: "bs", Job: "web"}}, "finish build bs/web: empty result"},
		{"nothing", store.BuildWrite{}, "an empty write"},
	} {
		err := tc.w.Check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want none", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
