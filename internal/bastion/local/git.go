package local

import (
	"context"
	"strings"

	"github.com/sortie-ci/sortie/internal/source"
)

// git runs git through source.Git and returns its stdout, trimmed.
func git(ctx context.Context, args ...string) (string, error) {
	out, err := source.Git(ctx, args...)
	return strings.TrimSpace(string(out)), err
}
