package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// version and commit say what this binary is; a release build sets them
// with -ldflags "-X main.version=v1.2.3 -X main.commit=<sha>". Otherwise
// they come from what Go stamped into the binary (the module version, and
// the git commit unless built with -buildvcs=false), or "devel" and
// "unknown".
var version, commit = "", ""

// buildVersion returns the version and the commit (with "-dirty" when the
// tree had changes) the binary was built from.
func buildVersion() (ver, rev string) {
	ver, rev = version, cmpOr(commit, "unknown")
	info, ok := debug.ReadBuildInfo()
	if !ok || commit != "" {
		return cmpOr(ver, "devel"), rev
	}
	if ver == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
		ver = info.Main.Version
	}
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && rev != "unknown" {
		rev += "-dirty"
	}
	return cmpOr(ver, "devel"), rev
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	ver, rev := buildVersion()
	fmt.Fprintf(stdout, "sortie %s\ncommit: %s\ngo: %s %s/%s\nschema: %d (SQLite), %d (PostgreSQL)\n", ver, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		sqlite.SchemaVersion(), postgres.SchemaVersion())
	return nil
}
