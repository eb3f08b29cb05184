package sqlite

import "context"

// JournalHelperEnv names the database a test binary started with it in
// its environment runs journalHelper on, instead of the tests.
const JournalHelperEnv = "SORTIE_JOURNAL_HELPER"

// JournalHelper is journalHelper, for TestMain.
var JournalHelper = journalHelper

// JournalOff has s write every batch in a transaction, as it did before
// the journal (BenchmarkJobWrites).
func JournalOff(s *Store) {
	s.j.mu.Lock()
	s.j.off = true
	s.j.mu.Unlock()
}

// Settle applies what s journaled.
func Settle(ctx context.Context, s *Store) error { return s.settle(ctx) }
