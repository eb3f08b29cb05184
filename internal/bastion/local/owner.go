package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// The process groups of an owner's builds are recorded one file each in
// <workdir>/run/<owner>/, named <pgid>-<start> and holding
// "<pgid> <start> <boot id>\n": the group's id, which is its leader's pid;
// the leader's start time (field 22 of /proc/<pid>/stat, clock ticks since
// boot); and the kernel's boot id. The file is written as soon as the
// leader is started and removed once the group is gone. It is not synced:
// a crash that loses it takes the processes with it.
//
// A record is acted on only if it is this boot's and the group is still
// provably the recorded one (see ours), so that a reused pid is never
// signalled. The record is written after the start: a Sortie killed in the
// microseconds between the two leaves a group KillOwner cannot know of.

// ownerPoll is how often KillOwner checks whether the groups it is ending
// are gone.
const ownerPoll = 20 * time.Millisecond

// groupRecord is one recorded process group.
type groupRecord struct {
	pgid  int
	start uint64
	boot  string
}

func parseRecord(data []byte) (groupRecord, bool) {
	f := strings.Fields(string(data))
	if len(f) != 3 || !strings.HasSuffix(string(data), "\n") {
		return groupRecord{}, false
	}
	pgid, err1 := strconv.Atoi(f[0])
	start, err2 := strconv.ParseUint(f[1], 10, 64)
	if err1 != nil || err2 != nil || pgid <= 1 {
		return groupRecord{}, false
	}
	return groupRecord{pgid: pgid, start: start, boot: f[2]}, true
}

// tag adds OwnerEnv to a process's environment when the bastion has an
// Owner.
func (b *Bastion) tag(env []string) []string {
	if b.Owner == "" {
		return env
	}
	return append(env[:len(env):len(env)], OwnerEnv+"="+b.Owner)
}

// SetOwner makes owner the bastion's Owner from now on; see
// bastion.Bastion. It is called only while no build of the bastion runs.
func (b *Bastion) SetOwner(owner string) error {
	if err := bastion.CheckOwner(owner); err != nil {
		return fmt.Errorf("local: set owner: %w", err)
	}
	b.Owner = owner
	return nil
}

// checkOwner rejects a bad b.Owner; "" is fine.
func (b *Bastion) checkOwner() error {
	if b.Owner == "" {
		return nil
	}
	return bastion.CheckOwner(b.Owner)
}

// record writes the record of the process group that pid leads, a build of
// b.Owner, and returns what removes it. Without an Owner, or Untracked,
// it records nothing.
func (b *Bastion) record(pid int) (func(), error) {
	if b.Owner == "" || b.Untracked {
		return func() {}, nil
	}
	st, err := readProcStat(pid)
	if err != nil {
		return nil, err
	}
	boot, err := bootID()
	if err != nil {
		return nil, err
	}
	dir := b.path("run", b.Owner)
	path := filepath.Join(dir, fmt.Sprintf("%d-%d", pid, st.start))
	data := fmt.Appendf(nil, "%d %d %s\n", pid, st.start, boot)
	err = writeNew(path, data)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o700); err == nil {
			err = writeNew(path, data)
		}
	}
	if err != nil {
		return nil, err
	}
	return func() { _ = os.Remove(path) }, nil
}

// writeNew creates path, which must not exist, holding data.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// KillOwner ends the process groups recorded under <workdir>/run/<owner>/
// that are still alive: SIGTERM to each group, SIGKILL to those with a
// member still alive once grace has passed (0 means bastion.DefaultGrace),
// and waits until none has. Then it removes the directory. Records of
// another boot, and of groups that are gone or whose id now belongs to
// someone else, are dropped without a signal. The owner must be dead (its
// lease expired): KillOwner refuses b.Owner. If ctx ends first, the
// records are kept for another try.
func (b *Bastion) KillOwner(ctx context.Context, owner string, grace time.Duration) error {
	if err := bastion.CheckOwner(owner); err != nil {
		return fmt.Errorf("local: kill owner: %w", err)
	}
	if owner == b.Owner {
		return fmt.Errorf("local: kill owner %s: that is this bastion's own owner id", owner)
	}
	if grace <= 0 {
		grace = bastion.DefaultGrace
	}
	if err := b.killOwner(ctx, owner, grace); err != nil {
		return fmt.Errorf("local: kill owner %s: %w", owner, err)
	}
	return nil
}

