package web

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sortie-ci/sortie/internal/logs"
)

// sgr is the graphic state set by ANSI SGR escapes (ESC [ ... m): the
// colours and attributes a terminal would draw the next text with.
type sgr struct {
	fg, bg                     int // 30-37, 90-97 / 40-47, 100-107; 0: default
	bold, dim, italic, underln bool
}

// apply changes the state by the parameters of one SGR escape.
func (s *sgr) apply(params []int) {
	if len(params) == 0 {
		*s = sgr{}
		return
	}
	for i := 0; i < len(params); i++ {
		p := params[i]
		switch {
		case p == 0:
			*s = sgr{}
		case p == 1:
			s.bold = true
		case p == 2:
			s.dim = true
		case p == 3:
			s.italic = true
		case p == 4:
			s.underln = true
		case p == 22:
			s.bold, s.dim = false, false
		case p == 23:
			s.italic = false
		case p == 24:
			s.underln = false
		case p >= 30 && p <= 37, p >= 90 && p <= 97:
			s.fg = p
		case p == 39:
			s.fg = 0
		case p >= 40 && p <= 47, p >= 100 && p <= 107:
			s.bg = p
		case p == 49:
			s.bg = 0
		case p == 38 || p == 48:
			// 256 colours (5;n) and true colour (2;r;g;b) are not drawn;
			// skip their arguments.
			if i+1 < len(params) && params[i+1] == 5 {
				i += 2
			} else if i+1 < len(params) && params[i+1] == 2 {
				i += 4
			}
		}
	}
}

// classes names the CSS classes of the state ("" for the default).
func (s sgr) classes() string {
	var parts []string
	if s.fg != 0 {
		parts = append(parts, "fg"+strconv.Itoa(s.fg))
	}
	if s.bg != 0 {
		parts = append(parts, "bg"+strconv.Itoa(s.bg))
	}
	if s.bold {
		parts = append(parts, "bold")
	}
	if s.dim {
		parts = append(parts, "dim")
	}
	if s.italic {
		parts = append(parts, "italic")
	}
	if s.underln {
		parts = append(parts, "underline")
	}
	return strings.Join(parts, " ")
}

// params renders the state as SGR parameters, for the page to hand the
// state at the end of what it rendered to the script that follows.
func (s sgr) params() string {
	var parts []string
	if s.bold {
		parts = append(parts, "1")
	}
	if s.dim {
		parts = append(parts, "2")
	}
	if s.italic {
		parts = append(parts, "3")
	}
	if s.underln {
		parts = append(parts, "4")
	}
	if s.fg != 0 {
		parts = append(parts, strconv.Itoa(s.fg))
	}
	if s.bg != 0 {
		parts = append(parts, strconv.Itoa(s.bg))
	}
	return strings.Join(parts, ";")
}

// logRenderer renders log lines as HTML: one <span class="line"> per line,
// the time of Sortie's timestamp prefix in a span of its own, ANSI colours
// as spans with classes, every other escape sequence and control
// character dropped, and the text escaped. The state carries from line to
// line, as in a terminal.
type logRenderer struct {
	b     *strings.Builder
	state sgr
}

// line renders one line (without its newline).
func (r *logRenderer) line(line []byte) {
	b := r.b
	b.WriteString(`<span class="line">`)
	if n := timestampLen(line); n > 0 {
		b.WriteString(`<span class="ts">`)
		escapeTo(b, line[11:min(23, n)]) // hh:mm:ss.mmm
		b.WriteString(` </span>`)
		line = line[n+len(logs.Separator):]
	}
	open := false
	openSpan := func() {
		if c := r.state.classes(); c != "" {
			b.WriteString(`<span class="`)
			b.WriteString(c)
			b.WriteString(`">`)
			open = true
		}
	}
	closeSpan := func() {
		if open {
			b.WriteString(`</span>`)
			open = false
		}
	}
	openSpan()
	start := 0
	for i := 0; i < len(line); {
		c := line[i]
		if c >= 0x20 && c != 0x7f || c == '\t' {
			i++
			continue
		}
		escapeTo(b, line[start:i])
		if c == 0x1b && i+1 < len(line) {
			switch line[i+1] {
			case '[': // CSI: parameters, intermediates, a final byte
				j := i + 2
				for j < len(line) && (line[j] < 0x40 || line[j] > 0x7e) {
					j++
				}
				if j < len(line) && line[j] == 'm' {
					closeSpan()
					r.state.apply(parseParams(line[i+2 : j]))
					openSpan()
				}
				i = min(j+1, len(line))
			case ']': // OSC: up to BEL or ST
				j := i + 2
				for j < len(line) && line[j] != 0x07 && !(line[j] == 0x1b && j+1 < len(line) && line[j+1] == '\\') {
					j++
				}
				if j < len(line) && line[j] == 0x1b {
					j++
				}
				i = min(j+1, len(line))
			default:
				i += 2
			}
		} else {
			i++
		}
		start = i
	}
	escapeTo(b, line[start:])
	closeSpan()
	b.WriteString("</span>")
}

// timestampLen is the length of the timestamp logs.Writer puts before
// " | " at the start of each line, or 0 when the line has none.
func timestampLen(line []byte) int {
	if len(line) < 23 || line[4] != '-' || line[10] != 'T' || line[13] != ':' {
		return 0
	}
	i := bytes.Index(line[:min(len(line), 40)], []byte(logs.Separator))
	if i < 20 {
		return 0
	}
	return i
}

func parseParams(p []byte) []int {
	if len(p) == 0 {
		return nil
	}
	var out []int
	for f := range strings.SplitSeq(string(p), ";") {
		n, err := strconv.Atoi(f)
		if err != nil {
			n = 0 // an empty parameter is 0; others are not SGR we know
		}
		out = append(out, n)
	}
	return out
}

// escapeTo writes text escaped for HTML, invalid UTF-8 replaced.
func escapeTo(b *strings.Builder, text []byte) {
	for len(text) > 0 {
		c := text[0]
		if c < utf8.RuneSelf {
			switch c {
			case '&':
				b.WriteString("&amp;")
			case '<':
				b.WriteString("&lt;")
			case '>':
				b.WriteString("&gt;")
			case '"':
				b.WriteString("&#34;")
			case '\'':
				b.WriteString("&#39;")
			default:
				b.WriteByte(c)
			}
			text = text[1:]
			continue
		}
		r, n := utf8.DecodeRune(text)
		if r == utf8.RuneError && n == 1 {
			b.WriteString("\uFFFD")
		} else {
			b.Write(text[:n])
		}
		text = text[n:]
	}
}

// renderLog renders the lines of data (a trailing partial line included)
// and returns the HTML, the number of lines and the SGR state at the end.
func renderLog(data []byte) (string, int, sgr) {
	var b strings.Builder
	b.Grow(len(data) + len(data)/4)
	r := &logRenderer{b: &b}
	n := 0
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var line []byte
		if i < 0 {
			line, data = data, nil
		} else {
			line, data = data[:i], data[i+1:]
		}
		r.line(line)
		n++
	}
	return b.String(), n, r.state
}
