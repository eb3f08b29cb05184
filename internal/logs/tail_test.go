package logs

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	var b strings.Builder
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(&b, "2026-01-02T03:04:05.000000000Z | line %d\n", i)
	}
	log := b.String()
	cases := []struct {
		name string
		log  string
		n    int
		want []string
	}{
		{"last three of many chunks", log, 3, []string{"line 4998", "line 4999", "line 5000"}},
		{"more than there are", "a\nb\n", 10, []string{"a", "b"}},
		{"a partial last line", "a\nb\nc", 2, []string{"b", "c"}},
		{"empty", "", 5, nil},
		{"none asked", "a\n", 0, nil},
	}
	for _, c := range cases {
		got, err := Tail(strings.NewReader(c.log), int64(len(c.log)), c.n)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			got[i] = Text(got[i])
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	// Exactly n lines across a chunk boundary: none lost, none cut.
	got, _ := Tail(strings.NewReader(log), int64(len(log)), 400)
	if len(got) != 400 || Text(got[0]) != "line 4601" || Text(got[399]) != "line 5000" {
		t.Errorf("400 lines: %d, from %q to %q", len(got), Text(got[0]), Text(got[len(got)-1]))
	}
}

func TestText(t *testing.T) {
	for line, want := range map[string]string{
		"2026-01-02T03:04:05.123456789Z | hello | world": "hello | world",
		"no timestamp here":                        "no timestamp here",
		"a long text that happens to hold | a bar": "a long text that happens to hold | a bar",
	} {
		if got := Text(line); got != want {
			t.Errorf("Text(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestStripANSI(t *testing.T) {
	in := "\x1b[1;31merror\x1b[0m: \x1b]0;title\x07done \x1b[2K"
	if got := StripANSI(in); got != "error: done " {
		t.Errorf("StripANSI = %q", got)
	}
}
