package local

import (
	"os"
	"path/filepath"
	"strings"
)

// Like make, the local bastion runs a command that is a plain list of
// words (no quoting, expansion, redirection, operator or glob, and not a
// shell builtin) directly, without /bin/sh: one exec instead of two, which
// is most of the cost of a short job. Anything else, or a program not
// found in the job's PATH, goes to /bin/sh -c as before, so the behaviour
// (and the "not found" message and exit status 127) is the shell's.

// plainChars are the bytes a word may hold to be taken literally by sh.
func plainChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_./,+@%:", c) >= 0
}

// builtins are the words sh runs itself (or treats specially) that must
// not be looked up as programs.
var builtins = map[string]bool{
	".": true, ":": true, "alias": true, "bg": true, "break": true, "cd": true, "command": true,
	"continue": true, "eval": true, "exec": true, "exit": true, "export": true, "fc": true,
	"fg": true, "getopts": true, "hash": true, "jobs": true, "local": true, "read": true,
	"readonly": true, "return": true, "set": true, "shift": true, "times": true, "trap": true,
	"type": true, "ulimit": true, "umask": true, "unalias": true, "unset": true, "wait": true,
	// keywords
	"if": true, "then": true, "else": true, "elif": true, "fi": true, "do": true, "done": true,
	"case": true, "esac": true, "while": true, "until": true, "for": true, "in": true, "!": true,
}

// directArgv returns the program to exec for command without a shell,
// found in the job's PATH, and its argv, whose argv[0] is the command's
// first word as sh would pass it; or false when the shell must run it.
func directArgv(command string, env []string) (string, []string, bool) {
	words := strings.Fields(command)
	if len(words) == 0 || builtins[words[0]] {
		return "", nil, false
	}
	for i := 0; i < len(command); i++ {
		c := command[i]
		if c != ' ' && c != '\t' && !plainChar(c) {
			return "", nil, false
		}
	}
	// A first word with "=" is an assignment; "%" and ":" at the start are
	// not programs anyone means.
	if strings.ContainsAny(words[0], "=%:") {
		return "", nil, false
	}
	path, ok := lookPath(words[0], env)
	if !ok {
		return "", nil, false
	}
	return path, words, true
}

// lookPath finds name as sh would: as is when it has a slash, else in
// the directories of the PATH of env. It says false, for the shell to
// search, when a directory of PATH that sh reads differently comes before
// the program: an empty or relative one (sh looks there relative to the
// job's directory), or one with a "%" (dash's mark of a builtin).
func lookPath(name string, env []string) (string, bool) {
	if strings.Contains(name, "/") {
		// A relative path is the shell's business (it is relative to the
		// job's directory, not Sortie's). An absolute one is exec'd
		// without a look first: startProcess hands the command to sh
		// when the exec fails.
		return name, filepath.IsAbs(name)
	}
	pathVar := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range filepath.SplitList(pathVar) {
		if !filepath.IsAbs(dir) || strings.Contains(dir, "%") {
			return "", false
		}
		// Joined as sh joins them, not cleaned: "/a/missing/../bin"
		// holds nothing for sh, whose kernel walks "missing".
		if p := dir + "/" + name; executable(p) {
			return p, true
		}
	}
	return "", false
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
