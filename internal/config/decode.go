package config

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	names "github.com/sortie-ci/sortie/internal/suggest"
)

// decoder walks the YAML nodes of one file strictly, recording problems with
// their positions instead of stopping at the first.
type decoder struct {
	file string
	errs *errs
}

func (d *decoder) pos(n *yaml.Node) Pos {
	return Pos{File: d.file, Line: n.Line, Col: n.Column}
}

func (d *decoder) fail(n *yaml.Node, path, msg, hint string) {
	d.errs.add(d.pos(n), path, msg, describe(n), hint)
}

// resolve follows aliases so that anchors work as in any YAML file.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// describe renders a node's value for the "(got ...)" part of an error.
func describe(n *yaml.Node) string {
	n = resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		v := n.Value
		if n.Tag == "!!int" || n.Tag == "!!bool" || n.Tag == "!!float" {
			return v
		}
		if len(v) > 60 {
			v = v[:57] + "..."
		}
		return strconv.Quote(v)
	}
	return "an unexpected node"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// field handles the value of one known key.
type field func(key, val *yaml.Node, path string)

// mapping checks that n is a mapping whose keys are all known, and calls the
// handler of each key. Unknown and repeated keys are errors.
func (d *decoder) mapping(n *yaml.Node, path string, fields map[string]field) {
	mappingOf(d, n, path, fields, func(f field, k, v *yaml.Node, p string) { f(k, v, p) })
}

// mappingOf is mapping with handlers of any type, which call calls: a
// table of handlers made once, not a map of closures made for every
// mapping read (a job's).
func mappingOf[F any](d *decoder, n *yaml.Node, path string, fields map[string]F, call func(f F, k, v *yaml.Node, p string)) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping", "write it as key: value lines")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain strings", "")
			continue
		}
		kp := join(path, k.Value)
		// Known keys are few: a look back costs less than a map.
		if first := firstKey(n, i, k.Value); first != nil {
			d.errs.add(d.pos(k), kp, fmt.Sprintf("key is defined twice, first at %s", d.pos(first)), "", "remove one of them")
			continue
		}
		f, ok := fields[k.Value]
		if !ok {
			keys := slices.Sorted(maps.Keys(fields))
			d.errs.add(d.pos(k), kp, "unknown key", strconv.Quote(k.Value), suggest(k.Value, keys, "allowed keys"))
			if meant, ok := closest(k.Value, keys); ok {
				d.errs.mark(join(path, meant)) // "instal" is the install that is missing
			}
			continue
		}
		call(f, k, v, kp)
	}
}

// firstKey returns the first plain key of mapping n before its content
// index i that is key, or nil.
func firstKey(n *yaml.Node, i int, key string) *yaml.Node {
	for j := 0; j < i; j += 2 {
		if k := n.Content[j]; k.Kind == yaml.ScalarNode && k.Value == key {
			return k
		}
	}
	return nil
}

// entries iterates over a mapping whose keys are names chosen by the user.
func (d *decoder) entries(n *yaml.Node, path string, each func(key, val *yaml.Node, path string)) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping of names", "write one name: value per line")
		return
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			d.fail(k, path, "names must be non-empty strings", "")
			continue
		}
		kp := join(path, k.Value)
		if first, ok := seen[k.Value]; ok {
			d.errs.add(d.pos(k), kp, fmt.Sprintf("%q is defined twice, first at %s", k.Value, d.pos(first)), "", "rename or remove one of them")
			continue
		}
		seen[k.Value] = k
		each(k, v, kp)
	}
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.fail(n, path, "must be a string", "")
		return "", false
	}
	return n.Value, true
}

func (d *decoder) int(n *yaml.Node, path string) (int, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		v, err := strconv.Atoi(n.Value)
		if err == nil {
			return v, true
		}
	}
	d.fail(n, path, "must be a whole number", "")
	return 0, false
}

func (d *decoder) bool(n *yaml.Node, path string) (bool, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!bool" {
		var v bool
		if err := n.Decode(&v); err == nil {
			return v, true
		}
	}
	d.fail(n, path, "must be true or false", "")
	return false, false
}

func (d *decoder) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := d.str(n, path)
	if !ok {
		return 0, false
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		d.fail(n, path, "must be a duration", `write it like "90s", "30m" or "1h30m"`)
		return 0, false
	}
	return v, true
}

func (d *decoder) strList(n *yaml.Node, path string) ([]string, bool) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list of strings", "write it as [a, b] or as lines starting with -")
		return nil, false
	}
	out := make([]string, 0, len(n.Content))
	ok := true
	for i, item := range n.Content {
		s, good := d.str(item, fmt.Sprintf("%s[%d]", path, i))
		ok = ok && good
		out = append(out, s)
	}
	return out, ok
}

func (d *decoder) refList(n *yaml.Node, path string) []Ref {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list of names", "write it as [a, b] or as lines starting with -")
		return nil
	}
	var out []Ref
	for i, item := range n.Content {
		if s, ok := d.str(item, fmt.Sprintf("%s[%d]", path, i)); ok {
			out = append(out, Ref{Name: s, Pos: d.pos(resolve(item))})
		}
	}
	return out
}

// closest returns the candidate that got is most likely a misspelling of.
func closest(got string, candidates []string) (string, bool) {
	best, dist := names.Closest(got, candidates)
	return best, best != "" && dist <= max(2, len(got)/5)
}

// suggest returns a hint naming the closest candidate, or the list of them.
func suggest(got string, candidates []string, what string) string {
	if best, ok := closest(got, candidates); ok {
		return fmt.Sprintf("did you mean %q?", best)
	}
	if len(candidates) == 0 {
		return ""
	}
	if len(candidates) > 12 {
		candidates = append(candidates[:12:12], "...")
	}
	return what + " are: " + strings.Join(candidates, ", ")
}
