package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// Load reads a config file, or every *.yaml file of a directory merged in
// lexical order, and validates it. On failure the error is an Errors value
// listing every problem found, each with its position.
func Load(path string) (*Config, error) {
	files, err := configFiles(path)
	if err != nil {
		return nil, err
	}
	l := newLoader()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			l.errs.add(Pos{File: f}, "", "cannot read file: "+err.Error(), "", "")
			l.unread = true
			continue
		}
		l.file(f, data)
	}
	return l.finish()
}

// Parse loads a config from memory, as if read from a file named name.
func Parse(name string, data []byte) (*Config, error) {
	l := newLoader()
	l.file(name, data)
	return l.finish()
}

func configFiles(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, Errors{{Pos: Pos{File: path}, Msg: "cannot read config: " + errors.Unwrap(err).Error(), Hint: "pass --config a YAML file or a directory of *.yaml files"}}
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	all, _ := filepath.Glob(filepath.Join(path, "*.yaml"))
	var files []string
	for _, f := range all {
		// Hidden files are editor locks and backups, not config.
		if !strings.HasPrefix(filepath.Base(f), ".") {
			files = append(files, f)
		}
	}
	sort.Strings(files)
	if len(files) == 0 {
		return nil, Errors{{Pos: Pos{File: path}, Msg: "no *.yaml files in directory", Hint: "put the config in files ending with .yaml"}}
	}
	return files, nil
}

type loader struct {
	errs errs
	cfg  *Config
	// unread is set when a file could not be read or parsed: the checks
	// across sections would only report the holes it left.
	unread bool
	// where each singleton section was first defined, for merge errors.
	sections map[string]Pos
	// where the jobs and pipelines keys first appear, for "define one"
	// errors when they are empty.
	jobsKey, pipesKey Pos
	jobPos            map[string]Pos
	pipePos           map[string]Pos
	semPos            map[string]Pos
	repPos            map[string]Pos
}

func newLoader() *loader {
	return &loader{
		cfg: &Config{
			Semaphores: map[string]*Semaphore{},
			Jobs:       map[string]*Job{},
			Pipelines:  map[string]*Pipeline{},
			Reporters:  map[string]*Reporter{},
			Limits:     Limits{MaxParallel: DefaultMaxParallel},
			Bastion:    Bastion{Port: DefaultSSHPort},
			Server:     Server{PublicRead: true},
		},
		sections: map[string]Pos{},
	}
}

func (l *loader) file(name string, data []byte) {
	l.cfg.Files = append(l.cfg.Files, name)
	var doc, extra yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return // an empty file adds nothing
	}
	if err == nil {
		if err = dec.Decode(&extra); err == nil {
			l.errs.add(Pos{File: name, Line: extra.Line, Col: extra.Column}, "", "a second YAML document", "", "keep one document per file, or split it into files of a directory")
		} else if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	if err != nil {
		// The library's message names the wrong line (see yamlpos.go):
		// find the right one, and say what is wrong there.
		se := locateSyntaxError(data)
		l.errs.add(Pos{File: name, Line: se.line, Col: se.col}, "", "invalid YAML: "+se.msg, "", se.hint)
		l.unread = true
		return
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return
	}
	d := &decoder{file: name, errs: &l.errs}
	d.mapping(doc.Content[0], "", map[string]field{
		"source":     l.once(d, func(v *yaml.Node, p string) { l.source(d, v, p) }),
		"bastion":    l.once(d, func(v *yaml.Node, p string) { l.bastion(d, v, p) }),
		"limits":     l.once(d, func(v *yaml.Node, p string) { l.limits(d, v, p) }),
		"server":     l.once(d, func(v *yaml.Node, p string) { l.server(d, v, p) }),
		"webhooks":   l.once(d, func(v *yaml.Node, p string) { l.webhooks(d, v, p) }),
		"semaphores": func(_, v *yaml.Node, p string) { l.semaphores(d, v, p) },
		"reporters":  func(_, v *yaml.Node, p string) { l.reporters(d, v, p) },
		"jobs": func(k, v *yaml.Node, p string) {
			if l.jobsKey.Line == 0 {
				l.jobsKey = d.pos(k)
			}
			l.jobs(d, v, p)
		},
		"pipelines": func(k, v *yaml.Node, p string) {
			if l.pipesKey.Line == 0 {
				l.pipesKey = d.pos(k)
			}
			l.pipelines(d, v, p)
		},
	})
}

