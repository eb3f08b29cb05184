-- What Ansible reported of each build (internal/ansible reads the callback
-- plugin's events and bounds them: see docs/ansible.md). Every row belongs to
-- the build's latest attempt that reported, and goes with the build.

-- One row per build that reported anything.
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

-- Each host's recap counts, as its PLAY RECAP line says.
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

-- The tasks, numbered in the order of their first result.
CREATE TABLE host_tasks (
	buildset_id TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	idx         INTEGER NOT NULL,
	play        TEXT    NOT NULL DEFAULT '',
	name        TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, idx),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);

-- What each task did on each host, in arrival order.
CREATE TABLE host_results (
	buildset_id TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	seq         INTEGER NOT NULL,
	task        INTEGER NOT NULL,
	host        TEXT    NOT NULL,
	status      TEXT    NOT NULL CHECK (status IN ('ok', 'changed', 'failed', 'unreachable', 'skipped')),
	ignored     INTEGER NOT NULL DEFAULT 0,
	duration_ms INTEGER NOT NULL DEFAULT 0,
	message     TEXT    NOT NULL DEFAULT '',
	diff        TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, seq),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);
