package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"run", "run", 0}, {"", "abc", 3}, {"pipline", "pipeline", 1},
		{"kitten", "sitting", 3}, {"instal", "install", 1}, {"rnu", "run", 2},
	} {
		if got := Distance(c.a, c.b); got != c.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

func TestClosest(t *testing.T) {
	if got, d := Closest("pipline", []string{"commit", "pipeline", "files"}); got != "pipeline" || d != 1 {
		t.Errorf("Closest = %q %d", got, d)
	}
	if got, _ := Closest("x", nil); got != "" {
		t.Errorf("Closest of no candidate = %q", got)
	}
}