// once wraps the handler of a section that may appear in one file only.
func (l *loader) once(d *decoder, f func(v *yaml.Node, path string)) field {
	return func(k, v *yaml.Node, path string) {
		if first, ok := l.sections[path]; ok {
			d.errs.add(d.pos(k), path, "section is defined twice, first at "+first.String(), "", "keep it in one file")
			return
		}
		l.sections[path] = d.pos(k)
		if !isNull(v) {
			f(v, path)
		}
	}
}

func (l *loader) source(d *decoder, n *yaml.Node, path string) {
	s := &l.cfg.Source
	s.Pos = d.pos(n)
	d.mapping(n, path, map[string]field{
		"url": func(_, v *yaml.Node, p string) {
			if u, ok := d.str(v, p); ok {
				s.URL = resolveLocal(d.file, u)
			}
		},
		"branch": func(_, v *yaml.Node, p string) { s.Branch, _ = d.str(v, p) },
	})
}

// path reads a local file path, relative to the config file unless it is
// absolute or starts with ~.
func (d *decoder) path(n *yaml.Node, path string) string {
	s, ok := d.str(n, path)
	if !ok || s == "" || filepath.IsAbs(s) || strings.HasPrefix(s, "~") {
		return s
	}
	abs, err := filepath.Abs(filepath.Join(filepath.Dir(d.file), s))
	if err != nil {
		return s
	}
	return abs
}

// resolveLocal makes a relative local path relative to the config file.
func resolveLocal(file, u string) string {
	if u == "" || strings.Contains(u, "://") || filepath.IsAbs(u) || strings.HasPrefix(u, "~") {
		return u
	}
	if i := strings.IndexByte(u, ':'); i > 0 && !strings.Contains(u[:i], "/") {
		return u // scp-like user@host:path
	}
	abs, err := filepath.Abs(filepath.Join(filepath.Dir(file), u))
	if err != nil {
		return filepath.Join(filepath.Dir(file), u)
	}
	return abs
}

func (l *loader) bastion(d *decoder, n *yaml.Node, path string) {
	b := &l.cfg.Bastion
	b.Pos = d.pos(n)
	d.mapping(n, path, map[string]field{
		"host": func(_, v *yaml.Node, p string) { b.Host, _ = d.str(v, p) },
		"port": func(_, v *yaml.Node, p string) {
			if port, ok := d.int(v, p); ok {
				if port < 1 || port > 65535 {
					d.fail(v, p, "must be a port number from 1 to 65535", "")
				}
				b.Port = port
			}
		},
		"user":          func(_, v *yaml.Node, p string) { b.User, _ = d.str(v, p) },
		"identity_file": func(_, v *yaml.Node, p string) { b.IdentityFile = d.path(v, p) },
		"known_hosts":   func(_, v *yaml.Node, p string) { b.KnownHosts = d.path(v, p) },
		"workdir":       func(_, v *yaml.Node, p string) { b.Workdir, _ = d.str(v, p) },
	})
}

func (l *loader) limits(d *decoder, n *yaml.Node, path string) {
	d.mapping(n, path, map[string]field{
		"max_parallel": func(_, v *yaml.Node, p string) {
			if m, ok := d.int(v, p); ok {
				if m < 1 {
					d.fail(v, p, "must be at least 1", "")
				} else {
					l.cfg.Limits.MaxParallel = m
				}
			}
		},
	})
}

func (l *loader) server(d *decoder, n *yaml.Node, path string) {
	s := &l.cfg.Server
	d.mapping(n, path, map[string]field{
		"listen":     func(_, v *yaml.Node, p string) { s.Listen, _ = d.str(v, p) },
		"tokens_env": func(_, v *yaml.Node, p string) { s.TokensEnv, _ = d.str(v, p) },
		"public_url": func(_, v *yaml.Node, p string) {
			if u, ok := d.str(v, p); ok {
				checkHTTPURL(d, v, p, u)
				s.PublicURL = strings.TrimRight(u, "/")
			}
		},
		"public_read": func(_, v *yaml.Node, p string) {
			if b, ok := d.bool(v, p); ok {
				s.PublicRead = b
			}
		},
	})
}

