package logs

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"time"
)

// tailChunk is how much Tail reads at a time, from the end backwards.
const tailChunk = 16 << 10

// Tail returns the last n lines of a log of size bytes read from r (a
// trailing partial line counts as a line), oldest first, without their
// newlines; see TailOffset.
func Tail(r io.ReaderAt, size int64, n int) ([]string, error) {
	off, err := TailOffset(r, size, n)
	if err != nil || off == size {
		return nil, err
	}
	buf := make([]byte, size-off)
	if _, err := r.ReadAt(buf, off); err != nil && err != io.EOF {
		return nil, err
	}
	return strings.Split(strings.TrimSuffix(string(buf), "\n"), "\n"), nil
}

// TailOffset returns where the last n lines of a log of size bytes start
// (size when n is 0; 0 when the log has n lines or fewer), reading r
// backwards from the end, so that the tail of a 100 MB log costs what its
// last lines weigh. A trailing partial line counts as a line.
func TailOffset(r io.ReaderAt, size int64, n int) (int64, error) {
	if n <= 0 || size <= 0 {
		return size, nil
	}
	end := size // the last newline ends the last line, not one more
	last := make([]byte, 1)
	if _, err := r.ReadAt(last, size-1); err != nil && err != io.EOF {
		return 0, err
	}
	if last[0] == '\n' {
		end--
	}
	chunk := make([]byte, tailChunk)
	for off := end; off > 0; {
		step := min(int64(tailChunk), off)
		off -= step
		if _, err := r.ReadAt(chunk[:step], off); err != nil && err != io.EOF {
			return 0, err
		}
		for i := step - 1; i >= 0; i-- {
			if chunk[i] == '\n' {
				if n--; n == 0 {
					return off + i + 1, nil
				}
			}
		}
	}
	return 0, nil
}

// Text is a log line's text: what follows its timestamp and Separator
// (the line as it is when it has none).
func Text(line string) string {
	if i := strings.Index(line, Separator); i > 0 {
		if _, err := time.Parse(time.RFC3339Nano, line[:i]); err == nil {
			return line[i+len(Separator):]
		}
	}
	return line
}

// ansiEscape matches the escape sequences a terminal interprets: CSI
// sequences (colours, cursor moves) and OSC ones (titles, links).
var ansiEscape = regexp.MustCompile(`\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])`)

// StripANSI removes terminal escape sequences, for output that is not a
// terminal (a CI log, a file).
func StripANSI(s string) string {
	if !strings.Contains(s, "\x1b") {
		return s
	}
	return ansiEscape.ReplaceAllString(s, "")
}

// TailLines returns the last n lines of a log opened for reading (see
// Tail).
func TailLines(r Reader, n int) ([]string, error) { return Tail(r, r.Size(), n) }

// LineStart returns where the first whole line of the last tail bytes of
// a log of size bytes starts: 0 when tail is 0 or not less than size, size
// when those bytes hold no line start. It reads forward from size-tail, at
// most one line.
func LineStart(r io.ReaderAt, size, tail int64) (int64, error) {
	if tail <= 0 || size <= tail {
		return 0, nil
	}
	off := size - tail
	buf := make([]byte, tailChunk)
	// The line starts at off if the byte before it ends a line.
	if _, err := r.ReadAt(buf[:1], off-1); err != nil && err != io.EOF {
		return 0, err
	}
	if buf[0] == '\n' {
		return off, nil
	}
	for off < size {
		step := min(int64(len(buf)), size-off)
		if _, err := r.ReadAt(buf[:step], off); err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.IndexByte(buf[:step], '\n'); i >= 0 {
			return off + int64(i) + 1, nil
		}
		off += step
	}
	return size, nil
}
