// Package config loads Sortie's YAML configuration (SPEC §1): one file, or a
// directory of *.yaml files merged in lexical order. Decoding is strict and
// keeps positions, and every problem is reported at once as an Errors value
// whose entries name file, line and column, the key path, and what to do.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"sync"
	"time"
)

// Defaults applied when a key is absent.
const (
	DefaultMaxParallel = 8
	DefaultAttempts    = 3
	DefaultSSHPort     = 22
)

// Config is a loaded and validated configuration.
type Config struct {
	// Files are the files the config was read from, in merge order.
	Files []string

	Source  Source
	Bastion Bastion
	Limits  Limits
	Server  Server
	Webhook Webhooks

	// Semaphores by name.
	Semaphores map[string]*Semaphore
	// Jobs by name; JobOrder lists them in definition order.
	Jobs     map[string]*Job
	JobOrder []string
	// Pipelines by name; PipelineOrder lists them in definition order.
	Pipelines     map[string]*Pipeline
	PipelineOrder []string
	// Reporters by name: who hears of buildsets (Pipeline.Report).
	Reporters map[string]*Reporter

	// Bootstrap is the name of the bootstrap job.
	Bootstrap string
}

// Source is the repository that is deployed.
type Source struct {
	// URL is a git URL or a local path; a relative local path is resolved
	// against the directory of the file that set it.
	URL string
	// Branch is the branch that is deployed; empty means the repository's HEAD.
	Branch string
	Pos    Pos
}

// Bastion is where jobs run. Host "" or "local" means this machine.
type Bastion struct {
	Host         string
	Port         int
	User         string
	IdentityFile string
	KnownHosts   string
	// Workdir holds checkouts, stamps and locks. Empty means the default for
	// the bastion kind (for the local bastion, <state-dir>/bastion).
	Workdir string
	Pos     Pos
}

// Local reports whether builds run on this machine.
func (b Bastion) Local() bool { return b.Host == "" || b.Host == "local" }

// Limits bound the executor.
type Limits struct {
	MaxParallel int
}

// Server configures `sortie serve` (SPEC §4).
type Server struct {
	Listen     string
	TokensEnv  string
	PublicRead bool
	// PublicURL is how people reach the server (https://deploy.example.org):
	// the base of the links in reports. Empty: reports carry no link.
	PublicURL string
}

// Webhooks configures the forges that may send push events.
type Webhooks struct {
	GitHubSecretEnv string
	GiteaSecretEnv  string
	GitLabTokenEnv  string
}

// Semaphore bounds how many holders may run at once.
type Semaphore struct {
	Name string
	Max  int
	Pos  Pos
}

// Job is one job definition, as it runs: the keys it takes from the job it
// extends are filled in when the config is loaded.
type Job struct {
	Name string
	Pos  Pos

	// Abstract marks a template: it never runs, is listed in no pipeline
	// and is no job's dependency; other jobs extend it.
	Abstract bool
	// Extends names the job this one takes every key it does not set from
	// (Zuul's parent); empty for none.
	Extends Ref

	Bootstrap bool
	Install   []string
	Playbook  string
	Run       string

	Dependencies    []Dependency
	Files           []Matcher
	IrrelevantFiles []Matcher
	Semaphores      []Ref

	Timeout      time.Duration // 0: none
	Attempts     int
	Env          map[string]string
	SecretEnv    []string
	DurationHint time.Duration // 0: none

	// set holds the keys written in the job's own definition; from maps
	// each key it took from the jobs it extends to the job that set it.
	set  map[string]bool
	from map[string]string
}

// Inherited returns the job the value of key (a config key such as
// "irrelevant_files") came from, when the job did not set it itself but
// took it from a job it extends; "" when the job set it, or nobody did.
// For env, which merges, it is the nearest job the variables not set here
// came from.
func (j *Job) Inherited(key string) string { return j.from[key] }

// Sets reports whether the job's own definition writes key.
func (j *Job) Sets(key string) bool { return j.set[key] }

// Dependency is an edge to another job. A hard dependency pulls its job into
// a buildset; a soft one only orders it when both are selected.
type Dependency struct {
	Name string
	Soft bool
	Pos  Pos
}

// Ref is a reference by name to something defined elsewhere in the config.
type Ref struct {
	Name string
	Pos  Pos
}

// Matcher is one item of files or irrelevant_files: a regular expression
// that matches a path at its start (Python's re.match, as in Zuul), or the
// complement of one when Negate is set. Matchers are safe for concurrent use.
type Matcher struct {
	Regex  string
	Negate bool
	Pos    Pos
	// prefix must begin any path the regex matches at its start; when
	// literal is set the regex is that literal and nothing else. Planning
	// thousands of jobs against thousands of files tests this first, and
	// compiles the regex only for a path that passes.
	prefix  string
	literal bool
	re      *lazyRegexp
}

type lazyRegexp struct {
	once sync.Once
	expr string
	re   *regexp.Regexp
}

func (l *lazyRegexp) get() *regexp.Regexp {
	l.once.Do(func() { l.re = regexp.MustCompile(l.expr) })
	return l.re
}

// NewMatcher checks and prepares a matcher. The regex is anchored at the
// start of the path only: "$" is not implied.
func NewMatcher(regex string, negate bool) (Matcher, error) {
	// Parsing with the flags regexp.Compile uses gives the same errors, at a
	// fraction of a compile's cost. The user's text is checked alone: inside
	// our (?:...) an unbalanced ")(" would close the group and mean
	// something else.
	tree, err := syntax.Parse(regex, syntax.Perl)
	if err != nil {
		return Matcher{}, err
	}
	// The anchored form wraps the parsed tree's canonical text, not the
	// user's: a trailing `\Q` with no `\E` would quote our closing ")".
	m := Matcher{Regex: regex, Negate: negate, re: &lazyRegexp{expr: `^(?:` + tree.String() + `)`}}
	m.prefix, m.literal = literalPrefix(tree)
	return m, nil
}

