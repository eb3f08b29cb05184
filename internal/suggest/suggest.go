// Package suggest finds the name a user most likely meant: the "did you
// mean" of config errors and of unknown command-line flags.
package suggest

// Closest returns the candidate nearest to got by edit distance and that
// distance; "" and a distance above any when there is no candidate. Ties go
// to the earlier candidate.
func Closest(got string, candidates []string) (string, int) {
	best, bestDist := "", 1<<30
	for _, c := range candidates {
		if d := Distance(got, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best, bestDist
}

// Distance is the Levenshtein distance between a and b: the fewest byte
// insertions, deletions and substitutions that turn one into the other.
func Distance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
