package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// gitWaitDelay bounds how long a git command's output is awaited after it
// has been killed, in case a helper it started (ssh, a credential helper)
// still holds its pipes.
const gitWaitDelay = 5 * time.Second

// GitError is a git command that failed: the error of the process and what
// git wrote on stderr.
type GitError struct {
	Err    error // usually an *exec.ExitError
	Stderr string
}

func (e *GitError) Error() string {
	if e.Stderr == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Stderr
}

func (e *GitError) Unwrap() error { return e.Err }

// Git runs git with args in its own process group, killed as a whole when
// ctx is done, in Sortie's environment without the variables that would
// point git elsewhere and without prompts, and returns its stdout. A
// failure is a *GitError carrying the end of git's stderr. Sortie runs
// git only through here.
func Git(ctx context.Context, args ...string) ([]byte, error) {
	return GitInput(ctx, nil, args...)
}

// GitInput is Git with stdin as git's standard input (nil: none), for the
// commands that read their work from it (update-ref --stdin, cat-file
// --batch): one process for many refs or objects.
func GitInput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Env = gitEnv()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = gitWaitDelay
	if err := cmd.Run(); err != nil {
		if cerr := context.Cause(ctx); cerr != nil && !errors.Is(err, cerr) {
			err = fmt.Errorf("%w (%w)", cerr, err)
		}
		return nil, &GitError{Err: err, Stderr: tail(stderr.String())}
	}
	return stdout.Bytes(), nil
}

// gitEnv is Sortie's environment for git: without the variables that would
// point git at another repository (Sortie run from a git hook) and without
// prompts, which nobody would answer.
func gitEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
			"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
			"GIT_PREFIX", "GIT_TERMINAL_PROMPT":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GIT_TERMINAL_PROMPT=0")
}

// tail keeps the end of git's stderr, where the fatal line is, and no more
// than fits in an error message.
func tail(s string) string {
	s = strings.TrimSpace(s)
	const max = 2000
	if len(s) > max {
		s = "..." + s[len(s)-max:]
	}
	return s
}

// exitCode is the exit status of a git command that ran and failed, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
