package coordinator

import (
	"context"
	"maps"

	"github.com/sortie-ci/sortie/internal/store"
)

// The pauses are read from the store at start and after each change made
// through the coordinator, and kept: the managers and every run's Hold
// read them often. (A pause set by another process on the store is seen
// at the next start; step 6 of issue 12 reads them from the store.)

func (c *Coordinator) loadPauses(ctx context.Context) error {
	list, err := c.st.Pauses(ctx)
	if err != nil {
		return err
	}
	m := map[string]store.Pause{}
	for _, p := range list {
		m[p.Pipeline] = p
	}
	c.pauses.Store(&m)
	return nil
}

// Paused returns the pause in force for a pipeline (the pause of all, else
// the pipeline's own), nil if it runs. Paused("") is the pause of all.
func (c *Coordinator) Paused(pipeline string) *store.Pause {
	m := *c.pauses.Load()
	if p, ok := m[""]; ok {
		return &p
	}
	if p, ok := m[pipeline]; ok {
		return &p
	}
	return nil
}

// Pauses returns every pause in force, by pipeline ("" for all).
func (c *Coordinator) Pauses() map[string]store.Pause { return maps.Clone(*c.pauses.Load()) }

// SetPause pauses a pipeline (or all, p.Pipeline ""): its managers admit
// nothing, and its running buildsets start no new attempt. It is
// recorded in the store first.
func (c *Coordinator) SetPause(ctx context.Context, p store.Pause) error {
	if err := c.st.SetPause(ctx, p); err != nil {
		return err
	}
	return c.pausesChanged(ctx)
}

// ClearPause lifts the pause of a pipeline ("" for the pause of all).
func (c *Coordinator) ClearPause(ctx context.Context, pipeline string) error {
	if err := c.st.ClearPause(ctx, pipeline); err != nil {
		return err
	}
	return c.pausesChanged(ctx)
}

func (c *Coordinator) pausesChanged(ctx context.Context) error {
	if err := c.loadPauses(ctx); err != nil {
		return err
	}
	c.wake()
	return nil
}
