-- For `sortie serve`: the ADMITTED buildset state, a buildset's spec, cause and
-- rerun, operators' pauses and the marks of triggers.
--
-- A CHECK constraint cannot be altered, so buildsets is rebuilt the way SQLite
-- documents (https://sqlite.org/lang_altertable.html#otheralter): the runner
-- applies migrations with foreign keys off (dropping buildsets would otherwise
-- cascade to builds) and checks them before it commits. seq values and the
-- AUTOINCREMENT counter are kept, so Seq stays strictly increasing.

CREATE TABLE buildsets_new (
	-- seq is the arrival order (store.Buildset.Seq).
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT    NOT NULL UNIQUE,
	pipeline    TEXT    NOT NULL,
	commit_sha  TEXT    NOT NULL,
	files       TEXT,   -- JSON array; NULL when the event had no file list
	state       TEXT    NOT NULL CHECK (state IN ('QUEUED', 'ADMITTED', 'RUNNING', 'DONE')),
	result      TEXT    NOT NULL DEFAULT '',
	error       TEXT    NOT NULL DEFAULT '',
	plan        BLOB,
	spec        BLOB,   -- opaque JSON; NULL when there is none
	cause       TEXT    NOT NULL DEFAULT '',
	rerun_of    TEXT    NOT NULL DEFAULT '',
	owner       TEXT    NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	admitted_at INTEGER,
	started_at  INTEGER,
	finished_at INTEGER
);
INSERT INTO buildsets_new (seq, id, pipeline, commit_sha, files, state, result, error, plan, owner,
		created_at, started_at, finished_at)
	SELECT seq, id, pipeline, commit_sha, files, state, result, error, plan, owner,
		created_at, started_at, finished_at
	FROM buildsets;
-- The counter may be above the largest seq left (a deleted buildset's).
DELETE FROM sqlite_sequence WHERE name = 'buildsets_new';
INSERT INTO sqlite_sequence (name, seq)
	SELECT 'buildsets_new', seq FROM sqlite_sequence WHERE name = 'buildsets';
DROP TABLE buildsets;
ALTER TABLE buildsets_new RENAME TO buildsets;
CREATE INDEX buildsets_created ON buildsets (created_at, seq);
CREATE INDEX buildsets_pipeline_created ON buildsets (pipeline, created_at, seq);
CREATE INDEX buildsets_commit_created ON buildsets (commit_sha, created_at, seq);
-- ActiveBuildsets: the few buildsets not DONE.
CREATE INDEX buildsets_state ON buildsets (state, seq);

-- pipeline '' pauses every pipeline.
CREATE TABLE pauses (
	pipeline  TEXT    PRIMARY KEY,
	paused_by TEXT    NOT NULL DEFAULT '',
	reason    TEXT    NOT NULL DEFAULT '',
	paused_at INTEGER NOT NULL
);

CREATE TABLE marks (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
