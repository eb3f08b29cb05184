package ssh

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// eventsPoll is how often a running build's events file is read, each
// time through a short session of the connection the build uses.
const eventsPoll = 2 * time.Second

// eventsMark is the line a build script writes to its fd 3 (the session's
// stderr) when the build's events file exists at its end: only then is
// the rest of it fetched.
const eventsMark = "sortie-events-file"

// events copies a build's events file (bastion.Spec.Events) from the
// bastion: every eventsPoll while the build runs, then the rest once it
// has ended, in a session that also removes the file. It is the session's
// stderr writer too, where the build script says whether the file exists;
// anything else written there goes to other (the log).
type events struct {
	b     *Bastion
	c     *gossh.Client
	path  string
	w     io.Writer
	other io.Writer

	mu     sync.Mutex
	marked bool // the script said the file exists
	line   []byte

	off  int64 // bytes copied so far; only the copying goroutine touches it
	dead bool  // w failed: copy no more
	poll *bastion.Poller
}

// Write takes the session's stderr.
func (e *events) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.line = append(e.line, p...)
	for {
		i := bytes.IndexByte(e.line, '\n')
		if i < 0 {
			if len(e.line) > len(eventsMark)+1 {
				e.other.Write(e.line)
				e.line = e.line[:0]
			}
			return len(p), nil
		}
		if string(e.line[:i]) == eventsMark {
			e.marked = true
		} else {
			e.other.Write(e.line[:i+1])
		}
		e.line = e.line[i+1:]
	}
}

// follow fetches what the file holds every eventsPoll until finish.
func (e *events) follow() {
	e.poll = bastion.Poll(eventsPoll, func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventsPoll)
		defer cancel()
		e.fetch(ctx, false)
	})
}

// fetch copies what the file holds past what was copied, and removes
// the file when remove is set. A file that is not there yet, or a session
// refused (MaxSessions), is not an error: the next fetch tries again.
func (e *events) fetch(ctx context.Context, remove bool) {
	cmd := fmt.Sprintf("tail -c +%d %s 2>/dev/null", e.off+1, q(e.path))
	if remove {
		cmd = fmt.Sprintf("%s; rm -f %s", cmd, q(e.path))
	}
	out, _ := output(ctx, e.c, cmd, nil)
	if out == "" || e.dead {
		return
	}
	e.off += int64(len(out))
	if _, err := io.WriteString(e.w, out); err != nil {
		e.dead = true
	}
}

// finish stops following once the session is over and fetches the rest
// of the file, when the script said there is one, the build was copying
// events already, or anyway is set (a build ended by a timeout or a
// cancel says nothing).
func (e *events) finish(ctx context.Context, anyway bool) {
	e.poll.Stop()
	e.mu.Lock()
	marked := e.marked
	if len(e.line) > 0 {
		e.other.Write(e.line)
		e.line = nil
	}
	e.mu.Unlock()
	if !marked && e.off == 0 && !anyway {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	e.fetch(ctx, true)
}
