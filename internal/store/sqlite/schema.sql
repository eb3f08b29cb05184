-- The schema of migration 15 (0015_checks_compared.sql), written from the migrations
-- by `go test ./internal/store/sqlite -run TestSchemaSnapshot -update`
-- for a new database, which gets it at once. Not to be edited.

CREATE TABLE builds (
	buildset_id TEXT    NOT NULL REFERENCES buildsets (id) ON DELETE CASCADE,
	job         TEXT    NOT NULL,
	seq         INTEGER NOT NULL, -- creation order within the buildset
	state       TEXT    NOT NULL CHECK (state = 'WAITING' OR state = 'RUNNING' OR state = 'DONE'),
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

CREATE TABLE semaphore_holders (
	semaphore   TEXT    NOT NULL,
	holder      TEXT    NOT NULL,
	buildset    TEXT    NOT NULL,
	owner       TEXT    NOT NULL,
	acquired_at INTEGER NOT NULL,
	PRIMARY KEY (semaphore, holder)
);

CREATE TABLE semaphore_waiters (
	semaphore  TEXT    NOT NULL,
	holder     TEXT    NOT NULL,
	buildset   TEXT    NOT NULL,
	owner      TEXT    NOT NULL,
	precedence INTEGER NOT NULL,
	since      INTEGER NOT NULL,
	PRIMARY KEY (semaphore, holder)
);

CREATE TABLE "buildsets" (
	-- seq is the arrival order (store.Buildset.Seq).
	seq         INTEGER PRIMARY KEY AUTOINCREMENT,
	id          TEXT    NOT NULL UNIQUE,
	pipeline    TEXT    NOT NULL,
	commit_sha  TEXT    NOT NULL,
	files       TEXT,   -- JSON array; NULL when the event had no file list
	state       TEXT    NOT NULL CHECK (state = 'QUEUED' OR state = 'ADMITTED' OR state = 'RUNNING' OR state = 'DONE'),
	result      TEXT    NOT NULL DEFAULT '',
	error       TEXT    NOT NULL DEFAULT '',
	cause       TEXT    NOT NULL DEFAULT '',
	rerun_of    TEXT    NOT NULL DEFAULT '',
	owner       TEXT    NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	admitted_at INTEGER,
	started_at  INTEGER,
	finished_at INTEGER
, pinned_to TEXT NOT NULL DEFAULT '', cancel_by TEXT NOT NULL DEFAULT '', changed INTEGER NOT NULL DEFAULT 0, mode BLOB);

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

CREATE TABLE deliveries (
	-- id is the forge and its delivery id: "github/72d3162e-...".
	id          TEXT    PRIMARY KEY,
	received_at INTEGER NOT NULL
);

CREATE TABLE report_deliveries (
	-- seq is the order deliveries were recorded in.
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	id            TEXT    NOT NULL UNIQUE,
	buildset_id   TEXT    NOT NULL REFERENCES buildsets (id) ON DELETE CASCADE,
	reporter      TEXT    NOT NULL,
	event         TEXT    NOT NULL,
	-- target is the caller's frozen reporter (JSON, no secret), kept as given.
	target        BLOB    NOT NULL,
	state         TEXT    NOT NULL CHECK (state = 'pending' OR state = 'delivered' OR state = 'failed'),
	tries         INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT    NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL,
	next_at       INTEGER NOT NULL,
	last_try_at   INTEGER,
	done_at       INTEGER,
	claimed_by    TEXT    NOT NULL DEFAULT '',
	claimed_until INTEGER
);

CREATE TABLE log_chunks (
	buildset_id  TEXT    NOT NULL,
	job          TEXT    NOT NULL,
	attempt      INTEGER NOT NULL,
	seq          INTEGER NOT NULL,
	start_offset INTEGER NOT NULL,
	data         BLOB    NOT NULL,
	written_at   INTEGER NOT NULL,
	PRIMARY KEY (buildset_id, job, attempt, seq)
);

CREATE TABLE host_builds (
	buildset_id TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	attempt     INTEGER NOT NULL CHECK (attempt >= 1),
	runs        INTEGER NOT NULL DEFAULT 0,
	plays       INTEGER NOT NULL DEFAULT 0,
	dropped     INTEGER NOT NULL DEFAULT 0,
	note        TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job),
	FOREIGN KEY (buildset_id, job) REFERENCES builds (buildset_id, job) ON DELETE CASCADE
);

CREATE TABLE host_recaps (
	buildset_id TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	host        TEXT    NOT NULL,
	ok          INTEGER NOT NULL DEFAULT 0,
	changed     INTEGER NOT NULL DEFAULT 0,
	failed      INTEGER NOT NULL DEFAULT 0,
	unreachable INTEGER NOT NULL DEFAULT 0,
	skipped     INTEGER NOT NULL DEFAULT 0,
	rescued     INTEGER NOT NULL DEFAULT 0,
	ignored     INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (buildset_id, job, host),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);

CREATE TABLE host_tasks (
	buildset_id TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	idx         INTEGER NOT NULL,
	play        TEXT    NOT NULL DEFAULT '',
	name        TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, idx),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);

