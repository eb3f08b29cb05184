package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The YAML library's syntax errors are plain strings that name one line:
// the start of the construct it was parsing, counted from 0 (so the line
// before it), rarely the line where the text stopped making sense. Sortie
// finds that line itself, with the parser as its oracle: the longest
// prefix of the file, cut at a line end, that parses. Cutting inside a
// multi-line flow collection or quoted string would fail for no fault of
// the text, so a small scanner (below) tells where such constructs open
// and close, and prefixes are cut only between them. Past the error no
// prefix parses, before it every such prefix does: a binary search finds
// the line. What is wrong there is told from the text, not from the
// library's message.

// syntaxError is where YAML stops making sense, and what is wrong there.
type syntaxError struct {
	line, col int // 1-based
	msg, hint string
}

// parses reports whether every document of data is well-formed YAML.
func parses(data []byte) bool {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// span is where a construct opens (a bracket, a brace or a quote), or
// where a stray closer is. Line and col are 1-based.
type span struct {
	ch        byte
	line, col int
}

func (s span) String() string { return fmt.Sprintf("%d:%d", s.line, s.col) }

// closer is what ends the construct s opens.
func (s span) closer() byte {
	switch s.ch {
	case '[':
		return ']'
	case '{':
		return '}'
	}
	return s.ch
}

// what names the construct s opens.
func (s span) what() string {
	switch s.ch {
	case '[':
		return "list"
	case '{':
		return "mapping"
	}
	return "string"
}

// scanLine is what the scanner learnt of one line.
type scanLine struct {
	indent int  // leading blanks
	tab    bool // a tab among them
	blank  bool // nothing but blanks and a comment
	scalar bool // a content line of a block scalar (| or >)
	inside bool // it starts inside a flow collection or a quoted string
	// key is the column (0-based) where the line's node starts, after its
	// indentation and "- " markers.
	key    int
	dashed bool // it starts with "- "
	mapKey bool // its node is a "key:" of a mapping
	// empty: it ends with a key or a dash with no value on the line, so a
	// deeper block may follow.
	empty bool
	// valueColon is the column (1-based) of a ": " inside a plain value
	// after the line's key ("run: echo a: b"), 0 if none.
	valueColon int
	// stray is a closer that closes nothing it may close.
	stray *span
	// open are the constructs still open at the end of the line, the
	// outermost first.
	open []span
}

// scanYAML tells, for each line, where flow collections, quoted strings
// and block scalars open and close: enough YAML to cut the text between
// constructs, not a parser.
func scanYAML(lines []string) []scanLine {
	var (
		out   = make([]scanLine, len(lines))
		stack []span // flow collections, with perhaps a quote on top
		block = -2   // > -2: in a block scalar whose parent node is at this column
	)
	for i, s := range lines {
		l := &out[i]
		l.key = -1
		l.inside = len(stack) > 0
		j := 0
		for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
			l.tab = l.tab || s[j] == '\t'
			j++
		}
		l.indent = j
		rest := strings.TrimRight(s[j:], " \t\r")
		if block > -2 {
			if rest == "" || j > block {
				l.scalar, l.blank = true, rest == ""
				continue
			}
			block = -2
		}
		if len(stack) == 0 && (rest == "" || rest[0] == '#') {
			l.blank = true
			continue
		}
		var (
			valueStart = len(stack) == 0 // block context: a node starts here
			flowStart  = true            // flow context: a scalar may start here
			sawKey     bool
			keyCol     = -1 // where the current plain scalar started
			parent     = j  // the column a block scalar must go deeper than
		)
		if valueStart {
			l.key = j
		}
	scan:
		for p := j; p < len(s); p++ {
			c := s[p]
			if n := len(stack); n > 0 && (stack[n-1].ch == '"' || stack[n-1].ch == '\'') {
				switch {
				case c == '\\' && stack[n-1].ch == '"':
					p++
				case c == '\'' && stack[n-1].ch == '\'' && p+1 < len(s) && s[p+1] == '\'':
					p++
				case c == stack[n-1].ch:
					stack = stack[:n-1]
					flowStart, valueStart = false, false
				}
				continue
			}
			if c == ' ' || c == '\t' || c == '\r' {
				continue
			}
			if c == '#' && (p == 0 || s[p-1] == ' ' || s[p-1] == '\t') {
				break
			}
			blankAfter := p+1 == len(s) || s[p+1] == ' ' || s[p+1] == '\t' || s[p+1] == '\r'
			if len(stack) > 0 { // flow context
				switch c {
				case '[', '{':
					stack = append(stack, span{c, i + 1, p + 1})
					flowStart = true
				case ']', '}':
					if top := stack[len(stack)-1]; top.closer() != c {
						if l.stray == nil {
							l.stray = &span{c, i + 1, p + 1}
						}
						continue
					}
					stack = stack[:len(stack)-1]
					flowStart = false
				case ',':
					flowStart = true
				case '"', '\'':
					if flowStart {
						stack = append(stack, span{c, i + 1, p + 1})
					}
				case ':':
					flowStart = blankAfter || p+1 < len(s) && strings.IndexByte(",[]{}", s[p+1]) >= 0
				default:
					flowStart = false
				}
				continue
			}
			// Block context.
			if valueStart {
				switch {
				case (c == '-' || c == '?') && blankAfter:
					if c == '-' && p == j {
						l.dashed = true
					}
					parent = p
					l.key = p + 2
					continue
				case c == '&' || c == '!':
					for p+1 < len(s) && s[p+1] != ' ' {
						p++
					}
					continue
				case c == '[' || c == '{' || c == '"' || c == '\'':
					stack = append(stack, span{c, i + 1, p + 1})
					flowStart, valueStart, keyCol = true, false, p
					continue
				case c == '|' || c == '>':
					if sawKey {
						parent = keyCol
					}
					block = parent
					valueStart = false
					break scan
				case c == ']' || c == '}':
					if l.stray == nil {
						l.stray = &span{c, i + 1, p + 1}
					}
				}
				valueStart, keyCol = false, p
			}
			if c == ':' && blankAfter {
				if sawKey {
					if l.valueColon == 0 {
						l.valueColon = p + 1
					}
					continue
				}
				sawKey, l.mapKey, valueStart = true, true, true
				if keyCol >= 0 {
					parent = keyCol
				}
			}
		}
		l.empty = valueStart && (sawKey || l.dashed) && len(stack) == 0 && block == -2
		l.open = append([]span(nil), stack...)
	}
	return out
}

