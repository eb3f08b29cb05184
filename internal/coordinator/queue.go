package coordinator

import (
	"cmp"
	"context"
	"maps"
	"slices"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/pipeline"
	"github.com/sortie-ci/sortie/internal/store"
)

// queue is the managers' view of the active buildsets, kept from one pass
// to the next so that a pass costs what changed, not what is active: it
// reads everything once (store.ChangedBuildsets from a zero cursor), then
// at each pass only what changed since the read before, without plans
// and specs. It reads everything again under a new term (leadership lost
// and gained again, or this process a new owner) and after any error of
// a pass, since what that pass did is then unknown.
//
// A pass over the same inputs as the last one (no buildset changed, the
// same config and pauses) after a pass that applied nothing would decide
// the same and apply nothing: it is skipped (settled).
type queue struct {
	// term is the term the view was read under (Owner and Term).
	term   store.Term
	cursor store.BuildsetCursor
	active map[string]*store.Buildset
	// sorted is active by Seq; nil when it must be made again.
	sorted []*store.Buildset

	// What the last pass decided over, and what it found.
	settled bool
	cfg     *config.Config
	pauses  *map[string]store.Pause
	plan    pipeline.Plan
	queued  map[string]int
}

// reset forgets the view: the next refresh reads everything.
func (q *queue) reset() {
	*q = queue{}
}

// refresh brings the view up to date for a pass under term, and reports
// whether any buildset changed (or was read for the first time).
func (q *queue) refresh(ctx context.Context, st Store, term store.Term) (bool, error) {
	if q.term.Owner != term.Owner || q.term.Term != term.Term {
		q.reset()
		q.term = store.Term{Owner: term.Owner, Term: term.Term}
	}
	ch, err := st.ChangedBuildsets(ctx, q.cursor)
	if err != nil {
		q.reset()
		return false, err
	}
	changed := false
	if q.cursor == 0 {
		q.active = make(map[string]*store.Buildset, len(ch.Buildsets))
		changed = true
	}
	for _, bs := range ch.Buildsets {
		old, had := q.active[bs.ID]
		switch {
		case bs.State == store.BuildsetDone:
			if had {
				delete(q.active, bs.ID)
				changed = true
			}
		case !had || old.State != bs.State || old.Owner != bs.Owner || old.PinnedTo != bs.PinnedTo:
			q.active[bs.ID] = bs
			changed = true
		}
		// Else read again unchanged (a change of a transaction still
		// running at the last read may be read twice).
	}
	q.cursor = ch.Cursor
	if changed {
		q.sorted = nil
		q.settled = false
	}
	return changed, nil
}

// list returns the active buildsets oldest first (by Seq), as
// ActiveBuildsets would.
func (q *queue) list() []*store.Buildset {
	if q.sorted == nil {
		q.sorted = slices.SortedFunc(maps.Values(q.active), func(a, b *store.Buildset) int {
			return cmp.Compare(a.Seq, b.Seq)
		})
	}
	return q.sorted
}

// pinned reports whether active buildset id is pinned to a run.
func (q *queue) pinned(id string) bool {
	bs := q.active[id]
	return bs != nil && bs.PinnedTo != ""
}