CREATE TABLE host_results (
	buildset_id TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	task        INTEGER NOT NULL,
	host        TEXT    NOT NULL,
	status      TEXT    NOT NULL CHECK (status = 'ok' OR status = 'changed' OR status = 'failed' OR status = 'unreachable' OR status = 'skipped'),
	ignored     INTEGER NOT NULL DEFAULT 0,
	duration_ms INTEGER NOT NULL DEFAULT 0,
	message     TEXT    NOT NULL DEFAULT '',
	diff        TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, seq),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);

CREATE TABLE owners (
	-- id is one process incarnation: the bastion's tag of its builds.
	id         TEXT    PRIMARY KEY,
	kind       TEXT    NOT NULL CHECK (kind IN ('node', 'run')),
	-- node is a server's node name, a run's host name; host is where its
	-- local-bastion builds run ('' for an owner carried over from the
	-- leases, whose host is not known); state_dir is absolute.
	node       TEXT    NOT NULL DEFAULT '',
	host       TEXT    NOT NULL DEFAULT '',
	state_dir  TEXT    NOT NULL DEFAULT '',
	-- epoch is above every epoch given before it: MAX(epoch) + 1, rows are
	-- never deleted.
	epoch      INTEGER NOT NULL UNIQUE,
	state      TEXT    NOT NULL DEFAULT 'live' CHECK (state = 'live' OR state = 'fenced' OR state = 'ended' OR state = 'released'),
	started_at INTEGER NOT NULL,
	renewed_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	version    TEXT    NOT NULL DEFAULT '',
	config_fp  TEXT    NOT NULL DEFAULT '',
	slots_max  INTEGER NOT NULL DEFAULT 0,
	slots_used INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE leader (
	name       TEXT    PRIMARY KEY DEFAULT 'default' CHECK (name = 'default'),
	owner      TEXT    NOT NULL REFERENCES owners (id),
	term       INTEGER NOT NULL,
	elected_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
);

CREATE TABLE leader_terms (
	one  INTEGER PRIMARY KEY CHECK (one = 1),
	last INTEGER NOT NULL
);

CREATE TABLE cron_ticks (
	pipeline TEXT    NOT NULL,
	tick     INTEGER NOT NULL,
	buildset TEXT    NOT NULL REFERENCES buildsets (id),
	-- term is the leader's term that fired it; 0 when made outside one.
	term     INTEGER NOT NULL,
	PRIMARY KEY (pipeline, tick)
);

CREATE TABLE buildset_changes (n INTEGER NOT NULL);

CREATE TABLE buildset_specs (
	seq  INTEGER PRIMARY KEY REFERENCES buildsets (seq) ON DELETE CASCADE,
	plan BLOB,
	spec BLOB
);

CREATE INDEX semaphore_holders_holder ON semaphore_holders (holder);

CREATE INDEX semaphore_holders_buildset ON semaphore_holders (buildset);

CREATE INDEX semaphore_holders_owner ON semaphore_holders (owner);

CREATE INDEX semaphore_waiters_holder ON semaphore_waiters (holder);

CREATE INDEX semaphore_waiters_buildset ON semaphore_waiters (buildset);

CREATE INDEX semaphore_waiters_owner ON semaphore_waiters (owner);

CREATE INDEX buildsets_created ON buildsets (created_at, seq);

CREATE INDEX buildsets_pipeline_created ON buildsets (pipeline, created_at, seq);

CREATE INDEX buildsets_commit_created ON buildsets (commit_sha, created_at, seq);

CREATE INDEX buildsets_state ON buildsets (state, seq);

CREATE INDEX deliveries_received_at ON deliveries (received_at);

CREATE INDEX report_deliveries_pending ON report_deliveries (next_at, seq) WHERE state = 'pending';

CREATE INDEX report_deliveries_order ON report_deliveries (buildset_id, reporter, seq) WHERE state = 'pending';

CREATE INDEX report_deliveries_buildset ON report_deliveries (buildset_id, seq);

CREATE UNIQUE INDEX log_chunks_offset ON log_chunks (buildset_id, job, attempt, start_offset);

CREATE INDEX owners_identity ON owners (node, host, state_dir);

CREATE INDEX owners_state ON owners (state, expires_at);

CREATE INDEX buildsets_unowned ON buildsets (state, seq) WHERE owner = '';

CREATE INDEX buildsets_cancel_by ON buildsets (owner) WHERE cancel_by <> '';

CREATE INDEX buildsets_changed ON buildsets (changed);

CREATE INDEX attempts_succeeded ON attempts (job, finished_at, number) WHERE result = 'SUCCESS';

CREATE TRIGGER buildsets_changed_insert AFTER INSERT ON buildsets BEGIN
	UPDATE buildset_changes SET n = n + 1;
	UPDATE buildsets SET changed = (SELECT n FROM buildset_changes) WHERE seq = NEW.seq;
END;

CREATE TRIGGER buildsets_changed_update AFTER UPDATE OF state, owner, pinned_to ON buildsets BEGIN
	UPDATE buildset_changes SET n = n + 1;
	UPDATE buildsets SET changed = (SELECT n FROM buildset_changes) WHERE seq = NEW.seq;
END;

INSERT INTO leader_terms (one, last) VALUES (1, 0);
INSERT INTO buildset_changes (n) VALUES (1);