// splitLines cuts data into lines, without their "\n", and returns where
// each line ends in data, its "\n" included.
func splitLines(data []byte) (lines []string, ends []int) {
	start := 0
	for start < len(data) {
		i := bytes.IndexByte(data[start:], '\n')
		if i < 0 {
			lines, ends = append(lines, string(data[start:])), append(ends, len(data))
			break
		}
		lines, ends = append(lines, string(data[start:start+i])), append(ends, start+i+1)
		start += i + 1
	}
	return lines, ends
}

// aliasRE finds an alias where a node starts: at the line start, after
// "key: ", "- ", or inside a flow collection.
var aliasRE = regexp.MustCompile(`(?:^\s*|[:-]\s+|[\[{,]\s*)\*([^\s\[\]{},]+)`)

// locateSyntaxError finds where data, which does not parse, goes wrong.
func locateSyntaxError(data []byte) syntaxError {
	lines, ends := splitLines(data)
	sc := scanYAML(lines)
	prefix := func(k int) []byte {
		if k == 0 {
			return nil
		}
		return data[:ends[k-1]]
	}
	// The prefixes cut between constructs; the empty one parses.
	safe := []int{0}
	for k := 1; k <= len(lines); k++ {
		if len(sc[k-1].open) == 0 {
			safe = append(safe, k)
		}
	}
	lo, hi := 0, len(safe)
	if safe[len(safe)-1] == len(lines) {
		hi = len(safe) - 1 // the whole text: known not to parse
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if parses(prefix(safe[mid])) {
			lo = mid
		} else {
			hi = mid
		}
	}
	e := safe[lo] // lines[:e] parse; the error is on line e or after
	for e < len(lines) && sc[e].blank {
		e++
	}
	if e == len(lines) {
		// Nothing after the good part: the parser wants more than there is.
		n := max(len(lines), 1)
		return syntaxError{line: n, col: 1, msg: "the file ends in the middle of something", hint: "check the last lines: an unclosed bracket or quote, or a key without its value"}
	}
	if len(sc[e].open) > 0 {
		return constructError(data, lines, ends, sc, e)
	}
	return lineError(lines, sc, e)
}

// constructError explains a failure in a flow collection or quoted string
// that opens on line e (0-based).
func constructError(data []byte, lines []string, ends []int, sc []scanLine, e int) syntaxError {
	opener := sc[e].open[0]
	// Where it closes (-1: never, as far as the scanner can tell).
	closes := -1
	for i := e; i < len(lines); i++ {
		if len(sc[i].open) == 0 {
			closes = i
			break
		}
	}
	last := closes
	if last < 0 {
		last = len(lines) - 1
	}
	// Where it breaks: the first line that the construct, closed right
	// after it, cannot take. Once broken it stays broken: a binary search.
	fits := func(i int) bool {
		text := append([]byte(nil), data[:ends[i]]...)
		if open := sc[i].open; len(open) > 0 {
			if text[len(text)-1] != '\n' {
				text = append(text, '\n')
			}
			text = append(text, strings.Repeat(" ", sc[e].indent+1)...)
			for k := len(open) - 1; k >= 0; k-- {
				text = append(text, open[k].closer())
			}
			text = append(text, '\n')
		}
		return parses(text)
	}
	broke := -1
	if lo, hi := e-1, last+1; !fits(last) {
		for hi-lo > 1 { // fits(lo) (or lo < e), !fits(hi)
			mid := (lo + hi) / 2
			if fits(mid) {
				lo = mid
			} else {
				hi = mid
			}
		}
		broke = hi
	}
	end := last
	if broke >= 0 {
		end = broke
	}
	for i := e; i <= end; i++ {
		if s := sc[i].stray; s != nil {
			return syntaxError{line: s.line, col: s.col,
				msg:  fmt.Sprintf("'%c' does not close the %s that opens at %s", s.ch, opener.what(), opener),
				hint: fmt.Sprintf("close it with '%c'", sc[i].innermost(opener).closer())}
		}
	}
	switch {
	case closes < 0 && broke < 0:
		return syntaxError{line: opener.line, col: opener.col,
			msg:  fmt.Sprintf("'%c' is not closed by the end of the file", opener.ch),
			hint: fmt.Sprintf("close the %s with '%c'", opener.what(), opener.closer())}
	case closes < 0 && broke > e:
		return syntaxError{line: opener.line, col: opener.col,
			msg:  fmt.Sprintf("'%c' is not closed: YAML reads on to line %d and fails there", opener.ch, broke+1),
			hint: fmt.Sprintf("close the %s with '%c' where it ends", opener.what(), opener.closer())}
	case broke < 0:
		// The construct is fine; what follows it on its last line is not.
		broke = closes
	}
	return syntaxError{line: broke + 1, col: sc[broke].indent + 1,
		msg:  fmt.Sprintf("YAML cannot read this line of the %s that opens at %s", opener.what(), opener),
		hint: fmt.Sprintf("check its commas, colons and quotes, and that the %s is closed where you meant", opener.what())}
}

