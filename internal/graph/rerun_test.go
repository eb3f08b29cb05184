package graph

import (
	"reflect"
	"testing"
)

func TestRerun(t *testing.T) {
	// boot -> a -> b -> d ; boot -> c -> d ; boot -> e
	p := &Plan{Pipeline: "deploy", Bootstrap: "boot", NotSelected: []NotSelected{}, Jobs: []Job{
		{Name: "boot", Dependencies: []string{}},
		{Name: "a", Dependencies: []string{"boot"}, Wave: 1},
		{Name: "c", Dependencies: []string{"boot"}, Wave: 1},
		{Name: "e", Dependencies: []string{"boot"}, Wave: 1},
		{Name: "b", Dependencies: []string{"boot", "a"}, Wave: 2},
		{Name: "d", Dependencies: []string{"boot", "b", "c"}, Wave: 3},
	}}
	// b failed, so d was skipped; a, c and e succeeded.
	got := p.Rerun(map[string]bool{"b": true, "d": true})
	var names []string
	for _, j := range got.Jobs {
		names = append(names, j.Name)
	}
	if want := []string{"boot", "b", "d"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("jobs = %v, want %v", names, want)
	}
	if deps := got.Job("d").Dependencies; !reflect.DeepEqual(deps, []string{"boot", "b"}) {
		t.Errorf("d depends on %v, want [boot b] (c succeeded)", deps)
	}
	if w := got.Job("d").Wave; w != 2 {
		t.Errorf("d wave = %d, want 2", w)
	}
	if want := []string{"boot", "b", "d"}; !reflect.DeepEqual(got.CriticalPath, want) {
		t.Errorf("critical path = %v, want %v", got.CriticalPath, want)
	}
	var dropped []string
	for _, n := range got.NotSelected {
		if n.Reason != "succeeded" {
			t.Errorf("%s: reason %q", n.Name, n.Reason)
		}
		dropped = append(dropped, n.Name)
	}
	if want := []string{"a", "c", "e"}; !reflect.DeepEqual(dropped, want) {
		t.Errorf("not selected = %v, want %v", dropped, want)
	}
	// A failure at the top takes everything below it along.
	got = p.Rerun(map[string]bool{"a": true})
	names = nil
	for _, j := range got.Jobs {
		names = append(names, j.Name)
	}
	if want := []string{"boot", "a", "b", "d"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("jobs = %v, want %v", names, want)
	}
}
