package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// DeadMatchers returns, as warnings, every files or irrelevant_files item
// that matches none of paths (every file of a commit of the deployed
// repository): a misspelt path or a wrong prefix, which would never select
// its job (or never make a change irrelevant to it). Each is reported once,
// where it is written, not again for every job that extends it. where names
// the commit for the message ("/srv/git/system-config at main").
func (c *Config) DeadMatchers(paths []string, where string) []*Error {
	sorted := slices.Clone(paths)
	slices.Sort(sorted)
	var out []*Error
	// An alias repeats an anchored list at its anchor's position: one
	// warning says it.
	said := map[Pos]bool{}
	for _, name := range c.JobOrder {
		j := c.Jobs[name]
		for _, key := range []string{"files", "irrelevant_files"} {
			if !j.Sets(key) {
				continue
			}
			ms := j.Files
			effect := "it selects the job"
			if key == "irrelevant_files" {
				ms = j.IrrelevantFiles
				effect = "it makes a change irrelevant to the job"
			}
			for i, m := range ms {
				if said[m.Pos] || matchesAny(m, sorted) {
					continue
				}
				said[m.Pos] = true
				got := strconv.Quote(m.Regex)
				if m.Negate {
					got = "{regex: " + got + ", negate: true}"
				}
				out = append(out, &Error{
					Pos: m.Pos, Path: fmt.Sprintf("jobs.%s.%s[%d]", name, key, i),
					Msg:  "matches no file of " + where,
					Got:  got,
					Hint: "a misspelt path, or a wrong prefix (a regex matches from the start of the path)? Never, until such a file exists, " + effect,
				})
			}
		}
	}
	return Errors(out).sorted()
}

// matchesAny reports whether m matches one of sorted, looking only at the
// paths that begin with m's literal prefix.
func matchesAny(m Matcher, sorted []string) bool {
	p := m.Prefix()
	i, _ := slices.BinarySearch(sorted, p)
	for ; i < len(sorted) && strings.HasPrefix(sorted[i], p); i++ {
		if m.Match(sorted[i]) {
			return true
		}
	}
	return false
}
