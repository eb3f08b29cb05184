-- Times are INTEGER unix nanoseconds, UTC. Empty strings, not NULL, stand for
-- an unset result, error, owner, log or reason; NULL stands for an unset time,
-- a buildset without a file list (files) and a buildset without a plan.

CREATE TABLE buildsets (
	-- seq orders buildsets created in the same nanosecond.
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT    NOT NULL UNIQUE,
	pipeline    TEXT    NOT NULL,
	commit_sha  TEXT    NOT NULL,
	files       TEXT,   -- JSON array; NULL when the event had no file list
	state       TEXT    NOT NULL CHECK (state IN ('QUEUED', 'RUNNING', 'DONE')),
	result      TEXT    NOT NULL DEFAULT '',
	error       TEXT    NOT NULL DEFAULT '',
	plan        BLOB,
	owner       TEXT    NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	started_at  INTEGER,
	finished_at INTEGER
);
CREATE INDEX buildsets_created ON buildsets (created_at, seq);
CREATE INDEX buildsets_pipeline_created ON buildsets (pipeline, created_at, seq);

CREATE TABLE builds (
	buildset_id TEXT    NOT NULL REFERENCES buildsets (id) ON DELETE CASCADE,
	job         TEXT    NOT NULL,
	seq         INTEGER NOT NULL, -- creation order within the buildset
	state       TEXT    NOT NULL CHECK (state IN ('WAITING', 'RUNNING', 'DONE')),
	result      TEXT    NOT NULL DEFAULT '',
	attempt     INTEGER NOT NULL DEFAULT 0,
	started_at  INTEGER,
	finished_at INTEGER,
	log         TEXT    NOT NULL DEFAULT '',
	reason      TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job)
);

CREATE TABLE attempts (
	buildset_id TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	number      INTEGER NOT NULL CHECK (number >= 1),
	owner       TEXT    NOT NULL DEFAULT '',
	started_at  INTEGER NOT NULL,
	finished_at INTEGER,
	result      TEXT    NOT NULL DEFAULT '', -- '' while running
	log         TEXT    NOT NULL DEFAULT '',
	error       TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, number),
	FOREIGN KEY (buildset_id, job) REFERENCES builds (buildset_id, job) ON DELETE CASCADE
);
-- JobDurations: the latest successful attempts of a job.
CREATE INDEX attempts_job_result_finished ON attempts (job, result, finished_at);

-- Holders and waiters carry no foreign key to buildsets: a semaphore is
-- shared state between processes and must be releasable whatever happened
-- to the buildset rows.
CREATE TABLE semaphore_holders (
	semaphore   TEXT    NOT NULL,
	holder      TEXT    NOT NULL,
	buildset    TEXT    NOT NULL,
	owner       TEXT    NOT NULL,
	acquired_at INTEGER NOT NULL,
	PRIMARY KEY (semaphore, holder)
);
CREATE INDEX semaphore_holders_holder ON semaphore_holders (holder);
CREATE INDEX semaphore_holders_buildset ON semaphore_holders (buildset);
CREATE INDEX semaphore_holders_owner ON semaphore_holders (owner);

CREATE TABLE semaphore_waiters (
	semaphore  TEXT    NOT NULL,
	holder     TEXT    NOT NULL,
	buildset   TEXT    NOT NULL,
	owner      TEXT    NOT NULL,
	precedence INTEGER NOT NULL,
	since      INTEGER NOT NULL,
	PRIMARY KEY (semaphore, holder)
);
CREATE INDEX semaphore_waiters_holder ON semaphore_waiters (holder);
CREATE INDEX semaphore_waiters_buildset ON semaphore_waiters (buildset);
CREATE INDEX semaphore_waiters_owner ON semaphore_waiters (owner);

-- An owner without a row here is alive: a process renews its lease before it
-- first acquires, so a missing row means "not leased yet", not "dead".
CREATE TABLE leases (
	owner      TEXT    PRIMARY KEY,
	expires_at INTEGER NOT NULL
);