func (l *loader) webhooks(d *decoder, n *yaml.Node, path string) {
	w := &l.cfg.Webhook
	env := func(key string, dst *string) map[string]field {
		return map[string]field{key: func(_, v *yaml.Node, p string) { *dst, _ = d.str(v, p) }}
	}
	d.mapping(n, path, map[string]field{
		"github": func(_, v *yaml.Node, p string) { d.mapping(v, p, env("secret_env", &w.GitHubSecretEnv)) },
		"gitea":  func(_, v *yaml.Node, p string) { d.mapping(v, p, env("secret_env", &w.GiteaSecretEnv)) },
		"gitlab": func(_, v *yaml.Node, p string) { d.mapping(v, p, env("token_env", &w.GitLabTokenEnv)) },
	})
}

// dup reports a name defined in two places (possibly two files).
func dup(d *decoder, k *yaml.Node, path, what string, first Pos) {
	d.errs.add(d.pos(k), path, fmt.Sprintf("%s %q is defined twice, first at %s", what, k.Value, first), "", "rename or remove one of them")
}

func (l *loader) semaphores(d *decoder, n *yaml.Node, path string) {
	if l.semPos == nil {
		l.semPos = map[string]Pos{}
	}
	d.entries(n, path, func(k, v *yaml.Node, p string) {
		if first, ok := l.semPos[k.Value]; ok && first.File != d.file {
			dup(d, k, p, "semaphore", first)
			return
		}
		l.semPos[k.Value] = d.pos(k)
		max, ok := d.int(v, p)
		if !ok {
			return
		}
		if max < 1 {
			d.fail(v, p, "semaphore max must be at least 1", "give how many holders may run at once")
		}
		// Known even when invalid, so its users get no second error.
		l.cfg.Semaphores[k.Value] = &Semaphore{Name: k.Value, Max: max, Pos: d.pos(k)}
	})
}

func (l *loader) jobs(d *decoder, n *yaml.Node, path string) {
	if l.jobPos == nil {
		l.jobPos = map[string]Pos{}
	}
	// Sized at once for the first section's jobs rather than grown: some
	// 3 ms of a 10,000-job config's 45.
	if len(l.cfg.Jobs) == 0 && n.Kind == yaml.MappingNode {
		size := len(n.Content) / 2
		l.cfg.Jobs, l.jobPos = make(map[string]*Job, size), make(map[string]Pos, size)
		l.cfg.JobOrder = make([]string, 0, size)
	}
	d.entries(n, path, func(k, v *yaml.Node, p string) {
		if first, ok := l.jobPos[k.Value]; ok && first.File != d.file {
			dup(d, k, p, "job", first)
			return
		}
		l.jobPos[k.Value] = d.pos(k)
		checkName(d, k, p)
		j := &Job{Name: k.Value, Pos: d.pos(k), Attempts: DefaultAttempts}
		if !isNull(v) {
			l.job(d, j, v, p)
		}
		l.cfg.Jobs[j.Name] = j
		l.cfg.JobOrder = append(l.cfg.JobOrder, j.Name)
	})
}

// jobField reads the value of one key of a job.
type jobField func(l *loader, d *decoder, j *Job, v *yaml.Node, p string)

