package config

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Effective renders every job that can run (abstract jobs are templates
// and are left out) as it runs, after inheritance, as a YAML document with
// one key, jobs. A job that extends another says so in a comment, and so
// does each key it took from a job it extends ("from infra-prod-playbook").
// Keys left at their defaults are written too (attempts), keys that are
// unset are not.
func (c *Config) Effective() []byte {
	jobs := &yaml.Node{Kind: yaml.MappingNode}
	abstract := 0
	for _, name := range c.JobOrder {
		j := c.Jobs[name]
		if j.Abstract {
			abstract++
			continue
		}
		key := str(name)
		if chain := c.Chain(j); len(chain) > 0 {
			key.HeadComment = "extends " + strings.Join(chain, ", which extends ")
		}
		jobs.Content = append(jobs.Content, key, effectiveJob(j))
	}
	doc := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{str("jobs"), jobs}}
	if abstract > 0 {
		doc.HeadComment = fmt.Sprintf("Every job as it runs, after inheritance; %d abstract %s left out.", abstract, pluralize(abstract, "job is", "jobs are"))
	} else {
		doc.HeadComment = "Every job as it runs, after inheritance."
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	// Encoding nodes built here cannot fail.
	if err := enc.Encode(doc); err != nil {
		panic(err)
	}
	enc.Close()
	return b.Bytes()
}

func pluralize(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func effectiveJob(j *Job) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, v *yaml.Node) {
		k := str(key)
		if from := j.Inherited(key); from != "" {
			note := "from " + from
			if key == "env" && j.Sets("env") {
				note = "merged with " + from + "'s"
			}
			// The encoder writes a flow collection's comment only from
			// the value, and a block collection's only from the key.
			if v.Kind != yaml.ScalarNode && v.Style == yaml.FlowStyle {
				v.LineComment = note
			} else {
				k.LineComment = note
			}
		}
		m.Content = append(m.Content, k, v)
	}
	if j.Bootstrap {
		add("bootstrap", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
	}
	if len(j.Install) > 0 {
		add("install", strs(j.Install))
	}
	if j.Playbook != "" {
		add("playbook", str(j.Playbook))
	}
	if j.Run != "" {
		add("run", str(j.Run))
	}
	if len(j.Dependencies) > 0 {
		l := &yaml.Node{Kind: yaml.SequenceNode}
		for _, d := range j.Dependencies {
			if d.Soft {
				l.Content = append(l.Content, &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle, Content: []*yaml.Node{
					str("name"), str(d.Name), str("soft"), {Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"},
				}})
			} else {
				l.Content = append(l.Content, str(d.Name))
			}
		}
		add("dependencies", l)
	}
	if len(j.Files) > 0 {
		add("files", matcherList(j.Files))
	}
	if len(j.IrrelevantFiles) > 0 {
		add("irrelevant_files", matcherList(j.IrrelevantFiles))
	}
	if len(j.Semaphores) > 0 {
		l := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, s := range j.Semaphores {
			l.Content = append(l.Content, str(s.Name))
		}
		add("semaphores", l)
	}
	if j.Timeout > 0 {
		add("timeout", str(FormatDuration(j.Timeout)))
	}
	add("attempts", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(j.Attempts)})
	if len(j.Env) > 0 {
		e := &yaml.Node{Kind: yaml.MappingNode}
		for _, k := range slices.Sorted(maps.Keys(j.Env)) {
			e.Content = append(e.Content, str(k), str(j.Env[k]))
		}
		add("env", e)
	}
	if len(j.SecretEnv) > 0 {
		l := strs(j.SecretEnv)
		l.Style = yaml.FlowStyle
		add("secret_env", l)
	}
	if j.DurationHint > 0 {
		add("duration_hint", str(FormatDuration(j.DurationHint)))
	}
	return m
}

func matcherList(ms []Matcher) *yaml.Node {
	l := &yaml.Node{Kind: yaml.SequenceNode}
	for _, m := range ms {
		if m.Negate {
			l.Content = append(l.Content, &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle, Content: []*yaml.Node{
				str("regex"), str(m.Regex), str("negate"), {Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"},
			}})
			continue
		}
		l.Content = append(l.Content, str(m.Regex))
	}
	return l
}

// str is a string scalar; the encoder quotes it when YAML would read it as
// something else.
func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func strs(ss []string) *yaml.Node {
	l := &yaml.Node{Kind: yaml.SequenceNode}
	for _, s := range ss {
		l.Content = append(l.Content, str(s))
	}
	return l
}

// FormatDuration writes d as the config reads it, without the zero units
// time.Duration's String adds: "1h", "30m", "1h30m", "90s" reads "1m30s".
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
