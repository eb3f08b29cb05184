// Package logs writes build logs: one timestamped line per line of output,
// with secret values redacted before anything reaches the file.
package logs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
)

// Redacted replaces every occurrence of a secret value in a log.
const Redacted = "***"

// Separator sits between a line's timestamp and its text.
const Separator = " | "

// timeLayout is RFC 3339 with nanoseconds, like time.RFC3339Nano, but with a
// fixed width so that the lines of a log align.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// defaultMaxLine is the longest partial line a Writer holds before it writes
// it as a line of its own, so that output without newlines (a progress bar,
// a binary dumped by mistake) cannot grow memory without bound.
const defaultMaxLine = 64 << 10

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("logs: writer closed")

// Writer turns output into log lines: it splits what is written into lines
// and writes each complete line at once, in a single Write to the underlying
// writer, as "<timestamp> | <text>\n" with every secret value replaced by
// Redacted. Only the current partial line is held back; Close writes it.
//
// Redaction works on whole lines, so a secret split across two Writes is
// still found. A secret value that spans several lines (a private key) is
// redacted line by line: each of its non-empty lines is a secret of its own.
//
// A Writer is safe for concurrent use; each Write is handled whole under a
// mutex, so lines written whole by concurrent writers never interleave (but
// partial lines from several writers join into one line: give each stream
// its own Writer, or merge them into one pipe first).
//
// The first error of the underlying writer is sticky: that Write and every
// later Write and Close return it.
type Writer struct {
	w       io.Writer
	secrets [][]byte // longest first
	clock   func() time.Time
	maxLine int

	mu     sync.Mutex
	buf    []byte // the current partial line
	err    error
	closed bool
}

// NewWriter returns a Writer writing to w. Empty secrets are ignored; clock
// gives the time of each line (nil means time.Now). Close does not close w.
func NewWriter(w io.Writer, secrets []string, clock func() time.Time) *Writer {
	if clock == nil {
		clock = time.Now
	}
	lw := &Writer{w: w, clock: clock, maxLine: defaultMaxLine}
	seen := map[string]bool{}
	for _, s := range secrets {
		for part := range strings.SplitSeq(s, "\n") {
			part = strings.TrimSuffix(part, "\r")
			if part == "" || seen[part] {
				continue
			}
			seen[part] = true
			lw.secrets = append(lw.secrets, []byte(part))
		}
	}
	slices.SortFunc(lw.secrets, func(a, b []byte) int { return len(b) - len(a) })
	if len(lw.secrets) > 0 && 2*len(lw.secrets[0]) > lw.maxLine {
		lw.maxLine = 2 * len(lw.secrets[0])
	}
	return lw
}

// Write writes the complete lines of p and keeps its trailing partial line
// for the next Write or Close. It reports len(p) unless the underlying writer
// failed.
func (lw *Writer) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.err != nil {
		return 0, lw.err
	}
	if lw.closed {
		return 0, ErrClosed
	}
	n := 0
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			lw.buf = append(lw.buf, p...)
			n += len(p)
			if len(lw.buf) > lw.maxLine {
				// One split leaves less than the longest secret behind.
				if err := lw.splitLong(); err != nil {
					return n, err
				}
			}
			return n, nil
		}
		var line []byte
		if len(lw.buf) > 0 {
			lw.buf = append(lw.buf, p[:i]...)
			line = lw.buf
		} else {
			line = p[:i]
		}
		if err := lw.writeLine(line, nil); err != nil {
			return n, err
		}
		lw.buf = lw.buf[:0]
		n += i + 1
		p = p[i+1:]
	}
	return n, nil
}

// Close writes the partial line held back, if any. It does not close the
// underlying writer. Calling it again does nothing and returns the sticky
// error, if any.
func (lw *Writer) Close() error {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.closed {
		return lw.err
	}
	lw.closed = true
	if lw.err == nil && len(lw.buf) > 0 {
		_ = lw.writeLine(lw.buf, nil)
	}
	lw.buf = nil
	return lw.err
}

// splitLong writes the start of an overlong partial line as a line of its
// own. It keeps back enough of the end that a secret that the next Write
// completes is still found whole, and never cuts through a secret found in
// what it writes.
func (lw *Writer) splitLong() error {
	mask := lw.mask(lw.buf)
	cut := len(lw.buf)
	if len(lw.secrets) > 0 {
		cut -= len(lw.secrets[0]) - 1
	}
	// A secret starting before cut lies wholly inside buf, so it is in mask;
	// move cut past one that runs across it.
	for cut < len(lw.buf) && cut > 0 && mask[cut-1] && mask[cut] {
		cut++
	}
	if err := lw.writeLine(lw.buf[:cut], mask[:cut]); err != nil {
		return err
	}
	lw.buf = append(lw.buf[:0], lw.buf[cut:]...)
	return nil
}

// writeLine writes one line, redacted, with its timestamp. mask, if not nil,
// is the precomputed mask of line.
func (lw *Writer) writeLine(line []byte, mask []bool) error {
	if mask == nil {
		mask = lw.mask(line)
	}
	out := make([]byte, 0, len(timeLayout)+len(Separator)+len(line)+1)
	out = lw.clock().UTC().AppendFormat(out, timeLayout)
	out = append(out, Separator...)
	out = appendRedacted(out, line, mask)
	out = append(out, '\n')
	if _, err := lw.w.Write(out); err != nil {
		lw.err = fmt.Errorf("logs: write: %w", err)
		return lw.err
	}
	return nil
}

// mask marks the bytes of line that belong to an occurrence of a secret.
// Marking every occurrence in the original text first, then replacing each
// marked run, redacts overlapping secrets whole, which replacing one secret
// after another would not.
func (lw *Writer) mask(line []byte) []bool {
	mask := make([]bool, len(line))
	for _, s := range lw.secrets {
		marked := 0 // mask[:marked] is already set for this secret
		for off := 0; off+len(s) <= len(line); {
			i := bytes.Index(line[off:], s)
			if i < 0 {
				break
			}
			start, end := off+i, off+i+len(s)
			for j := max(start, marked); j < end; j++ {
				mask[j] = true
			}
			marked = end
			off = start + 1
		}
	}
	return mask
}

// Redact returns s with every secret value of the Writer replaced by
// Redacted, line by line as in a log: for text about a build kept
// elsewhere than its log (a task's failure message). Safe for concurrent
// use.
func (lw *Writer) Redact(s string) string {
	if len(lw.secrets) == 0 || s == "" {
		return s
	}
	out := make([]byte, 0, len(s))
	for i, line := range strings.Split(s, "\n") {
		if i > 0 {
			out = append(out, '\n')
		}
		out = appendRedacted(out, []byte(line), lw.mask([]byte(line)))
	}
	return string(out)
}

// appendRedacted appends line to out with each run of masked bytes
// replaced by Redacted.
func appendRedacted(out, line []byte, mask []bool) []byte {
	for i := 0; i < len(line); {
		if !mask[i] {
			out = append(out, line[i])
			i++
			continue
		}
		out = append(out, Redacted...)
		for i < len(line) && mask[i] {
			i++
		}
	}
	return out
}
