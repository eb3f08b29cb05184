package ssh

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// shipStats counts what Checkout sent, for tests and benchmarks.
type shipStats struct {
	bundles atomic.Int64
	bytes   atomic.Int64
}

// Shipped returns how many bundles and bytes Checkout has sent so far.
func (b *Bastion) Shipped() (bundles, bytes int64) {
	return b.shipped.bundles.Load(), b.shipped.bytes.Load()
}

var safeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
var hexSHA = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// Checkout puts commit on the bastion and makes <workdir>/src/<buildset>.
// The bastion's mirror says which commits it has; Sortie sends a git bundle
// of only what it lacks over the connection already open (the bastion
// never needs to reach the forge), fetched into refs/sortie/<buildset> so
// that later bundles can leave it out and no object a checkout borrows is
// pruned.
func (b *Bastion) Checkout(ctx context.Context, repo, buildset, commit string, log io.Writer) (string, error) {
	if !safeID.MatchString(buildset) || !hexSHA.MatchString(commit) {
		return "", &bastion.InfraError{Op: "checkout", Err: fmt.Errorf("bad buildset %q or commit %q", buildset, commit)}
	}
	c, err := b.connect(ctx)
	if err != nil {
		return "", err
	}
	w := b.Workdir()
	mirror := w + "/mirror.git"
	// What the bastion has: the commit itself, or the tips it could build on.
	probe := fmt.Sprintf(`set -e
mkdir -p %[1]s/src
exec 9>%[1]s/mirror.lock
flock 9
[ -d %[2]s ] || git init -q --bare %[2]s
if git -C %[2]s cat-file -e %[3]s^{commit} 2>/dev/null; then echo HAVE; exit 0; fi
git -C %[2]s for-each-ref --format='%%(objectname)'
`, q(w), q(mirror), commit)
	out, err := output(ctx, c, "exec /bin/sh -s", strings.NewReader(probe))
	if err != nil {
		return "", b.infra(c, "checkout: probe the bastion's mirror", err)
	}
	ref := "refs/sortie/" + buildset
	if strings.TrimSpace(out) == "HAVE" {
		fmt.Fprintf(log, "bastion has %s already: nothing to send\n", commit)
		if _, err := output(ctx, c, fmt.Sprintf("git -C %s update-ref %s %s", q(mirror), ref, commit), nil); err != nil {
			return "", b.infra(c, "checkout: pin the commit", err)
		}
	} else {
		bundle, err := makeBundle(ctx, repo, buildset, commit, strings.Fields(out))
		if err != nil {
			return "", &bastion.InfraError{Op: "checkout: bundle", Err: err}
		}
		fmt.Fprintf(log, "sending %s to the bastion: %d bytes\n", commit, len(bundle))
		tmp := fmt.Sprintf("%s/incoming-%s.bundle", mirror, buildset)
		fetch := fmt.Sprintf(`cat > %[1]s && exec 9>%[2]s/mirror.lock && flock 9 && git -C %[3]s fetch -q %[1]s %[4]s:%[4]s; rc=$?; rm -f %[1]s; exit $rc`,
			q(tmp), q(w), q(mirror), ref)
		if _, err := output(ctx, c, fetch, bytes.NewReader(bundle)); err != nil {
			return "", b.infra(c, "checkout: fetch the bundle", err)
		}
		b.shipped.bundles.Add(1)
		b.shipped.bytes.Add(int64(len(bundle)))
	}
	dst := w + "/src/" + buildset
	make := fmt.Sprintf(`set -e
exec 9>%[1]s/src.lock
flock 9
d=%[2]s
if [ -d "$d" ]; then
  [ "$(git -C "$d" rev-parse HEAD)" = %[3]s ] || { echo "checkout $d holds another commit" >&2; exit 3; }
  rm -f "$d/.git/sortie-finished"
  echo reused
  exit 0
fi
t=%[1]s/src/.tmp-%[4]s-$$
rm -rf "$t"
git clone -q --shared --no-checkout %[5]s "$t"
git -C "$t" checkout -q --detach %[3]s
mv "$t" "$d"
`, q(w), q(dst), commit, buildset, q(mirror))
	out, err = output(ctx, c, "exec /bin/sh -s", strings.NewReader(make))
	if err != nil {
		return "", b.infra(c, "checkout: make "+dst, err)
	}
	if strings.TrimSpace(out) == "reused" {
		fmt.Fprintf(log, "reusing checkout %s\n", dst)
	} else {
		fmt.Fprintf(log, "checked out %s in %s\n", commit, dst)
	}
	return dst, nil
}

