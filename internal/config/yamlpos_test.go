package config

import (
	"errors"
	"strings"
	"testing"
)

// TestSyntaxErrorPositions: a YAML syntax error is reported where the
// problem is (the line, and the column of the culprit), not where the YAML
// library's message points.
func TestSyntaxErrorPositions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unclosed bracket", "source: {url: x}\njobs:\n  boot:\n    bootstrap: true\n    files: [^a, ^b\n    run: x\npipelines: {}\n",
			"5:12: invalid YAML: '[' is not closed: YAML reads on to line 6 and fails there"},
		{"unclosed brace at the end", "jobs:\n  a: {run: x\n",
			"2:6: invalid YAML: '{' is not closed by the end of the file"},
		{"unclosed quote", "jobs:\n  a: {run: \"true\"}\n  b:\n    run: \"echo hi\n",
			"4:10: invalid YAML: '\"' is not closed by the end of the file"},
		{"wrong closer", "jobs:\n  a:\n    files: [a, b}\n    run: x\n",
			"3:17: invalid YAML: '}' does not close the list that opens at 3:12"},
		{"stray closer", "jobs:\n  a: ]x\n",
			"2:6: invalid YAML: ']' closes nothing"},
		{"bad line inside a multi-line list", "jobs:\n  a:\n    files: [\n      ^a,\n      ^b: c: d,\n    ]\n    run: x\n",
			"5:7: invalid YAML: YAML cannot read this line of the list that opens at 3:12"},
		{"after a good multi-line list", "jobs:\n  a:\n    files: [\n      ^a,\n    ]\n    run: x\n   timeout: 1m\n",
			"7:4: invalid YAML: indented by 3 spaces, which matches no level above it (0, 2 or 4 spaces)"},
		{"indentation in a list of mappings", "jobs:\n  a:\n    dependencies:\n      - name: b\n        soft: true\n       oops: 1\n",
			"6:8: invalid YAML: indented by 7 spaces, which matches no level above it (0, 2, 4, 6 or 8 spaces)"},
		{"under a key with its value", "jobs:\n  a:\n    run: x\n      timeout: 1m\n",
			"4:7: invalid YAML: indented under line 3, which already has its value"},
		{"block scalar holds brackets and quotes", "jobs:\n  a:\n    run: |\n      echo \"[x {\n      echo 'y\n    timeout: 1m\n  b:\n    run: x\n     bad: 1\n",
			"9:6: invalid YAML: indented under line 8, which already has its value"},
		{"tab", "jobs:\n  a:\n\trun: x\n",
			"3:1: invalid YAML: a tab in the indentation"},
		{"colon in a plain value", "jobs:\n  a:\n    run: echo a: b\n",
			"3:16: invalid YAML: a plain value cannot contain \": \""},
		{"unknown alias", "jobs:\n  a:\n    dependencies: *deps\n",
			"3:19: invalid YAML: alias *deps names no anchor above it"},
		{"second document", "jobs:\n  a: {run: x}\n---\nb: [\n",
			"4:4: invalid YAML: '[' is not closed by the end of the file"},
		{"multi-line single-quoted string", "jobs:\n  a:\n    run: 'echo\n      it''s: fine'\n    x: y\n   z: w\n",
			"6:4: invalid YAML: indented by 3 spaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("c.yaml", []byte(tc.yaml))
			var list Errors
			if !errors.As(err, &list) || len(list) != 1 {
				t.Fatalf("got %v, want one error", err)
			}
			if got := list[0].Error(); !strings.HasPrefix(got, "c.yaml:"+tc.want) {
				t.Errorf("got  %s\nwant c.yaml:%s...", got, tc.want)
			}
		})
	}
}
