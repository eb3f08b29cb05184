package config

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ReporterType names what a reporter tells, and how.
type ReporterType string

// Reporter types.
const (
	// ReporterGitHub sets a commit status through GitHub's REST API.
	ReporterGitHub ReporterType = "github"
	// ReporterGitea sets a commit status through Gitea's (or Forgejo's)
	// API.
	ReporterGitea ReporterType = "gitea"
	// ReporterGitLab sets a commit status through GitLab's API.
	ReporterGitLab ReporterType = "gitlab"
	// ReporterSlack posts a message to a Slack-compatible incoming
	// webhook.
	ReporterSlack ReporterType = "slack"
	// ReporterMatrix sends a message to a Matrix room.
	ReporterMatrix ReporterType = "matrix"
	// ReporterWebhook POSTs the buildset report, signed, to a URL.
	ReporterWebhook ReporterType = "webhook"
)

// reporterKeys are the keys each type takes besides type. A key ending in
// _env names an environment variable of Sortie's that holds a secret.
var reporterKeys = map[ReporterType][]string{
	ReporterGitHub:  {"url", "repository", "token_env"},
	ReporterGitea:   {"url", "repository", "token_env"},
	ReporterGitLab:  {"url", "project", "token_env"},
	ReporterSlack:   {"url_env"},
	ReporterMatrix:  {"homeserver", "room", "token_env"},
	ReporterWebhook: {"url", "secret_env"},
}

// reporterTypes lists the types for messages, in the order the docs give
// them.
const reporterTypes = "github, gitea, gitlab, slack, matrix or webhook"

// DefaultGitHubURL is GitHub's API root, the url of a github reporter that
// sets none.
const DefaultGitHubURL = "https://api.github.com"

// Reporter is who hears of buildsets: a forge's commit statuses, a chat
// room, a webhook. It holds the names of the environment variables that
// hold its secrets, never their values.
type Reporter struct {
	Name string
	Type ReporterType
	// URL is the forge's base URL (GitHub's API root for github), or the
	// webhook's URL.
	URL string
	// Repository is owner/name on GitHub and Gitea.
	Repository string
	// Project is GitLab's project path (group/name) or numeric id.
	Project string
	// Homeserver and Room are Matrix's: the homeserver's base URL and the
	// room's id (!id:server).
	Homeserver string
	Room       string
	// TokenEnv, URLEnv and SecretEnv name the environment variables of
	// Sortie's that hold the token (forges, Matrix), the URL (Slack's
	// embeds its key) and the webhook's signing secret.
	TokenEnv, URLEnv, SecretEnv string
	Pos                         Pos
	// envPos is where each *_env key's value is written, for CheckEnv.
	envPos map[string]Pos
}

// Env returns the environment variables the reporter reads, by key
// (token_env, url_env, secret_env), with where each is written.
func (r *Reporter) Env() map[string]string {
	out := map[string]string{}
	for key, v := range map[string]string{"token_env": r.TokenEnv, "url_env": r.URLEnv, "secret_env": r.SecretEnv} {
		if v != "" {
			out[key] = v
		}
	}
	return out
}

// ReportEvents are the events of a buildset a pipeline reports, each with
// the reporters that hear of it.
type ReportEvents struct {
	// Start: the buildset's first build starts.
	Start []Ref
	// Success: the buildset ended SUCCESS.
	Success []Ref
	// Failure: it ended FAILURE, ERROR or CONFIG_ERROR.
	Failure []Ref
	// Cancel: it ended CANCELED.
	Cancel []Ref
}

// All returns every reference, event by event, with the key path of each.
func (e ReportEvents) All() (refs []Ref, paths []string) {
	for _, ev := range []struct {
		key  string
		refs []Ref
	}{{"start", e.Start}, {"success", e.Success}, {"failure", e.Failure}, {"cancel", e.Cancel}} {
		for i, r := range ev.refs {
			refs = append(refs, r)
			paths = append(paths, fmt.Sprintf("%s[%d]", ev.key, i))
		}
	}
	return refs, paths
}

