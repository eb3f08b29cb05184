package main

import (
	"errors"
	"flag"
	"io"
	"strconv"
	"strings"

	"github.com/sortie-ci/sortie/internal/config"
)

// filesFlag collects --files values: repeated, or separated by commas.
// set records whether the flag was given at all, since an explicit empty
// list and no list mean the same thing for selection but not for reports.
type filesFlag struct {
	files []string
	set   bool
}

func (f *filesFlag) String() string { return strings.Join(f.files, ",") }

func (f *filesFlag) Set(v string) error {
	f.set = true
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			f.files = append(f.files, p)
		}
	}
	return nil
}

// newFlags makes a flag set that prints its usage to stderr and never exits.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(stderr, "Usage: sortie "+name+" "+synopsis+"\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags; -h is a success, anything else wrong is exit 2.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitCode(0)
		}
		return exitCode(2)
	}
	if fs.NArg() > 0 {
		return usageError("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// loadConfig loads the config, printing its errors; a bad config is exit 2.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	if path == "" {
		return nil, usageError("--config is required")
	}
	cfg, err := config.Load(path)
	if err != nil {
		io.WriteString(stderr, err.Error()+"\n")
		var list config.Errors
		n := 1
		if errors.As(err, &list) {
			n = len(list)
		}
		return nil, &exitError{code: 2, msg: plural(n, "error", "errors") + " in " + path}
	}
	return cfg, nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