func (b *Bastion) killOwner(ctx context.Context, owner string, grace time.Duration) error {
	if err := checkSupported(); err != nil {
		return err
	}
	dir := b.path("run", owner)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// No record at all, perhaps because the owner died before its
		// first one was written: its tagged processes may still run.
		return endTagged(ctx, owner, grace)
	}
	if err != nil {
		return err
	}
	boot, err := bootID()
	if err != nil {
		return err
	}
	var groups []groupRecord
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		// Anything else is of another boot, or cut short by the death of
		// its writer (see the comment at the top).
		if r, ok := parseRecord(data); ok && r.boot == boot {
			groups = append(groups, r)
		}
	}
	if err := endGroups(ctx, groups, grace); err != nil {
		return err
	}
	// A Sortie killed between starting a process and writing its record
	// left a group no record names; its processes carry the owner's tag.
	if err := endTagged(ctx, owner, grace); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// endGroups ends the groups that are still theirs and alive, TERM then
// KILL after grace, and returns once none is. Whether a group is the
// recorded one is checked again before every signal.
func endGroups(ctx context.Context, groups []groupRecord, grace time.Duration) error {
	return endWhileAlive(ctx, grace, func() ([]int, error) {
		procs, err := allProcs()
		if err != nil {
			return nil, err
		}
		var alive []groupRecord
		var ids []int
		for _, g := range groups {
			if ours(g, procs) {
				alive = append(alive, g)
				ids = append(ids, g.pgid)
			}
		}
		groups = alive
		return ids, nil
	})
}

// endWhileAlive signals the process groups alive returns, TERM the first
// time it sees one, KILL once grace has passed, until alive returns none.
// alive is asked again before every round of signals.
func endWhileAlive(ctx context.Context, grace time.Duration, alive func() ([]int, error)) error {
	deadline := time.Now().Add(grace)
	termed := map[int]bool{}
	tick := time.NewTicker(ownerPoll)
	defer tick.Stop()
	for {
		groups, err := alive()
		if err == nil && len(groups) == 0 {
			// A process in the middle of an exec shows an empty
			// environment for an instant: look twice.
			groups, err = alive()
		}
		if err != nil {
			return err
		}
		if len(groups) == 0 {
			return nil
		}
		late := time.Now().After(deadline)
		for _, g := range groups {
			switch {
			case late:
				_ = syscall.Kill(-g, syscall.SIGKILL)
			case !termed[g]:
				_ = syscall.Kill(-g, syscall.SIGTERM)
				termed[g] = true
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d process groups still alive: %w", len(groups), context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// ours reports whether process group r.pgid is still the group r records
// and has a live member. A process with pid r.pgid but another start time
// means the pid was handed out again, which the kernel does only once no
// process is left in the group of that id. A live member that started
// before the recorded leader cannot descend from it. (A group whose leader
// is gone while members live is taken as the recorded one: another group
// of that id would need the pid to be handed out again meanwhile, after a
// wrap of the pid space.)
func ours(r groupRecord, procs map[int]procStat) bool {
	if p, ok := procs[r.pgid]; ok && p.start != r.start {
		return false
	}
	live := false
	for _, p := range procs {
		if p.pgrp != r.pgid || p.dead() {
			continue
		}
		if p.start < r.start {
			return false
		}
		live = true
	}
	return live
}

// OwnerEnv is the variable every process a bastion with an Owner starts
// carries, set to the owner id: KillOwner finds by it the processes whose
// group was started but not yet recorded when their Sortie died, and those
// that left their build's group.
const OwnerEnv = bastion.OwnerEnv

// tagged returns the process groups with a live member whose environment
// (as exec'd) holds OwnerEnv=owner, never this process's own group.
func tagged(owner string) (map[int]bool, error) {
	procs, err := allProcs()
	if err != nil {
		return nil, err
	}
	want := []byte(OwnerEnv + "=" + owner)
	self := syscall.Getpgrp()
	groups := map[int]bool{}
	for pid, st := range procs {
		if st.dead() || st.pgrp <= 1 || st.pgrp == self || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		if err != nil {
			continue // gone, or not ours to read
		}
		if hasEntry(env, want) {
			groups[st.pgrp] = true
		}
	}
	return groups, nil
}

// endTagged ends the groups of the processes tagged with owner, TERM then
// KILL after grace, and returns once none is left.
func endTagged(ctx context.Context, owner string, grace time.Duration) error {
	return endWhileAlive(ctx, grace, func() ([]int, error) {
		groups, err := tagged(owner)
		if err != nil {
			return nil, err
		}
		ids := make([]int, 0, len(groups))
		for g := range groups {
			ids = append(ids, g)
		}
		return ids, nil
	})
}

// hasEntry reports whether environ, a /proc/<pid>/environ, holds entry
// ("KEY=value") exactly.
func hasEntry(environ, entry []byte) bool {
	for len(environ) > 0 {
		var kv []byte
		kv, environ, _ = bytes.Cut(environ, []byte{0})
		if bytes.Equal(kv, entry) {
			return true
		}
	}
	return false
}
