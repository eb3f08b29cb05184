package main

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// A journal is a file that the jobs of a test config append a line to as
// they start ("<pipeline> <buildset> <job> <attempt>"), and that the test
// appends "kill <n>" to just before each SIGKILL. Appends of a line this
// short are atomic, so the file is the order in which things happened.

// journalLine is the shell a job runs first to record its start in path.
func journalLine(path string) string {
	return fmt.Sprintf(`echo "$SORTIE_PIPELINE $SORTIE_BUILDSET $SORTIE_JOB $SORTIE_ATTEMPT" >> %s`, path)
}

// noteKill records a kill in the journal, before it happens.
func noteKill(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "kill %d\n", n)
	f.Close()
}

// interleaving is a job of one buildset that started after a job of
// another buildset sharing the pipeline semaphore, itself started after a
// job of the first: something ran between two jobs of a started buildset.
type interleaving struct {
	Kill  int // the last kill before it; 0: before any
	Entry string
	Into  string // the buildset whose jobs it came between
}

// interleavings reads a journal and returns every interleaving among the
// buildsets of the pipelines named in shared, which share a max-1
// pipeline semaphore: held by a buildset from its first job to its last,
// its jobs' starts must come in one unbroken run.
func interleavings(t *testing.T, path string, shared ...string) (kills int, found []interleaving) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	isShared := map[string]bool{}
	for _, p := range shared {
		isShared[p] = true
	}
	current, closed := "", map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "kill" {
			kills++
			continue
		}
		if len(f) != 4 || !isShared[f[0]] {
			continue
		}
		bs := f[1]
		if bs == current {
			continue
		}
		if closed[bs] {
			// bs ran before, and another ran since.
			found = append(found, interleaving{Kill: kills, Entry: line, Into: bs})
		}
		if current != "" {
			closed[current] = true
		}
		current = bs
	}
	return kills, found
}

func TestInterleavings(t *testing.T) {
	path := t.TempDir() + "/journal"
	os.WriteFile(path, []byte(strings.Join([]string{
		"deploy A boot 1", "deploy A a 1", "check X a 1", "kill 1",
		"deploy A a 2", "hourly B boot 1", "hourly B a 1", "kill 2",
		"deploy A b 1", // A again, after B: one interleaving, after kill 2
		"hourly B b 1", // and B again, after A
		"", "periodic C a 1",
	}, "\n")), 0o644)
	kills, found := interleavings(t, path, "deploy", "hourly", "periodic")
	if kills != 2 {
		t.Errorf("kills = %d, want 2", kills)
	}
	want := []interleaving{{Kill: 2, Entry: "deploy A b 1", Into: "A"}, {Kill: 2, Entry: "hourly B b 1", Into: "B"}}
	if fmt.Sprint(found) != fmt.Sprint(want) {
		t.Errorf("interleavings = %v, want %v", found, want)
	}
}
