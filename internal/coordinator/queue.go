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
// It keeps each pipeline's decision too (pipeline.DecidePipeline), and a
// pass decides again only for the pipelines whose buildsets changed, or
// for all when the config or a pause changed; a pass with nothing to
// decide again, after a pass that applied nothing, would apply nothing:
// it is skipped (settled).
type queue struct {
	// term is the term the view was read under (Owner and Term).
	term   store.Term
	cursor store.BuildsetCursor
	// active are the active buildsets by ID, and byPipeline the same by
	// pipeline and ID.
	active     map[string]*store.Buildset
	byPipeline map[string]map[string]*store.Buildset
	// changed are the pipelines whose buildsets changed since they were
	// last decided for.
	changed map[string]bool

	// What the last pass decided over, and what it found: the decision
	// and the number of buildsets waiting for the managers of each
	// pipeline of cfg.
	settled   bool
	cfg       *config.Config
	pauses    *map[string]store.Pause
	decisions map[string]pipeline.Decision
	waiting   map[string]int
	plan      pipeline.Plan
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
		q.byPipeline = map[string]map[string]*store.Buildset{}
		q.changed = map[string]bool{}
		q.decisions = nil // decide for every pipeline
		changed = true
	}
	for _, bs := range ch.Buildsets {
		old, had := q.active[bs.ID]
		switch {
		case bs.State == store.BuildsetDone:
			if had {
				q.remove(old)
				changed = true
			}
		case !had || old.State != bs.State || old.Owner != bs.Owner || old.PinnedTo != bs.PinnedTo:
			if had {
				q.remove(old)
			}
			q.add(bs)
			changed = true
		}
		// Else read again unchanged (a change of a transaction still
		// running at the last read may be read twice).
	}
	q.cursor = ch.Cursor
	if changed {
		q.settled = false
	}
	return changed, nil
}

func (q *queue) add(bs *store.Buildset) {
	q.active[bs.ID] = bs
	m := q.byPipeline[bs.Pipeline]
	if m == nil {
		m = map[string]*store.Buildset{}
		q.byPipeline[bs.Pipeline] = m
	}
	m[bs.ID] = bs
	q.changed[bs.Pipeline] = true
}

func (q *queue) remove(bs *store.Buildset) {
	delete(q.active, bs.ID)
	if m := q.byPipeline[bs.Pipeline]; m != nil {
		delete(m, bs.ID)
		if len(m) == 0 {
			delete(q.byPipeline, bs.Pipeline)
		}
	}
	q.changed[bs.Pipeline] = true
}

// decide brings the decisions up to date for cfg and pauses: for every
// pipeline when they changed, else for those whose buildsets changed.
// It returns the active buildsets whose pipeline is not in cfg, of the
// pipelines it looked at, oldest first.
func (q *queue) decide(cfg *config.Config, pauses *map[string]store.Pause) (gone []*store.Buildset) {
	names := slices.Collect(maps.Keys(q.changed))
	if q.decisions == nil || cfg != q.cfg || pauses != q.pauses {
		q.decisions = map[string]pipeline.Decision{}
		q.waiting = map[string]int{}
		names = append(cfg.PipelineNames(), slices.Collect(maps.Keys(q.byPipeline))...)
		slices.Sort(names)
		names = slices.Compact(names)
	}
	var pauseAll *store.Pause
	if p, ok := (*pauses)[""]; ok {
		pauseAll = &p
	}
	for _, name := range names {
		delete(q.changed, name)
		active := slices.Collect(maps.Values(q.byPipeline[name]))
		if _, ok := cfg.Pipelines[name]; !ok {
			delete(q.decisions, name)
			delete(q.waiting, name)
			gone = append(gone, active...)
			continue
		}
		snap, _, waiting := snapshot(cfg, []string{name}, pauseAll, *pauses, active)
		q.decisions[name] = pipeline.DecidePipeline(snap.PauseAll, snap.Pipelines[0])
		q.waiting[name] = waiting[name]
	}
	q.cfg, q.pauses = cfg, pauses
	slices.SortFunc(gone, func(a, b *store.Buildset) int { return cmp.Compare(a.Seq, b.Seq) })
	return gone
}

// queued returns how many buildsets each pipeline has waiting for the
// managers, for the pipelines that have any.
func (q *queue) queued() map[string]int {
	out := map[string]int{}
	for name, n := range q.waiting {
		if n > 0 {
			out[name] = n
		}
	}
	return out
}

// pinned reports whether active buildset id is pinned to a run.
func (q *queue) pinned(id string) bool {
	bs := q.active[id]
	return bs != nil && bs.PinnedTo != ""
}