// literalPrefix returns the literal every match at the start of a path
// begins with, and whether the regex is exactly that literal. A leading ^
// always holds at the start, so it is skipped.
func literalPrefix(re *syntax.Regexp) (string, bool) {
	parts := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		parts = re.Sub
	}
	var b strings.Builder
	for i, p := range parts {
		switch {
		case p.Op == syntax.OpBeginText && i == 0:
		case p.Op == syntax.OpLiteral && p.Flags&syntax.FoldCase == 0:
			b.WriteString(string(p.Rune))
		case p.Op == syntax.OpEmptyMatch:
		default:
			return b.String(), false
		}
	}
	return b.String(), true
}

// Prefix is a string that every path the matcher matches starts with
// (often "", which every path starts with).
func (m Matcher) Prefix() string {
	if m.Negate {
		return ""
	}
	return m.prefix
}

// Match reports whether the path matches.
func (m Matcher) Match(path string) bool {
	var hit bool
	switch {
	case !strings.HasPrefix(path, m.prefix):
		hit = false
	case m.literal:
		hit = true
	default:
		hit = m.re.get().MatchString(path)
	}
	return hit != m.Negate
}

// Manager names how a pipeline orders its buildsets (SPEC §2.4).
type Manager string

// Managers.
const (
	// ManagerSerial runs one buildset at a time, in arrival order.
	ManagerSerial Manager = "serial"
	// ManagerSupercedent keeps one running and at most one waiting; a newer
	// event replaces the waiting one.
	ManagerSupercedent Manager = "supercedent"
	// ManagerIndependent starts every buildset at once.
	ManagerIndependent Manager = "independent"
	// ManagerCoalesce is serial, but waiting buildsets merge into one for the
	// newest commit with the union of their changed files.
	ManagerCoalesce Manager = "coalesce"
)

// Precedence orders waiters for a freed semaphore.
type Precedence string

// Precedences, highest first.
const (
	PrecedenceHigh   Precedence = "high"
	PrecedenceNormal Precedence = "normal"
	PrecedenceLow    Precedence = "low"
)

// Rank is larger for higher precedence.
func (p Precedence) Rank() int {
	switch p {
	case PrecedenceHigh:
		return 2
	case PrecedenceLow:
		return 0
	default:
		return 1
	}
}

// Pipeline turns trigger events into buildsets of its jobs.
type Pipeline struct {
	Name       string
	Pos        Pos
	Trigger    Trigger
	Manager    Manager
	Precedence Precedence
	// Semaphore is held by the whole buildset while it runs; empty for none.
	Semaphore Ref
	// Jobs lists the pipeline's jobs as written; the bootstrap job is part of
	// every pipeline even when not listed.
	Jobs []Ref
	// Report names the reporters of each event of its buildsets.
	Report ReportEvents
	// Check runs every buildset of the pipeline in check mode: playbooks
	// with --check --diff, run: jobs with SORTIE_CHECK=1.
	Check bool
}

// Trigger says what starts a pipeline. Several may be set; none means the
// pipeline runs only when triggered by hand (API or CLI).
type Trigger struct {
	// Push, when set, starts the pipeline on a push to Branch (webhook, or
	// polling every Poll when Poll > 0).
	Push *PushTrigger
	// Cron is a 5-field cron expression (or a descriptor such as @hourly).
	Cron string
	// Jitter delays each cron start by a random duration up to it.
	Jitter time.Duration
}

// PushTrigger starts a pipeline when a branch moves.
type PushTrigger struct {
	Branch string
	Poll   time.Duration
}

// Job returns the named job, or nil.
func (c *Config) Job(name string) *Job { return c.Jobs[name] }

// InPipeline reports whether the pipeline runs the named job (the bootstrap
// job is in every pipeline).
func (p *Pipeline) InPipeline(c *Config, name string) bool {
	if name == c.Bootstrap {
		return true
	}
	for _, r := range p.Jobs {
		if r.Name == name {
			return true
		}
	}
	return false
}

// PipelineNames returns the names of the pipelines, sorted.
func (c *Config) PipelineNames() []string {
	names := make([]string, 0, len(c.Pipelines))
	for name := range c.Pipelines {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Fingerprint is the sha256, in hex, of a canonical form of the config:
// its JSON encoding (object keys in order) without the paths of the files
// it was read from nor the positions in them, so that two hosts that load
// the same settings from different places, or laid out differently, have
// the same fingerprint.
func (c *Config) Fingerprint() string {
	cp := *c
	cp.Files = nil
	b, err := json.Marshal(&cp)
	var v any
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err == nil {
		b, err = json.Marshal(dropPositions(v))
	}
	if err != nil {
		// Not expected of a loaded config; a fingerprint that differs from
		// every other still says "not the same".
		b = []byte("unencodable: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// dropPositions removes from a decoded JSON value every Pos (an object of
// exactly File, Line and Col).
func dropPositions(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if m, ok := e.(map[string]any); ok && len(m) == 3 && m["File"] != nil && m["Line"] != nil && m["Col"] != nil {
				delete(v, k)
				continue
			}
			v[k] = dropPositions(e)
		}
	case []any:
		for i, e := range v {
			v[i] = dropPositions(e)
		}
	}
	return v
}