func (l *loader) reporters(d *decoder, n *yaml.Node, path string) {
	if l.repPos == nil {
		l.repPos = map[string]Pos{}
	}
	d.entries(n, path, func(k, v *yaml.Node, p string) {
		if first, ok := l.repPos[k.Value]; ok && first.File != d.file {
			dup(d, k, p, "reporter", first)
			return
		}
		l.repPos[k.Value] = d.pos(k)
		checkName(d, k, p)
		r := &Reporter{Name: k.Value, Pos: d.pos(k), envPos: map[string]Pos{}}
		l.reporter(d, r, v, p)
		// Known even when invalid, so that the pipelines naming it get no
		// second error.
		l.cfg.Reporters[r.Name] = r
	})
}

// reporter decodes one reporter: its type first, which says what other
// keys it takes.
func (l *loader) reporter(d *decoder, r *Reporter, n *yaml.Node, path string) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping", "write it as {type: ..., ...}")
		return
	}
	var typ *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == "type" {
			typ = resolve(n.Content[i+1])
		}
	}
	if typ == nil {
		d.errs.add(d.pos(n), path, "reporter has no type", "", "add type: "+reporterTypes)
		return
	}
	s, ok := d.str(typ, path+".type")
	if !ok {
		return
	}
	r.Type = ReporterType(s)
	keys, ok := reporterKeys[r.Type]
	if !ok {
		types := slices.Sorted(maps.Keys(reporterKeys))
		names := make([]string, len(types))
		for i, t := range types {
			names[i] = string(t)
		}
		hint := "use " + reporterTypes
		if best, ok := closest(s, names); ok {
			hint = fmt.Sprintf("did you mean %q?", best)
		}
		d.fail(typ, path+".type", "unknown reporter type", hint)
		return
	}
	str := func(dst *string, check func(v *yaml.Node, p, s string)) field {
		return func(_, v *yaml.Node, p string) {
			if s, ok := d.str(v, p); ok {
				*dst = s
				if check != nil {
					check(v, p, s)
				}
			}
		}
	}
	env := func(key string, dst *string) field {
		return str(dst, func(v *yaml.Node, p, s string) {
			if !validEnvName(s) {
				d.fail(v, p, "not a valid environment variable name", "name the variable of Sortie's environment that holds the secret: letters, digits and _")
			}
			r.envPos[key] = d.pos(v)
		})
	}
	all := map[string]field{
		"url":        str(&r.URL, func(v *yaml.Node, p, s string) { checkHTTPURL(d, v, p, s) }),
		"repository": str(&r.Repository, func(v *yaml.Node, p, s string) { checkRepository(d, v, p, s) }),
		"project": str(&r.Project, func(v *yaml.Node, p, s string) {
			if strings.Trim(s, "/") == "" {
				d.fail(v, p, "must name a project", "write its path, group/name, or its numeric id")
			}
		}),
		"homeserver": str(&r.Homeserver, func(v *yaml.Node, p, s string) { checkHTTPURL(d, v, p, s) }),
		"room": str(&r.Room, func(v *yaml.Node, p, s string) {
			if !strings.HasPrefix(s, "!") || !strings.Contains(s, ":") {
				d.fail(v, p, "must be a room id, !id:server", "find it in the room's settings (Advanced); an alias (#name:server) is not accepted")
			}
		}),
		"token_env":  env("token_env", &r.TokenEnv),
		"url_env":    env("url_env", &r.URLEnv),
		"secret_env": env("secret_env", &r.SecretEnv),
	}
	fields := map[string]field{"type": func(*yaml.Node, *yaml.Node, string) {}}
	for _, k := range keys {
		fields[k] = all[k]
	}
	d.mapping(n, path, fields)

	// What each type needs.
	need := func(key, val, hint string) {
		if val == "" && !d.errs.bad.under(path+"."+key) {
			d.errs.add(d.pos(n), path, "reporter of type "+string(r.Type)+" has no "+key, "", hint)
		}
	}
	switch r.Type {
	case ReporterGitHub:
		if r.URL == "" {
			r.URL = DefaultGitHubURL
		}
		need("repository", r.Repository, "add repository: owner/name")
		need("token_env", r.TokenEnv, "add token_env: the variable holding a token that may write commit statuses")
	case ReporterGitea:
		need("url", r.URL, "add url: the forge's base URL, https://gitea.example.org")
		need("repository", r.Repository, "add repository: owner/name")
		need("token_env", r.TokenEnv, "add token_env: the variable holding a token that may write commit statuses")
	case ReporterGitLab:
		need("url", r.URL, "add url: the forge's base URL, https://gitlab.example.org")
		need("project", r.Project, "add project: group/name")
		need("token_env", r.TokenEnv, "add token_env: the variable holding a token with the api scope")
	case ReporterSlack:
		need("url_env", r.URLEnv, "add url_env: the variable holding the incoming webhook's URL (it embeds its key)")
	case ReporterMatrix:
		need("homeserver", r.Homeserver, "add homeserver: https://matrix.example.org")
		need("room", r.Room, "add room: !id:server")
		need("token_env", r.TokenEnv, "add token_env: the variable holding the access token of the account that posts")
	case ReporterWebhook:
		need("url", r.URL, "add url: where to POST")
		need("secret_env", r.SecretEnv, "add secret_env: the variable holding the secret the body is signed with")
	}
}

