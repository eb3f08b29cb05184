package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a place in a config file. Line and Col are 1-based; a zero Pos
// means "no position" (for example a default).
type Pos struct {
	File string
	Line int
	Col  int
}

// String renders the position as file:line:col.
func (p Pos) String() string {
	if p.File == "" {
		return "<config>"
	}
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Error is one problem in a config. It renders as
//
//	file:line:col: key.path: what is wrong (got VALUE); what to do
//
// Got and Hint are optional.
type Error struct {
	Pos  Pos
	Path string // the key path, e.g. jobs.service-zuul.timeout
	Msg  string // what is wrong
	Got  string // the value found, already quoted for display; may be empty
	Hint string // what to do; may be empty
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Pos.String())
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Got != "" {
		b.WriteString(" (got ")
		b.WriteString(e.Got)
		b.WriteString(")")
	}
	if e.Hint != "" {
		b.WriteString("; ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Errors is every problem found while loading a config, in file order.
// Load returns it as its error so that a user sees all problems at once;
// use errors.As to get at it, or to a single *Error.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

func (es Errors) sorted() Errors {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.Pos.File, b.Pos.File),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			cmp.Compare(a.Pos.Col, b.Pos.Col),
		)
	})
	return es
}

// errs collects errors during a load, and the key paths they were found
// at, so that the checks that read those keys later can stay silent
// rather than report what only follows from the first error.
type errs struct {
	list Errors
	bad  marks
}

func (c *errs) add(pos Pos, path, msg, got, hint string) {
	c.list = append(c.list, &Error{Pos: pos, Path: path, Msg: msg, Got: got, Hint: hint})
	c.mark(path)
}

// mark records that the value at path is not known: it had an error, or a
// misspelt key probably meant it.
func (c *errs) mark(path string) {
	if c.bad == nil {
		c.bad = marks{}
	}
	c.bad[path] = true
}

// marks are the key paths whose values had an error.
type marks map[string]bool

// under reports whether the value at path, or a section that holds it, had
// an error: then what the loader made of it is a guess, and a check that
// reads it would report a consequence, not a mistake.
func (m marks) under(path string) bool {
	for {
		if m[path] {
			return true
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			return false
		}
		path = path[:i]
	}
}
