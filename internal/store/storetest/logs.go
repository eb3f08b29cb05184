package storetest

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/store"
)

// appendChunks stores the chunks of k's log, in order, each starting where
// the previous ended, and returns the whole log.
func appendChunks(t *testing.T, s store.Store, k store.LogKey, chunks ...string) []byte {
	t.Helper()
	var whole []byte
	for i, c := range chunks {
		must(t, fmt.Sprintf("append chunk %d", i), s.AppendLog(t.Context(), store.AppendLogParams{
			LogKey: k, Seq: i, Offset: int64(len(whole)), Data: []byte(c), At: at(0),
		}))
		whole = append(whole, c...)
	}
	return whole
}

// readAll reads k's log from from to its end, as a reader would, one
// bounded ReadLog at a time.
func readAll(t *testing.T, s store.Store, k store.LogKey, from int64, maxBytes int) []byte {
	t.Helper()
	var out []byte
	for off := from; ; {
		cs, err := s.ReadLog(t.Context(), store.ReadLogParams{LogKey: k, From: off, MaxBytes: maxBytes})
		must(t, "read log", err)
		if len(cs) == 0 {
			return out
		}
		for _, c := range cs {
			if c.Offset > off || c.End() <= off {
				t.Fatalf("read from %d: chunk %d covers [%d, %d): a gap or a chunk read again", off, c.Seq, c.Offset, c.End())
			}
			out = append(out, c.Data[off-c.Offset:]...)
			off = c.End()
		}
	}
}

// testLogAppendRead: chunks read back whole, from any offset, with their
// times, and the size is the end of the last one; binary bytes round-trip.
func testLogAppendRead(t *testing.T, s store.Store) {
	k := store.LogKey{BuildsetID: "bs1", Job: "deploy", Attempt: 1}
	whole := appendChunks(t, s, k, "one\ntwo\n", "three\n", "f\x00ur \xff\xfe\n")
	size, err := s.LogSize(t.Context(), k)
	must(t, "log size", err)
	if size != int64(len(whole)) {
		t.Errorf("LogSize = %d, want %d", size, len(whole))
	}
	for from := int64(0); from <= int64(len(whole)); from++ {
		if got := readAll(t, s, k, from, 0); !bytes.Equal(got, whole[from:]) {
			t.Errorf("read from %d = %q, want %q", from, got, whole[from:])
		}
	}
	cs, err := s.ReadLog(t.Context(), store.ReadLogParams{LogKey: k})
	must(t, "read log", err)
	want := []store.LogChunk{
		{Seq: 0, Offset: 0, Data: []byte("one\ntwo\n"), WrittenAt: at(0).UTC()},
		{Seq: 1, Offset: 8, Data: []byte("three\n"), WrittenAt: at(0).UTC()},
		{Seq: 2, Offset: 14, Data: []byte("f\x00ur \xff\xfe\n"), WrittenAt: at(0).UTC()},
	}
	if diff := cmp.Diff(want, cs); diff != "" {
		t.Errorf("ReadLog from 0 (-want +got):\n%s", diff)
	}
	// A chunk written with no time gets one.
	must(t, "append with no time", s.AppendLog(t.Context(), store.AppendLogParams{
		LogKey: k, Seq: 3, Offset: int64(len(whole)), Data: []byte("five\n"),
	}))
	cs, err = s.ReadLog(t.Context(), store.ReadLogParams{LogKey: k, From: int64(len(whole))})
	must(t, "read the last chunk", err)
	if len(cs) != 1 || cs[0].WrittenAt.IsZero() || cs[0].WrittenAt.Location() != time.UTC {
		t.Errorf("a chunk written with a zero At reads back as %+v, want one chunk with a time in UTC", cs)
	}
}

// testLogEmpty: a log with no chunk is empty, not an error.
func testLogEmpty(t *testing.T, s store.Store) {
	k := store.LogKey{BuildsetID: "nobody", Job: "nothing", Attempt: 1}
	size, err := s.LogSize(t.Context(), k)
	if err != nil || size != 0 {
		t.Errorf("LogSize of a log never written = %d, %v; want 0, nil", size, err)
	}
	cs, err := s.ReadLog(t.Context(), store.ReadLogParams{LogKey: k})
	if err != nil || len(cs) != 0 {
		t.Errorf("ReadLog of a log never written = %v, %v; want nothing", cs, err)
	}
	whole := appendChunks(t, s, k, "a\n")
	cs, err = s.ReadLog(t.Context(), store.ReadLogParams{LogKey: k, From: int64(len(whole))})
	if err != nil || len(cs) != 0 {
		t.Errorf("ReadLog from the end = %v, %v; want nothing", cs, err)
	}
}