// jobFields are the keys of a job: one table for every job, where a map of
// closures made for each job cost a third of loading 10,000 of them.
var jobFields = map[string]jobField{
	"abstract": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Abstract, _ = d.bool(v, p) },
	"extends": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) {
		if s, ok := d.str(v, p); ok {
			j.Extends = Ref{Name: s, Pos: d.pos(v)}
		}
	},
	"bootstrap": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Bootstrap, _ = d.bool(v, p) },
	"install":   func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Install, _ = d.strList(v, p) },
	"playbook":  func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Playbook, _ = d.str(v, p) },
	"run":       func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Run, _ = d.str(v, p) },
	"dependencies": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) {
		j.Dependencies = l.dependencies(d, v, p)
	},
	"files": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Files = l.matchers(d, v, p) },
	"irrelevant_files": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) {
		j.IrrelevantFiles = l.matchers(d, v, p)
	},
	"semaphores":    func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Semaphores = d.refList(v, p) },
	"timeout":       func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.Timeout, _ = d.duration(v, p) },
	"duration_hint": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) { j.DurationHint, _ = d.duration(v, p) },
	"attempts": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) {
		if a, ok := d.int(v, p); ok {
			if a < 1 {
				d.fail(v, p, "attempts must be at least 1", "it counts tries in all, the first included")
			} else {
				j.Attempts = a
			}
		}
	},
	"env": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) {
		j.Env = map[string]string{}
		d.entries(v, p, func(k, val *yaml.Node, p string) {
			if !validEnvName(k.Value) {
				d.fail(k, p, "not a valid environment variable name", "use letters, digits and _")
			}
			if s, ok := d.str(val, p); ok {
				j.Env[k.Value] = s
			}
		})
	},
	"secret_env": func(l *loader, d *decoder, j *Job, v *yaml.Node, p string) {
		j.SecretEnv, _ = d.strList(v, p)
		for i, name := range j.SecretEnv {
			if !validEnvName(name) {
				d.fail(resolve(v).Content[i], fmt.Sprintf("%s[%d]", p, i), "not a valid environment variable name", "use letters, digits and _")
			}
		}
	},
}

func (l *loader) job(d *decoder, j *Job, n *yaml.Node, path string) {
	// What the job writes itself replaces what it extends, even when it
	// writes an empty list: inheritance needs to know which keys it wrote.
	j.set = map[string]bool{}
	mappingOf(d, n, path, jobFields, func(f jobField, k, v *yaml.Node, p string) {
		j.set[k.Value] = true
		f(l, d, j, v, p)
	})
}

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// checkName keeps names usable in log paths, holder ids and URLs.
func checkName(d *decoder, k *yaml.Node, path string) {
	if !safeName.MatchString(k.Value) {
		d.fail(k, path, "names may contain only letters, digits, '.', '_' and '-', and start with a letter or digit", "rename it")
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func validEnvName(s string) bool { return envName.MatchString(s) }

func (l *loader) dependencies(d *decoder, n *yaml.Node, path string) []Dependency {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list", "list job names, or {name: job, soft: true} items")
		return nil
	}
	var out []Dependency
	for i, item := range n.Content {
		item = resolve(item)
		p := fmt.Sprintf("%s[%d]", path, i)
		dep := Dependency{Pos: d.pos(item)}
		if item.Kind == yaml.MappingNode {
			d.mapping(item, p, map[string]field{
				"name": func(_, v *yaml.Node, p string) { dep.Name, _ = d.str(v, p) },
				"soft": func(_, v *yaml.Node, p string) { dep.Soft, _ = d.bool(v, p) },
			})
			if dep.Name == "" {
				d.fail(item, p, "dependency has no name", "add name: <job>")
				continue
			}
		} else if s, ok := d.str(item, p); ok {
			dep.Name = s
		} else {
			continue
		}
		out = append(out, dep)
	}
	return out
}

func (l *loader) matchers(d *decoder, n *yaml.Node, path string) []Matcher {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list of regexes", "list regexes, or {regex: ..., negate: true} items")
		return nil
	}
	var out []Matcher
	for i, item := range n.Content {
		item = resolve(item)
		p := fmt.Sprintf("%s[%d]", path, i)
		var (
			re     string
			negate bool
			at     = item
		)
		if item.Kind == yaml.MappingNode {
			d.mapping(item, p, map[string]field{
				"regex":  func(_, v *yaml.Node, p string) { re, _ = d.str(v, p); at = v },
				"negate": func(_, v *yaml.Node, p string) { negate, _ = d.bool(v, p) },
			})
			if at == item {
				d.fail(item, p, "matcher has no regex", "add regex: <pattern>")
				continue
			}
		} else if s, ok := d.str(item, p); ok {
			re = s
		} else {
			continue
		}
		m, err := NewMatcher(re, negate)
		if err != nil {
			d.fail(at, p, "invalid regex: "+strings.TrimPrefix(err.Error(), "error parsing regexp: "), "Sortie uses Go's RE2 syntax: no lookahead or backreferences; use {regex: ..., negate: true} to exclude paths")
			continue
		}
		m.Pos = d.pos(at)
		out = append(out, m)
	}
	return out
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron parses a 5-field cron expression (weekday 0 is Sunday) or a
// descriptor such as @hourly, as the config accepts it. It never panics:
// robfig/cron does on a bare "TZ=zone" with no expression after it.
func ParseCron(expr string) (sched cron.Schedule, err error) {
	if zone, ok := strings.CutPrefix(expr, "CRON_TZ="); ok && !strings.Contains(zone, " ") {
		return nil, fmt.Errorf("time zone %q with no schedule after it", zone)
	}
	if zone, ok := strings.CutPrefix(expr, "TZ="); ok && !strings.Contains(zone, " ") {
		return nil, fmt.Errorf("time zone %q with no schedule after it", zone)
	}
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("cannot parse %q", expr)
		}
	}()
	return cronParser.Parse(expr)
}

