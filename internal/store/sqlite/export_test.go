package sqlite

// JournalHelperEnv names the database a test binary started with it in
// its environment runs journalHelper on, instead of the tests.
const JournalHelperEnv = "SORTIE_JOURNAL_HELPER"

// JournalHelper is journalHelper, for TestMain.
var JournalHelper = journalHelper