// innermost is the construct open at the end of the line, or def.
func (l scanLine) innermost(def span) span {
	if n := len(l.open); n > 0 {
		return l.open[n-1]
	}
	return def
}

// lineError explains a failure on line e (0-based), outside any
// multi-line construct.
func lineError(lines []string, sc []scanLine, e int) syntaxError {
	l := sc[e]
	at := syntaxError{line: e + 1, col: l.indent + 1}
	if l.tab {
		at.col = 1
		at.msg, at.hint = "a tab in the indentation", "indent with spaces only: YAML does not allow tabs there"
		return at
	}
	if s := l.stray; s != nil {
		at.col = s.col
		at.msg, at.hint = fmt.Sprintf("'%c' closes nothing", s.ch), "remove it, or quote the value that holds it"
		return at
	}
	for _, m := range aliasRE.FindAllStringSubmatchIndex(lines[e], -1) {
		name := lines[e][m[2]:m[3]]
		if !anchorBefore(lines[:e+1], name) {
			at.col = m[2]
			at.msg = "alias *" + name + " names no anchor above it"
			at.hint = "define &" + name + " before it, in the same file, or quote a value that starts with *"
			return at
		}
	}
	// The indentation levels open above the line, and the line above it.
	prev, limit := -1, 1<<30
	var levels []int
	for i := e - 1; i >= 0 && limit > 0; i-- {
		p := sc[i]
		if p.blank || p.scalar || p.inside {
			continue
		}
		if prev < 0 {
			prev = i
		}
		if p.dashed && p.mapKey && p.key < limit {
			levels = append(levels, p.key)
		}
		if p.indent < limit {
			levels = append(levels, p.indent)
			limit = p.indent
		}
	}
	known := prev < 0 // the first line: any indentation
	for _, lv := range levels {
		known = known || l.indent == lv
	}
	if prev >= 0 && sc[prev].empty && l.indent > sc[prev].indent {
		known = true // a new block under "key:" or "-"
	}
	if !known {
		at.msg = fmt.Sprintf("indented by %s, which matches no level above it (%s)", spaces(l.indent), levelList(levels))
		at.hint = "line it up with the key or list it belongs to"
		if p := sc[prev]; l.indent > p.indent && !p.empty {
			at.msg = fmt.Sprintf("indented under line %d, which already has its value", prev+1)
			at.hint = fmt.Sprintf("line it up with a key above (%s), or quote a value that goes on over several lines", levelList(levels))
		}
		return at
	}
	if l.valueColon > 0 {
		at.col = l.valueColon
		at.msg, at.hint = "a plain value cannot contain \": \"", "quote the value"
		return at
	}
	at.msg = "YAML cannot read this line"
	at.hint = "check its indentation against the lines above, its quotes and its colons (a value with \": \" or \" #\" in it needs quotes)"
	return at
}

// anchorBefore reports whether &name appears in lines.
func anchorBefore(lines []string, name string) bool {
	for _, s := range lines {
		for {
			i := strings.Index(s, "&"+name)
			if i < 0 {
				break
			}
			s = s[i+1+len(name):]
			if s == "" || strings.IndexByte(" \t\r]},", s[0]) >= 0 {
				return true
			}
		}
	}
	return false
}

func spaces(n int) string {
	if n == 1 {
		return "1 space"
	}
	return strconv.Itoa(n) + " spaces"
}

// levelList renders indentation levels, smallest first: "0, 2 or 4 spaces".
func levelList(levels []int) string {
	var parts []string
	for i := len(levels) - 1; i >= 0; i-- {
		if i < len(levels)-1 && levels[i] == levels[i+1] {
			continue
		}
		parts = append(parts, strconv.Itoa(levels[i]))
	}
	switch len(parts) {
	case 0:
		return "none"
	case 1:
		return spaces(levels[0])
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1] + " spaces"
}