func (l *loader) pipelines(d *decoder, n *yaml.Node, path string) {
	if l.pipePos == nil {
		l.pipePos = map[string]Pos{}
	}
	d.entries(n, path, func(k, v *yaml.Node, p string) {
		if first, ok := l.pipePos[k.Value]; ok && first.File != d.file {
			dup(d, k, p, "pipeline", first)
			return
		}
		l.pipePos[k.Value] = d.pos(k)
		checkName(d, k, p)
		pl := &Pipeline{Name: k.Value, Pos: d.pos(k), Manager: ManagerSerial, Precedence: PrecedenceNormal}
		if !isNull(v) {
			l.pipeline(d, pl, v, p)
		}
		l.cfg.Pipelines[pl.Name] = pl
		l.cfg.PipelineOrder = append(l.cfg.PipelineOrder, pl.Name)
	})
}

func (l *loader) pipeline(d *decoder, pl *Pipeline, n *yaml.Node, path string) {
	d.mapping(n, path, map[string]field{
		"trigger": func(_, v *yaml.Node, p string) { l.trigger(d, &pl.Trigger, v, p) },
		"manager": func(_, v *yaml.Node, p string) {
			if s, ok := d.str(v, p); ok {
				switch m := Manager(s); m {
				case ManagerSerial, ManagerSupercedent, ManagerIndependent, ManagerCoalesce:
					pl.Manager = m
				default:
					d.fail(v, p, "unknown manager", "use serial, supercedent, independent or coalesce")
				}
			}
		},
		"precedence": func(_, v *yaml.Node, p string) {
			if s, ok := d.str(v, p); ok {
				switch pr := Precedence(s); pr {
				case PrecedenceHigh, PrecedenceNormal, PrecedenceLow:
					pl.Precedence = pr
				default:
					d.fail(v, p, "unknown precedence", "use high, normal or low")
				}
			}
		},
		"semaphore": func(_, v *yaml.Node, p string) {
			if s, ok := d.str(v, p); ok {
				pl.Semaphore = Ref{Name: s, Pos: d.pos(v)}
			}
		},
		"jobs":   func(_, v *yaml.Node, p string) { pl.Jobs = d.refList(v, p) },
		"report": func(_, v *yaml.Node, p string) { l.report(d, &pl.Report, v, p) },
		"check":  func(_, v *yaml.Node, p string) { pl.Check, _ = d.bool(v, p) },
	})
}

func (l *loader) trigger(d *decoder, t *Trigger, n *yaml.Node, path string) {
	d.mapping(n, path, map[string]field{
		"push": func(_, v *yaml.Node, p string) {
			t.Push = &PushTrigger{}
			if isNull(v) {
				return
			}
			d.mapping(v, p, map[string]field{
				"branch": func(_, v *yaml.Node, p string) { t.Push.Branch, _ = d.str(v, p) },
				"poll":   func(_, v *yaml.Node, p string) { t.Push.Poll, _ = d.duration(v, p) },
			})
		},
		"cron": func(_, v *yaml.Node, p string) {
			s, ok := d.str(v, p)
			if !ok {
				return
			}
			if _, err := ParseCron(s); err != nil {
				d.fail(v, p, "invalid cron expression: "+err.Error(), `use 5 fields "minute hour day-of-month month day-of-week" (0 = Sunday), e.g. "0 * * * *", or @hourly`)
				return
			}
			t.Cron = s
		},
		"jitter": func(_, v *yaml.Node, p string) { t.Jitter, _ = d.duration(v, p) },
	})
}
