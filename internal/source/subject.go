package source

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// subjectBatch is how many commits one git command reads the subjects of.
const subjectBatch = 100

// Commit is what people tell a commit by: its subject (git's %s: the
// first paragraph of the message, on one line) and its author's name.
type Commit struct {
	Subject string
	Author  string
}

// Subjects returns the subject of each commit of shas (see Commits).
func (m *Mirror) Subjects(ctx context.Context, shas ...string) (map[string]string, error) {
	cs, err := m.Commits(ctx, shas...)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(cs))
	for sha, c := range cs {
		out[sha] = c.Subject
	}
	return out, nil
}

// Commits returns the subject and author of each commit of shas, full
// hashes, that the mirror has; a hash it does not have, or that is not a
// full hash, is left out of the map. It reads the mirror only, like
// Resolve, and needs no lock. A commit never changes: callers may cache
// it by hash.
func (m *Mirror) Commits(ctx context.Context, shas ...string) (map[string]Commit, error) {
	out := map[string]Commit{}
	var want []string
	seen := map[string]bool{}
	for _, s := range shas {
		if IsHash(s) && !seen[s] {
			seen[s] = true
			want = append(want, s)
		}
	}
	for len(want) > 0 {
		n := min(len(want), subjectBatch)
		if err := m.subjects(ctx, want[:n], out); err != nil {
			return nil, fmt.Errorf("source: subjects in %s: %w", m.Dir, err)
		}
		want = want[n:]
	}
	return out, nil
}

func (m *Mirror) subjects(ctx context.Context, shas []string, out map[string]Commit) error {
	// The author's name and the subject are on one line each; a unit
	// separator, which neither holds, parts them.
	args := append([]string{"--git-dir", m.Dir, "log", "--no-walk=unsorted", "--format=%H%x1f%an%x1f%s"}, shas...)
	b, err := Git(ctx, args...)
	if err != nil {
		// One commit the mirror lacks fails the whole command: ask again
		// one at a time, leaving out those it lacks.
		if len(shas) > 1 {
			for _, s := range shas {
				if err := m.subjects(ctx, []string{s}, out); err != nil {
					return err
				}
			}
			return nil
		}
		if _, rerr := m.resolve(ctx, shas[0]); errors.Is(rerr, ErrUnknownRevision) {
			return nil
		}
		return err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.SplitN(line, "\x1f", 3)
		if len(f) == 3 && IsHash(f[0]) {
			out[f[0]] = Commit{Author: f[1], Subject: f[2]}
		}
	}
	return nil
}
