package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strconv"
	"strings"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/suggest"
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
		printVisible(fs)
	}
	return fs
}

// hiddenValue marks a flag that is accepted but not shown: not in the
// usage, never suggested for a misspelling. Tests use such flags.
type hiddenValue struct{ flag.Value }

// hide hides the flags of fs named (defined already).
func hide(fs *flag.FlagSet, names ...string) {
	for _, n := range names {
		f := fs.Lookup(n)
		f.Value = hiddenValue{f.Value}
	}
}

func isHidden(f *flag.Flag) bool {
	_, ok := f.Value.(hiddenValue)
	return ok
}

// printVisible prints the defaults of the flags of fs that are not hidden,
// as fs.PrintDefaults does.
func printVisible(fs *flag.FlagSet) {
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(fs.Output())
	fs.VisitAll(func(f *flag.Flag) {
		if !isHidden(f) {
			shown.Var(f.Value, f.Name, f.Usage)
			shown.Lookup(f.Name).DefValue = f.DefValue
		}
	})
	shown.PrintDefaults()
}

// parse parses flags; -h is a success, anything else wrong is exit 2.
func parse(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// parseFlags runs fs.Parse and prints what is wrong with the usage, as
// the flag package does, but suggests the flag meant when one is unknown:
// "flag provided but not defined: -pipline; did you mean --pipeline?".
// It returns exit 0 for -h, exit 2 for any other error, and nil when the
// flags parse (the arguments left are fs.Args()).
func parseFlags(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	var msg bytes.Buffer
	fs.SetOutput(&msg)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return exitCode(0)
	}
	if name, ok := unknownFlag(fs, args); ok {
		line := "flag provided but not defined: -" + name
		if meant := closestFlag(fs, name); meant != "" {
			line += "; did you mean --" + meant + "?"
		}
		io.WriteString(out, line+"\n")
	} else {
		out.Write(msg.Bytes())
	}
	fs.Usage()
	return exitCode(2)
}

// unknownFlag returns the flag of args that fs.Parse failed on, if it
// failed because fs does not define it. The flag package stops at the flag
// it fails on, so the arguments it leaves tell which one that is; args are
// read as it reads them to be sure that one is a flag and not the value of
// the flag before it.
func unknownFlag(fs *flag.FlagSet, args []string) (string, bool) {
	failed := len(args) - len(fs.Args()) - 1
	for i := 0; i < len(args) && i <= failed; i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			return "", false // the end of the flags
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if i == failed {
			return name, f == nil && name != "" && name != "h" && name != "help"
		}
		if f == nil {
			return "", false
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && b.IsBoolFlag()) {
			i++ // its value
		}
	}
	return "", false
}

// closestFlag returns the flag of fs that name is most likely a misspelling
// or an abbreviation of, or "".
func closestFlag(fs *flag.FlagSet, name string) string {
	best, bestDist, prefixed := "", 1<<30, 0
	var only string
	fs.VisitAll(func(f *flag.Flag) {
		if isHidden(f) {
			return
		}
		if d := suggest.Distance(name, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
		if strings.HasPrefix(f.Name, name) {
			prefixed++
			only = f.Name
		}
	})
	switch {
	case bestDist <= max(2, len(name)/4) && bestDist < len(name):
		return best
	case prefixed == 1:
		return only
	}
	return ""
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
