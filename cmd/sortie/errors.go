package main

import (
	"errors"
	"fmt"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/source"
)

// sourceError explains a failure to find a buildset's commit, naming the
// repository as the config does (source.url) rather than Sortie's mirror
// of it. A revision that names no commit is bad usage (exit 2); a
// repository that cannot be fetched is not, and is never reported as a
// missing commit. Other errors are returned as they are.
func sourceError(op string, cfg *config.Config, rev string, err error) error {
	url := cfg.Source.URL
	var fe *source.FetchError
	switch {
	case errors.Is(err, source.ErrUnknownRevision) && rev != "":
		return usageError("%s: --commit %s: no such commit in %s (source.url)", op, rev, url)
	case errors.Is(err, source.ErrUnknownRevision) && cfg.Source.Branch != "":
		return usageError("%s: no branch %s in %s (source.branch at %s); name an existing branch, or pass --commit", op, cfg.Source.Branch, url, cfg.Source.Pos)
	case errors.Is(err, source.ErrUnknownRevision):
		return usageError("%s: %s (source.url) has no commit on its default branch; set source.branch, or pass --commit", op, url)
	case errors.As(err, &fe):
		return fmt.Errorf("%s: cannot fetch %s (source.url): %w", op, url, fe.Err)
	}
	return err
}
