package buildset

import "github.com/sortie-ci/sortie/internal/graph"

// TakeFresh is Fresh's take, for the tests of package buildset_test.
func (f *Fresh) TakeFresh(id string) (*graph.Plan, *Spec) {
	plan, spec, _ := f.take(id)
	return plan, spec
}
