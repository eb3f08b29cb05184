package web

import (
	"context"
	"html"
	"html/template"
	"regexp"
	"strings"
	"sync"

	"github.com/sortie-ci/sortie/internal/source"
)

// How the pages name a buildset: its short id, linked to its page, its
// commit's short hash and the commit's subject. Buildsets made from one
// commit (a deploy and the hourly run after it, a re-run) share the last
// two; the short id tells them apart.

// bsName is what the pages show of a buildset wherever they name it.
type bsName struct {
	ID      string
	Short   string // shortID
	Sha     string // the commit, short
	Commit  string
	Subject string // "" when the mirror does not have the commit
	Author  string // the commit's author's name; "" likewise
}

func (h *Handler) name(id, commit string, commits map[string]source.Commit) bsName {
	c := commits[commit]
	return bsName{ID: id, Short: shortID(id), Sha: shortCommit(commit), Commit: commit, Subject: c.Subject, Author: c.Author}
}

// maxSubjects bounds the cache of commits' subjects and authors; it starts again empty
// when full (a page needs at most a few dozen at once).
const maxSubjects = 10000

// subjectCache keeps commits' subjects and authors by hash: a commit never
// changes, and the status page asks for the same ones every 2 seconds.
type subjectCache struct {
	mu sync.Mutex
	m  map[string]source.Commit
}

// subjects returns the subjects and authors of the commits, from the cache
// or the server's mirror; a commit the mirror does not have maps to the
// zero Commit. A failure to read the mirror is logged, and the page goes
// without them.
func (h *Handler) subjects(ctx context.Context, commits ...string) map[string]source.Commit {
	out := make(map[string]source.Commit, len(commits))
	var missing []string
	c := &h.subjectCache
	c.mu.Lock()
	for _, sha := range commits {
		if s, ok := c.m[sha]; ok {
			out[sha] = s
		} else if sha != "" {
			missing = append(missing, sha)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out
	}
	got, err := h.src.Commits(ctx, missing)
	if err != nil {
		h.log().Warn("web: commit subjects", "err", err)
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m)+len(missing) > maxSubjects {
		c.m = map[string]source.Commit{}
	}
	for _, sha := range missing {
		c.m[sha] = got[sha] // "" for a commit the mirror lacks: not asked again
		out[sha] = got[sha]
	}
	return out
}

// uuidRE matches a buildset id (a UUID) in a text: the waiting reasons,
// causes and errors cite buildsets by their full id.
var uuidRE = regexp.MustCompile(`\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b`)

// linkIDs escapes text and links every buildset id in it to its page,
// shown as "buildset …<short id>" (and its commit's subject, when label
// knows it) with the full id in the link's title.
func linkIDs(text string, label func(id string) string) template.HTML {
	var b strings.Builder
	last := 0
	for _, m := range uuidRE.FindAllStringIndex(text, -1) {
		b.WriteString(html.EscapeString(text[last:m[0]]))
		id := text[m[0]:m[1]]
		b.WriteString(`<a class="bsref" href="/buildsets/`)
		b.WriteString(html.EscapeString(id))
		b.WriteString(`" title="buildset `)
		b.WriteString(html.EscapeString(id))
		b.WriteString(`">buildset …`)
		b.WriteString(html.EscapeString(shortID(id)))
		b.WriteString(`</a>`)
		if label != nil {
			if l := label(id); l != "" {
				b.WriteString(` (`)
				b.WriteString(html.EscapeString(l))
				b.WriteString(`)`)
			}
		}
		last = m[1]
	}
	b.WriteString(html.EscapeString(text[last:]))
	return template.HTML(b.String())
}