// makeBundle bundles commit from repo, leaving out everything reachable
// from the tips the bastion has that repo knows too.
func makeBundle(ctx context.Context, repo, buildset, commit string, theirs []string) ([]byte, error) {
	// Keep only the tips repo has: a bundle cannot exclude unknown objects.
	var known []string
	if len(theirs) > 0 {
		cmd := exec.CommandContext(ctx, "git", "-C", repo, "cat-file", "--batch-check=%(objectname) %(objecttype)")
		cmd.Stdin = strings.NewReader(strings.Join(theirs, "\n") + "\n")
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("git cat-file: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) == 2 && f[1] == "commit" {
				known = append(known, f[0])
			}
		}
	}
	// A bundle carries refs, not bare commits: name it for the while.
	ref := "refs/sortie/" + buildset
	if out, err := exec.CommandContext(ctx, "git", "-C", repo, "update-ref", ref, commit).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("git update-ref: %v: %s", err, out)
	}
	defer exec.Command("git", "-C", repo, "update-ref", "-d", ref).Run()
	f, err := os.CreateTemp("", "sortie-bundle-*")
	if err != nil {
		return nil, err
	}
	f.Close()
	defer os.Remove(f.Name())
	revs := []string{ref}
	for _, k := range slices.Compact(slices.Sorted(slices.Values(known))) {
		revs = append(revs, "^"+k)
	}
	cmd := exec.CommandContext(ctx, "git", "-C", repo, "bundle", "create", "-q", f.Name(), "--stdin")
	cmd.Stdin = strings.NewReader(strings.Join(revs, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("git bundle create: %v: %s", err, out)
	}
	return os.ReadFile(f.Name())
}

// Install runs the install commands unless the stamp on the bastion says
// they ran already; the stamp and the lock live on the bastion, so several
// Sortie processes sharing it install once.
func (b *Bastion) Install(ctx context.Context, commands []string, env map[string]string, log io.Writer) (bool, error) {
	c, err := b.connect(ctx)
	if err != nil {
		return false, err
	}
	w := b.Workdir()
	fp := bastion.Fingerprint(commands)
	id := bastion.NewRunID()
	pid, _ := b.runPaths(id)
	var s strings.Builder
	// Nothing sweeps an install's group after it: its pid file goes with
	// the script.
	fmt.Fprintf(&s, "trap 'rm -f %s' EXIT\n", strings.ReplaceAll(q(pid), "'", `'\''`))
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&s, "export %s=%s\n", k, q(env[k]))
	}
	b.tag(&s, id)
	fmt.Fprintf(&s, "cd %s || exit 97\nexec 9>%s/install.lock\nflock 9\n", q(w), q(w))
	fmt.Fprintf(&s, "if [ \"$(cat install.stamp 2>/dev/null)\" = %s ]; then echo 'already up to date (%s)'; exit 0; fi\n", fp, fp[:12])
	if len(commands) == 0 {
		fmt.Fprintf(&s, "echo 'nothing to install'\n")
	}
	for _, cmd := range commands {
		fmt.Fprintf(&s, "echo %s\n/bin/sh -c %s </dev/null || { rc=$?; echo \"install failed: exit status $rc\"; exit 90; }\n", q("+ "+cmd), q(cmd))
	}
	fmt.Fprintf(&s, "echo %s > install.stamp.tmp && mv install.stamp.tmp install.stamp\necho 'installed (%s)'\n", fp, fp[:12])

	sess, err := c.NewSession()
	if err != nil {
		return false, b.infra(c, "install: open session", err)
	}
	defer sess.Close()
	sess.Stdin = strings.NewReader(s.String())
	var tail tailWriter
	sink := &drain{w: log}
	sess.Stdout, sess.Stderr = io.MultiWriter(sink, &tail), sink
	done := make(chan error, 1)
	if err := sess.Start(b.launch(id, false)); err != nil {
		return false, b.infra(c, "install: start", err)
	}
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		b.end(c, sess, id, bastion.DefaultGrace, done)
		return false, ctx.Err()
	}
	if err != nil {
		if ee := exitStatus(err); ee >= 0 {
			return false, fmt.Errorf("install: exit status %d", ee)
		}
		return false, b.infra(c, "install lost its connection", err)
	}
	return strings.Contains(tail.String(), "installed ("), nil
}

// Finish marks the buildset's checkout finished and removes finished
// checkouts beyond the newest keep, with their refs.
func (b *Bastion) Finish(ctx context.Context, buildset string, keep int) error {
	if !safeID.MatchString(buildset) {
		return fmt.Errorf("finish: bad buildset %q", buildset)
	}
	c, err := b.connect(ctx)
	if err != nil {
		return err
	}
	w := b.Workdir()
	script := fmt.Sprintf(`cd %[1]s || exit 0
exec 9>src.lock
flock 9
[ -d src/%[2]s/.git ] && touch src/%[2]s/.git/sortie-finished
ls -t src/*/.git/sortie-finished 2>/dev/null | tail -n +%[3]d | while read -r m; do
  d=${m%%/.git/sortie-finished}
  rm -rf "$d"
  git -C mirror.git update-ref -d "refs/sortie/${d##*/}" 2>/dev/null
done
find src -maxdepth 1 -name '.tmp-*' -mmin +60 -exec rm -rf {} + 2>/dev/null
find events -maxdepth 1 -name '*.jsonl' -mmin +1440 -delete 2>/dev/null
exit 0
`, q(w), buildset, max(keep, 0)+1)
	if _, err := output(ctx, c, "exec /bin/sh -s", strings.NewReader(script)); err != nil {
		return b.infra(c, "finish", err)
	}
	return nil
}

// tailWriter keeps the last 4 KiB written.
type tailWriter struct{ buf []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string { return string(t.buf) }
