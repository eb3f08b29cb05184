package server

// Data methods for the web pages (internal/web) that the JSON API does not
// need: a job's history, a filtered page of buildsets, the tail of a log,
// commit subjects, jobs' median durations.
// They read the store only through its interface.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/source"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store"
)

// historyPage is how many buildsets a history scan reads from the store at
// once, and historyScan how many it reads at most for one answer (a filter
// that matches little returns a short page and a Next to scan on from).
const (
	historyPage = 100
	historyScan = 1000
)

// HistoryQuery filters the buildsets of History. Zero fields do not filter.
type HistoryQuery struct {
	Pipeline string
	// Job keeps the buildsets that have a build of this job.
	Job    string
	Result string
	// Commit is a full commit id or a prefix of one (at least 4 hex digits).
	Commit string
	// Before continues from a previous page's Next.
	Before string
	Limit  int // 0: 50
}

// HistoryRow is one buildset of a History page.
type HistoryRow struct {
	ID        string
	Pipeline  string
	Commit    string
	State     string
	Result    string // "" while not done
	Cause     string
	RerunOf   string
	CreatedAt time.Time
	StartedAt *time.Time
	// FinishedAt is nil while the buildset is not done.
	FinishedAt *time.Time
	// Build is the build of HistoryQuery.Job, when the query names one.
	Build *buildset.BuildReport
	// Mode is the buildset's check mode and limit.
	Mode buildset.Mode
}

// HistoryPage is one page of History, newest first.
type HistoryPage struct {
	Rows []HistoryRow
	// Next is the HistoryQuery.Before of the next page; "" on the last.
	Next string
}