// testLogKeysApart: the logs of other attempts, jobs and buildsets do not
// mix, whatever their offsets.
func testLogKeysApart(t *testing.T, s store.Store) {
	keys := []store.LogKey{
		{BuildsetID: "bs1", Job: "a", Attempt: 1},
		{BuildsetID: "bs1", Job: "a", Attempt: 2},
		{BuildsetID: "bs1", Job: "b", Attempt: 1},
		{BuildsetID: "bs2", Job: "a", Attempt: 1},
	}
	want := map[store.LogKey][]byte{}
	for i, k := range keys {
		var chunks []string
		for j := 0; j <= i; j++ {
			chunks = append(chunks, fmt.Sprintf("%s %s %d line %d\n", k.BuildsetID, k.Job, k.Attempt, j))
		}
		want[k] = appendChunks(t, s, k, chunks...)
	}
	for _, k := range keys {
		if got := readAll(t, s, k, 0, 0); !bytes.Equal(got, want[k]) {
			t.Errorf("log %v = %q, want %q", k, got, want[k])
		}
		size, err := s.LogSize(t.Context(), k)
		must(t, "log size", err)
		if size != int64(len(want[k])) {
			t.Errorf("LogSize(%v) = %d, want %d", k, size, len(want[k]))
		}
	}
}

// testLogAppendTwice: a chunk written again (a retry whose first try
// committed) is fine; a different one where one is stored is a conflict.
func testLogAppendTwice(t *testing.T, s store.Store) {
	k := store.LogKey{BuildsetID: "bs1", Job: "deploy", Attempt: 1}
	appendChunks(t, s, k, "one\n", "two\n")
	again := store.AppendLogParams{LogKey: k, Seq: 1, Offset: 4, Data: []byte("two\n"), At: at(time.Second)}
	must(t, "the same chunk again", s.AppendLog(t.Context(), again))
	for _, p := range []store.AppendLogParams{
		{LogKey: k, Seq: 1, Offset: 4, Data: []byte("TWO\n")},
		{LogKey: k, Seq: 1, Offset: 5, Data: []byte("two\n")},
		{LogKey: k, Seq: 2, Offset: 4, Data: []byte("two\n")},
	} {
		wantErr(t, fmt.Sprintf("chunk %d at %d %q where one is stored", p.Seq, p.Offset, p.Data), s.AppendLog(t.Context(), p), store.ErrConflict)
	}
	err := s.AppendLog(t.Context(), store.AppendLogParams{LogKey: k, Seq: 2, Offset: 8})
	if err == nil {
		t.Error("an empty chunk was stored")
	}
	if got := readAll(t, s, k, 0, 0); string(got) != "one\ntwo\n" {
		t.Errorf("log after refused appends = %q, want %q", got, "one\ntwo\n")
	}
}

// testLogReadBounded: ReadLog reads about MaxBytes: the chunks starting
// before From+MaxBytes, at least one.
func testLogReadBounded(t *testing.T, s store.Store) {
	k := store.LogKey{BuildsetID: "bs1", Job: "deploy", Attempt: 1}
	var chunks []string
	for i := range 10 {
		chunks = append(chunks, fmt.Sprintf("line %02d\n", i)) // 8 bytes each
	}
	whole := appendChunks(t, s, k, chunks...)
	seqs := func(from int64, maxBytes int) []int {
		t.Helper()
		cs, err := s.ReadLog(t.Context(), store.ReadLogParams{LogKey: k, From: from, MaxBytes: maxBytes})
		must(t, "read log", err)
		var out []int
		for _, c := range cs {
			out = append(out, c.Seq)
		}
		return out
	}
	for _, tc := range []struct {
		from     int64
		maxBytes int
		want     []int
	}{
		{0, 1, []int{0}},
		{0, 8, []int{0}},
		{0, 9, []int{0, 1}},
		{4, 8, []int{0, 1}},      // chunk 0 holds byte 4; chunk 1 starts at 8 < 12
		{4, 4, []int{0}},         // chunk 1 starts at 8, not before 8
		{79, 1000, []int{9}},     // the last byte
		{16, 24, []int{2, 3, 4}}, // exactly three chunks
		{17, 1 << 20, []int{2, 3, 4, 5, 6, 7, 8, 9}},
	} {
		if got := seqs(tc.from, tc.maxBytes); !slices.Equal(got, tc.want) {
			t.Errorf("ReadLog(From %d, MaxBytes %d) = chunks %v, want %v", tc.from, tc.maxBytes, got, tc.want)
		}
	}
	for _, maxBytes := range []int{1, 7, 8, 9, 20} {
		if got := readAll(t, s, k, 3, maxBytes); !bytes.Equal(got, whole[3:]) {
			t.Errorf("read from 3 by %d bytes = %q, want %q", maxBytes, got, whole[3:])
		}
	}
}
