package zuulimport

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// stanza is one item of a Zuul file: "- job: {...}".
type stanza struct {
	kind string // job, semaphore, project, project-template, pipeline, ...
	body *yaml.Node
	file string
	pos  Pos // of the kind's key
}

// input is every stanza read, in file order.
type input struct {
	stanzas []stanza
	// warnings found while reading (stanzas of kinds not imported).
	warnings []Warning
}

func read(paths []string) (*input, error) {
	in := &input{}
	for _, p := range paths {
		files, err := zuulFiles(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if err := in.file(f); err != nil {
				return nil, err
			}
		}
	}
	if len(in.stanzas) == 0 {
		return nil, &Error{Msg: "no Zuul stanza in " + strings.Join(paths, ", "), Hint: "pass zuul.d/ directories or Zuul YAML files"}
	}
	return in, nil
}

// zuulFiles lists a file, or the *.yaml and *.yml files under a
// directory, recursively, in lexical order of path (as Zuul reads
// zuul.d/).
func zuulFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + errors.Unwrap(err).Error()}
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, &Error{Pos: Pos{File: path}, Msg: "cannot read: " + err.Error()}
	}
	slices.Sort(files)
	if len(files) == 0 {
		return nil, &Error{Pos: Pos{File: path}, Msg: "no *.yaml file in the directory"}
	}
	return files, nil
}

func (in *input) file(name string) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return &Error{Pos: Pos{File: name}, Msg: "cannot read: " + err.Error()}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &Error{Pos: Pos{File: name}, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if len(doc.Content) == 0 {
			continue
		}
		top := resolve(doc.Content[0])
		if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
			continue
		}
		if top.Kind != yaml.SequenceNode {
			return &Error{Pos: pos(name, top), Msg: "a Zuul file is a list of stanzas (- job: ..., - project: ...)"}
		}
		for _, item := range top.Content {
			item = resolve(item)
			if item.Kind != yaml.MappingNode || len(item.Content) != 2 {
				return &Error{Pos: pos(name, item), Msg: "a stanza is a mapping of one key (job, project, pipeline, semaphore...)"}
			}
			k := item.Content[0]
			in.stanzas = append(in.stanzas, stanza{kind: k.Value, body: resolve(item.Content[1]), file: name, pos: pos(name, k)})
		}
	}
}

func pos(file string, n *yaml.Node) Pos { return Pos{File: file, Line: n.Line, Col: n.Column} }

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// pairs returns the key and value nodes of a mapping, nil for anything
// else.
func pairs(n *yaml.Node) [][2]*yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	out := make([][2]*yaml.Node, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		out = append(out, [2]*yaml.Node{n.Content[i], resolve(n.Content[i+1])})
	}
	return out
}

// get returns the value of key in a mapping, or nil.
func get(n *yaml.Node, key string) *yaml.Node {
	for _, kv := range pairs(n) {
		if kv[0].Value == key {
			return kv[1]
		}
	}
	return nil
}

// scalar returns the text of a scalar node other than null.
func scalar(n *yaml.Node) (string, bool) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", false
	}
	return n.Value, true
}

// items returns the items of a list, or the node itself when Zuul accepts
// a single value where a list may be.
func items(n *yaml.Node) []*yaml.Node {
	n = resolve(n)
	switch {
	case n == nil:
		return nil
	case n.Kind == yaml.SequenceNode:
		out := make([]*yaml.Node, len(n.Content))
		for i, c := range n.Content {
			out[i] = resolve(c)
		}
		return out
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil
	}
	return []*yaml.Node{n}
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}
