package source

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// subjectBatch is how many commits one git command reads the subjects of.
const subjectBatch = 100

// Subjects returns the subject (git's %s: the first paragraph of the
// message, on one line) of each commit of shas, full hashes, that the
// mirror has; a hash it does not have, or that is not a full hash, is left
// out of the map. It reads the mirror only, like Resolve, and needs no
// lock. A commit's subject never changes: callers may cache it by hash.
func (m *Mirror) Subjects(ctx context.Context, shas ...string) (map[string]string, error) {
	out := map[string]string{}
	var want []string
	seen := map[string]bool{}
	for _, s := range shas {
		if isHash(s) && !seen[s] {
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

func (m *Mirror) subjects(ctx context.Context, shas []string, out map[string]string) error {
	args := append([]string{"--git-dir", m.Dir, "log", "--no-walk=unsorted", "--format=%H %s"}, shas...)
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
		if sha, subject, ok := strings.Cut(line, " "); ok && isHash(sha) {
			out[sha] = subject
		} else if isHash(line) {
			out[line] = "" // an empty message
		}
	}
	return nil
}
