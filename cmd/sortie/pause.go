package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// pauseWatch follows the pauses in the store for one pipeline, for a
// `sortie run`: a pause set by a server sharing the store (SPEC §2.4) holds
// the run's new builds as it holds the server's, and the run says so.
type pauseWatch struct {
	st       store.Pauses
	pipeline string
	say      func(line string)
	every    time.Duration

	held   atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// watchPauses reads the pauses now, then every `every` until stop, and
// says each change with say.
func watchPauses(ctx context.Context, st store.Pauses, pipeline string, say func(string), every time.Duration) *pauseWatch {
	w := &pauseWatch{st: st, pipeline: pipeline, say: say, every: every}
	w.check(ctx)
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.check(ctx)
			}
		}
	}()
	return w
}

// check reads the pauses and says when the pipeline's state changes. A
// store that cannot be read keeps the last state.
func (w *pauseWatch) check(ctx context.Context) {
	ps, err := w.st.Pauses(ctx)
	if err != nil {
		return
	}
	var p *store.Pause
	for i := range ps {
		if ps[i].Pipeline == "" || ps[i].Pipeline == w.pipeline {
			p = &ps[i]
			break // "" sorts first: a pause of everything wins
		}
	}
	// Each change is made on the side of its line that keeps the line
	// true: held before "no new build starts", released after "resumed".
	switch was := w.held.Load(); {
	case p != nil && !was:
		what := "pipeline " + w.pipeline
		if p.Pipeline == "" {
			what = "every pipeline"
		}
		w.held.Store(true)
		w.say(fmt.Sprintf("%s paused: %s is paused by %s (%s); no new build starts until it is resumed",
			stamp(time.Now()), what, p.By, p.Reason))
	case p == nil && was:
		w.say(fmt.Sprintf("%s resumed: %s", stamp(time.Now()), w.pipeline))
		w.held.Store(false)
	}
}

// Held reports whether new builds must wait (RunOptions.Hold).
func (w *pauseWatch) Held() bool { return w.held.Load() }

// stop ends the watch and waits for it.
func (w *pauseWatch) stop() {
	w.cancel()
	w.wg.Wait()
}
