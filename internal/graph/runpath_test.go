package graph

import (
	"reflect"
	"testing"
	"time"
)

func TestRunPath(t *testing.T) {
	// boot -> a -> b -> d ; boot -> c -> d ; boot -> e
	p := &Plan{Jobs: []Job{
		{Name: "boot", Dependencies: []string{}},
		{Name: "a", Dependencies: []string{"boot"}},
		{Name: "c", Dependencies: []string{"boot"}},
		{Name: "e", Dependencies: []string{"boot"}},
		{Name: "b", Dependencies: []string{"boot", "a"}},
		{Name: "d", Dependencies: []string{"boot", "b", "c"}},
	}}
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	at := func(s, e int) Span {
		return Span{t0.Add(time.Duration(s) * time.Second), t0.Add(time.Duration(e) * time.Second)}
	}
	cases := []struct {
		name  string
		spans map[string]Span
		want  []string
	}{
		{
			// c ran long: d waited for c, not for b. The estimate's path
			// (through a and b) is not what set the duration.
			name:  "the slow branch",
			spans: map[string]Span{"boot": at(0, 1), "a": at(1, 2), "c": at(1, 9), "e": at(1, 3), "b": at(2, 4), "d": at(9, 10)},
			want:  []string{"boot", "c", "d"},
		},
		{
			name:  "the long chain",
			spans: map[string]Span{"boot": at(0, 1), "a": at(1, 5), "c": at(1, 2), "e": at(1, 3), "b": at(5, 8), "d": at(8, 9)},
			want:  []string{"boot", "a", "b", "d"},
		},
		{
			// d never ran (b failed): the path ends at the last job to end.
			name:  "stopped early",
			spans: map[string]Span{"boot": at(0, 1), "a": at(1, 2), "c": at(1, 3), "e": at(1, 20), "b": at(2, 4)},
			want:  []string{"boot", "e"},
		},
		{
			// b and c ended together: the later one in plan order.
			name:  "a tie",
			spans: map[string]Span{"boot": at(0, 1), "a": at(1, 2), "c": at(1, 4), "e": at(1, 2), "b": at(2, 4), "d": at(4, 5)},
			want:  []string{"boot", "a", "b", "d"},
		},
		{name: "nothing ran", spans: map[string]Span{}, want: []string{}},
	}
	for _, c := range cases {
		if got := p.RunPath(c.spans); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: RunPath = %v, want %v", c.name, got, c.want)
		}
	}
}