// History lists buildsets newest first, filtered by pipeline, result,
// commit (prefix) and job (the buildsets with a build of that job; with a
// job, the result filter applies to that build).
// Filters the store cannot apply are applied here over pages of buildsets;
// one call reads at most historyScan of them.
func (s *Server) History(ctx context.Context, q HistoryQuery) (*HistoryPage, error) {
	if q.Limit <= 0 {
		q.Limit = 50
	}
	commit := strings.ToLower(strings.TrimSpace(q.Commit))
	f := store.Filter{Pipeline: q.Pipeline, Result: store.Result(q.Result), Before: q.Before, Limit: historyPage}
	if q.Job != "" {
		// With a job, the result is the job's build's ("where did
		// service-zuul fail?"), not the buildset's.
		f.Result = ""
	}
	if len(commit) == 40 {
		f.Commit = commit
	}
	out := &HistoryPage{Rows: []HistoryRow{}}
	scanned := 0
	for {
		list, err := s.reads.ListBuildsets(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, bs := range list {
			scanned++
			if commit != "" && !strings.HasPrefix(bs.Commit, commit) {
				if scanned >= historyScan {
					out.Next = bs.ID
					return out, nil
				}
				continue
			}
			row := HistoryRow{
				ID: bs.ID, Pipeline: bs.Pipeline, Commit: bs.Commit, State: string(bs.State), Result: string(bs.Result),
				Cause: bs.Cause, RerunOf: bs.RerunOf, CreatedAt: bs.CreatedAt, StartedAt: bs.StartedAt, FinishedAt: bs.FinishedAt,
				Mode: buildset.ModeOf(bs),
			}
			keep := true
			if q.Job != "" {
				b, err := s.buildOfJob(ctx, bs, q.Job)
				if err != nil {
					return nil, err
				}
				row.Build, keep = b, b != nil
				if keep && q.Result != "" && b.Result != q.Result {
					keep = false
				}
			}
			if keep {
				out.Rows = append(out.Rows, row)
			}
			if len(out.Rows) == q.Limit || scanned >= historyScan {
				out.Next = bs.ID
				return out, nil
			}
		}
		if len(list) < f.Limit {
			return out, nil // the last page: nothing older
		}
		f.Before = list[len(list)-1].ID
	}
}

// buildOfJob returns the build of job in bs, or nil when bs does not run
// it: one row read by its key, whatever the size of the buildset (the
// listed buildsets come without their plans to look in first).
func (s *Server) buildOfJob(ctx context.Context, bs *store.Buildset, job string) (*buildset.BuildReport, error) {
	b, err := s.reads.Build(ctx, bs.ID, job)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	r := &buildset.BuildReport{
		Job: b.Job, Result: string(b.Result), Attempt: b.Attempt,
		StartedAt: buildset.TimeOf(b.StartedAt), FinishedAt: buildset.TimeOf(b.FinishedAt), Reason: b.Reason,
	}
	if b.Attempt > 0 {
		r.Log = logURL(bs.ID, job, b.Attempt)
	}
	return r, nil
}

// JobHistory returns the latest builds of a job (at most limit), newest
// first, from the latest historyScan buildsets of any pipeline.
func (s *Server) JobHistory(ctx context.Context, job string, limit int) ([]HistoryRow, error) {
	if job == "" {
		return nil, errors.New("no job named")
	}
	page, err := s.History(ctx, HistoryQuery{Job: job, Limit: limit})
	if err != nil {
		return nil, err
	}
	return page.Rows, nil
}

// JobMedian is the median duration of the job's last successful attempts
// (the history the scheduler weighs jobs by); ok is false without history.
func (s *Server) JobMedian(ctx context.Context, job string) (d time.Duration, ok bool, err error) {
	m, err := s.reads.JobDurations(ctx, []string{job})
	if err != nil {
		return 0, false, err
	}
	d, ok = m[job]
	return d, ok, nil
}

// LogTail is the end of one attempt's log, cut at line starts.
type LogTail struct {
	// Attempt is the attempt read: 0 when the build never started.
	Attempt int
	// Data holds whole lines; the last attempt's partial last line only
	// once the attempt is over.
	Data []byte
	// Start is the offset of Data in the file, Offset the offset just
	// after it: where following the log goes on from.
	Start, Offset int64
	// Size is the file's size when it was read.
	Size int64
	// Done says the attempt is over (its log will not grow).
	Done bool
}

// LogTail reads the last tail bytes (from a line start) of an attempt's log:
// the latest attempt when attempt is 0. It returns store.ErrNotFound for
// an attempt the build does not have.
func (s *Server) LogTail(ctx context.Context, id, job string, attempt int, tail int64) (*LogTail, error) {
	atts, err := s.reads.Attempts(ctx, id, job)
	if err != nil {
		return nil, err
	}
	if attempt == 0 {
		attempt = len(atts)
	}
	if attempt < 0 || attempt > len(atts) {
		return nil, fmt.Errorf("%s of %s has no attempt %d: %w", job, id, attempt, store.ErrNotFound)
	}
	out := &LogTail{Attempt: attempt}
	if attempt == 0 {
		return out, nil
	}
	a := atts[attempt-1]
	out.Done = a.Result != ""
	log, err := logs.Open(ctx, s.reads, a)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	out.Size = log.Size()
	if out.Start, err = logs.LineStart(log, out.Size, tail); err != nil {
		return nil, err
	}
	// Read what was there when it was opened (the log may grow meanwhile).
	data := make([]byte, out.Size-out.Start)
	if _, err := log.ReadAt(data, out.Start); err != nil && err != io.EOF {
		return nil, err
	}
	if !out.Done {
		// A partial last line is followed later, once it is whole.
		data = data[:bytes.LastIndexByte(data, '\n')+1]
	}
	out.Data = data
	out.Offset = out.Start + int64(len(data))
	return out, nil
}

// Commits returns the subjects and authors of the commits shas (full
// hashes) from the server's mirror, leaving out those it does not have
// (source.Mirror.Commits). A commit never changes: callers cache them.
func (s *Server) Commits(ctx context.Context, shas []string) (map[string]source.Commit, error) {
	return s.opt.Mirror.Commits(ctx, shas...)
}

// JobMedians is JobMedian for several jobs at once: the median duration of
// each job's last successful attempts; jobs without history are left out.
func (s *Server) JobMedians(ctx context.Context, jobs []string) (map[string]time.Duration, error) {
	return s.st.JobDurations(ctx, jobs)
}

// LogLines returns the last n lines of the latest attempt's log of a build
// (logs.Tail: a partial last line counts), oldest first, and that attempt;
// no lines when the build never started or its attempt printed nothing.
func (s *Server) LogLines(ctx context.Context, id, job string, n int) ([]string, int, error) {
	atts, err := s.st.Attempts(ctx, id, job)
	if err != nil || len(atts) == 0 {
		return nil, 0, err
	}
	a := atts[len(atts)-1]
	log, err := logs.Open(ctx, s.st, a)
	if err != nil {
		return nil, a.Number, err
	}
	defer log.Close()
	lines, err := logs.TailLines(log, n)
	return lines, a.Number, err
}
