// Package zuulimport turns a Zuul configuration (job, semaphore, project,
// project-template and pipeline stanzas, as in a zuul.d/ directory) into a
// Sortie config (SPEC §2.8): jobs keep their names, parents become
// extends, the project stanza says which jobs each pipeline runs, and a
// job variant of the project stanza becomes a job of its own that extends
// the original. What Sortie cannot express is dropped, each drop a Warning
// with its Zuul file:line and a comment in the output.
//
// Real configurations are partial (parents, pipelines and jobs defined in
// other repositories): those are warnings, never failures. The output is
// meant to select, for every list of changed files, the jobs Zuul would
// run, plus the bootstrap job whenever any job runs.
package zuulimport

import (
	"fmt"
	"strings"
)

// Options say what to import and how.
type Options struct {
	// Project names the project stanza whose pipelines are imported
	// ("opendev/system-config", or its canonical name); empty means the
	// only project the input has (a stanza without a name is the
	// repository's own).
	Project string
	// Bootstrap names the Zuul job that becomes Sortie's bootstrap job;
	// empty means the only job of the imported pipelines whose name says
	// bootstrap.
	Bootstrap string
	// PlaybookVar is the job variable that names a job's playbook
	// (default "playbook_name"); PlaybookDir is the directory of the
	// repository it is relative to (default "playbooks").
	PlaybookVar string
	PlaybookDir string
}

func (o Options) playbookVar() string {
	if o.PlaybookVar == "" {
		return "playbook_name"
	}
	return o.PlaybookVar
}

func (o Options) playbookDir() string {
	if o.PlaybookDir == "" {
		return "playbooks"
	}
	return strings.TrimSuffix(o.PlaybookDir, "/")
}

// Pos is a place in a Zuul file; Line and Col are 1-based.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// short is file:line, as comments in the output cite it.
func (p Pos) short() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Warning is something of the input the output does not carry, or carries
// differently, at the place of the input it concerns.
type Warning struct {
	Pos Pos
	Msg string
}

func (w Warning) String() string { return w.Pos.String() + ": " + w.Msg }

// Error is an input that cannot be imported at all: a file that cannot be
// read or parsed, no project to import, no bootstrap job.
type Error struct {
	Pos  Pos // File empty when the problem is not in a file
	Msg  string
	Hint string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Pos.File != "" {
		b.WriteString(e.Pos.String() + ": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString("; " + e.Hint)
	}
	return b.String()
}

// Result is an imported config.
type Result struct {
	// Config is the Sortie config, YAML, with comments where something of
	// the input was dropped or changed.
	Config []byte
	// Warnings are in the order of the input.
	Warnings []Warning
	// Variants maps each job made of a project-stanza variant to the Zuul
	// job and pipeline it stands for.
	Variants map[string]Variant
}

// Variant is a Sortie job made for one pipeline from a Zuul job: the
// job's variant in the project stanza, or a job whose dependencies had to
// name another such job.
type Variant struct {
	Job, Pipeline string
}

// Import reads the Zuul configuration in paths (files, or directories
// read recursively for *.yaml and *.yml files in lexical order) and
// returns the Sortie config it makes. Warnings name the files as paths
// name them.
func Import(paths []string, opt Options) (*Result, error) {
	in, err := read(paths)
	if err != nil {
		return nil, err
	}
	return in.convert(opt)
}