func checkHTTPURL(d *decoder, v *yaml.Node, p, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		d.fail(v, p, "must be an http or https URL", "write it like https://host.example.org, with no user or password in it (tokens go in *_env variables)")
	}
}

func checkRepository(d *decoder, v *yaml.Node, p, s string) {
	owner, name, ok := strings.Cut(s, "/")
	if !ok || owner == "" || name == "" || strings.Contains(name, "/") {
		d.fail(v, p, "must be owner/name", "")
	}
}

// report decodes a pipeline's report: the reporters of each event.
func (l *loader) report(d *decoder, e *ReportEvents, n *yaml.Node, path string) {
	d.mapping(n, path, map[string]field{
		"start":   func(_, v *yaml.Node, p string) { e.Start = d.refList(v, p) },
		"success": func(_, v *yaml.Node, p string) { e.Success = d.refList(v, p) },
		"failure": func(_, v *yaml.Node, p string) { e.Failure = d.refList(v, p) },
		"cancel":  func(_, v *yaml.Node, p string) { e.Cancel = d.refList(v, p) },
	})
}

// checkReports reports the pipelines' references to reporters that are not
// defined, and a reporter named twice for one event.
func (l *loader) checkReports() {
	c := l.cfg
	names := slices.Sorted(maps.Keys(c.Reporters))
	for _, name := range c.PipelineOrder {
		pl := c.Pipelines[name]
		refs, paths := pl.Report.All()
		seen := map[string]Pos{}
		for i, r := range refs {
			p := "pipelines." + name + ".report." + paths[i]
			event, _, _ := strings.Cut(paths[i], "[")
			if _, ok := c.Reporters[r.Name]; !ok {
				if l.errs.bad.under("reporters") {
					continue
				}
				hint := "define it under reporters:"
				if len(names) > 0 {
					hint = suggest(r.Name, names, "reporters") + " (or define it under reporters:)"
				}
				l.errs.add(r.Pos, p, "unknown reporter", strconv.Quote(r.Name), hint)
				continue
			}
			if first, ok := seen[event+"\x00"+r.Name]; ok {
				l.errs.add(r.Pos, p, fmt.Sprintf("reporter %q is listed twice, first at %s", r.Name, first), "", "list it once")
			}
			seen[event+"\x00"+r.Name] = r.Pos
		}
	}
}

// CheckEnv reports, as an Errors value with each position, every
// environment variable a reporter reads (token_env, url_env, secret_env)
// that getenv finds unset or empty: what `sortie serve` checks when it
// starts and when it reloads, so that a reporter fails at once rather than
// at its first delivery. Loading does not check them: a config is valid
// before its secrets are in place (`sortie validate` in CI).
func (c *Config) CheckEnv(getenv func(string) string) error {
	var list Errors
	for _, name := range slices.Sorted(maps.Keys(c.Reporters)) {
		r := c.Reporters[name]
		for _, key := range slices.Sorted(maps.Keys(r.Env())) {
			v := r.Env()[key]
			if getenv(v) != "" {
				continue
			}
			pos := r.Pos
			if p, ok := r.envPos[key]; ok {
				pos = p
			}
			list = append(list, &Error{
				Pos: pos, Path: "reporters." + name + "." + key, Msg: "$" + v + " is not set in sortie's environment",
				Hint: "set it before starting sortie serve, or remove the reporter",
			})
		}
	}
	if len(list) == 0 {
		return nil
	}
	return list.sorted()
}
