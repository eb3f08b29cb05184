package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// followPoll is how often a followed log is checked for new lines.
const followPoll = 200 * time.Millisecond

// getLog serves a build's log: the latest attempt's unless ?attempt=N,
// whole unless ?tail=BYTES (the last bytes, from a line start), as
// text/plain; or, with ?follow=1 or Accept: text/event-stream, followed
// live as Server-Sent Events (one event per line, id "<attempt>:<offset>"
// so that a reconnecting client resumes with Last-Event-ID, or a new one
// with ?from=<attempt>:<offset>; an "attempt" event when a retry starts a
// new file; an "end" event with the build's result).
func (s *Server) getLog(w http.ResponseWriter, r *http.Request) {
	id, job := r.PathValue("id"), r.PathValue("job")
	q := r.URL.Query()
	atts, err := s.reads.Attempts(r.Context(), id, job)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			err = notFound(fmt.Sprintf("no build %s in buildset %s", job, id))
		}
		storeError(w, err)
		return
	}
	follow := q.Get("follow") != "" && q.Get("follow") != "0" || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	number := len(atts)
	if v := q.Get("attempt"); v != "" {
		if number, err = strconv.Atoi(v); err != nil || number < 1 || number > len(atts) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("%s of %s has no attempt %q", job, id, v))
			return
		}
	}
	var tail logTail
	if v := q.Get("tail"); v != "" {
		if tail.bytes, err = strconv.ParseInt(v, 10, 64); err != nil || tail.bytes < 0 {
			writeError(w, http.StatusBadRequest, "tail must be a number of bytes")
			return
		}
	}
	if v := q.Get("lines"); v != "" {
		if tail.lines, err = strconv.Atoi(v); err != nil || tail.lines < 0 {
			writeError(w, http.StatusBadRequest, "lines must be a number of lines")
			return
		}
	}
	if follow {
		s.followLog(w, r, id, job, number, tail)
		return
	}
	if number == 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		return // never started: an empty log
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	log, err := logs.Open(r.Context(), s.reads, atts[number-1])
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	defer log.Close()
	off, err := tail.start(log)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	io.CopyBuffer(w, io.NewSectionReader(log, off, log.Size()-off), make([]byte, 256<<10))
}

// logTail is where a log is read from: the last lines (?lines=N) or the
// first whole line of the last bytes (?tail=BYTES); the start when zero.
type logTail struct {
	bytes int64
	lines int
}

// start returns the offset in log where t starts.
func (t logTail) start(log logs.Reader) (int64, error) {
	if t.lines > 0 {
		return logs.TailOffset(log, log.Size(), t.lines)
	}
	return logs.LineStart(log, log.Size(), t.bytes)
}

func (s *Server) followLog(w http.ResponseWriter, r *http.Request, id, job string, number int, tail logTail) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	var offset int64
	// A reconnecting EventSource sends Last-Event-ID; a first connection
	// cannot set headers, so ?from=<attempt>:<offset> says the same (the
	// build page follows from where its server-side render stopped).
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("from")
	}
	if last != "" {
		a, o, ok := strings.Cut(last, ":")
		if n, err := strconv.Atoi(a); ok && err == nil && n >= 1 {
			if off, err := strconv.ParseInt(o, 10, 64); err == nil {
				number, offset, tail = n, off, logTail{}
			}
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: 1000\n\n")
	flusher.Flush()

	ctx := r.Context()
	var pending []byte // a partial last line, sent when completed
	for {
		atts, err := s.reads.Attempts(ctx, id, job)
		if err != nil {
			return
		}
		if number == 0 && len(atts) > 0 {
			number = 1
		}
		if number > 0 && number <= len(atts) {
			a := atts[number-1]
			sent, err := s.sendLines(ctx, w, a, number, &offset, &tail, &pending)
			if err != nil {
				return
			}
			if sent {
				flusher.Flush()
			}
			if a.Result != "" {
				// This attempt is over and fully read.
				if number < len(atts) {
					number, offset, pending = number+1, 0, nil
					fmt.Fprintf(w, "event: attempt\ndata: %d\n\n", number)
					flusher.Flush()
					continue
				}
				if b, done := s.buildDone(r, id, job); done {
					if len(pending) > 0 {
						writeEvent(w, number, offset, pending)
					}
					fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
					flusher.Flush()
					return
				}
			}
		} else if b, done := s.buildDone(r, id, job); done {
			fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
			flusher.Flush()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(followPoll):
		}
	}
}

func (s *Server) buildDone(r *http.Request, id, job string) (store.Result, bool) {
	builds, err := s.reads.Builds(r.Context(), id)
	if err != nil {
		return "", false
	}
	for _, b := range builds {
		if b.Job == job {
			return b.Result, b.State == store.BuildDone
		}
	}
	return "", false
}

// sendLines sends the complete lines of a's log from *offset on,
// advancing it.
func (s *Server) sendLines(ctx context.Context, w io.Writer, a *store.Attempt, number int, offset *int64, tail *logTail, pending *[]byte) (bool, error) {
	log, err := logs.Open(ctx, s.reads, a)
	if err != nil {
		return false, err
	}
	defer log.Close()
	if log.Size() == 0 || log.Size() <= *offset {
		return false, nil // nothing printed yet, or nothing new
	}
	if *tail != (logTail{}) {
		if *offset, err = tail.start(log); err != nil {
			return false, err
		}
		*tail = logTail{}
	}
	br := bufio.NewReaderSize(io.NewSectionReader(log, *offset, log.Size()-*offset), 64<<10)
	sent := false
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			*offset += int64(len(line))
			if line[len(line)-1] != '\n' {
				*pending = append(*pending, line...)
				return sent, nil
			}
			full := append(*pending, line[:len(line)-1]...)
			*pending = nil
			if err := writeEvent(w, number, *offset, full); err != nil {
				return sent, err
			}
			sent = true
		}
		if err == io.EOF {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
	}
}

func writeEvent(w io.Writer, number int, offset int64, line []byte) error {
	_, err := fmt.Fprintf(w, "id: %d:%d\ndata: %s\n\n", number, offset, bytes.ReplaceAll(line, []byte("\r"), nil))
	return err
}
