-- What Ansible reported of each build (internal/ansible reads the callback
-- plugin's events and bounds them: see docs/ansible.md). Every row belongs to
-- the build's latest attempt that reported, and goes with the build.

-- One row per build that reported anything.
CREATE TABLE host_builds (
	buildset_id text    NOT NULL,
	job         text    NOT NULL,
	attempt     integer NOT NULL CHECK (attempt >= 1),
	runs        integer NOT NULL DEFAULT 0,
	plays       integer NOT NULL DEFAULT 0,
	dropped     integer NOT NULL DEFAULT 0,
	note        text    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job),
	FOREIGN KEY (buildset_id, job) REFERENCES builds (buildset_id, job) ON DELETE CASCADE
);

-- Each host's recap counts, as its PLAY RECAP line says.
CREATE TABLE host_recaps (
	buildset_id text    NOT NULL,
	job         text    NOT NULL,
	host        text    NOT NULL,
	ok          integer NOT NULL DEFAULT 0,
	changed     integer NOT NULL DEFAULT 0,
	failed      integer NOT NULL DEFAULT 0,
	unreachable integer NOT NULL DEFAULT 0,
	skipped     integer NOT NULL DEFAULT 0,
	rescued     integer NOT NULL DEFAULT 0,
	ignored     integer NOT NULL DEFAULT 0,
	PRIMARY KEY (buildset_id, job, host),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);

-- The tasks, numbered in the order of their first result.
CREATE TABLE host_tasks (
	buildset_id text    NOT NULL,
	job         text    NOT NULL,
	idx         integer NOT NULL,
	play        text    NOT NULL DEFAULT '',
	name        text    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, idx),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);

-- What each task did on each host, in arrival order.
CREATE TABLE host_results (
	buildset_id text    NOT NULL,
	job         text    NOT NULL,
	seq         integer NOT NULL,
	task        integer NOT NULL,
	host        text    NOT NULL,
	status      text    NOT NULL CHECK (status IN ('ok', 'changed', 'failed', 'unreachable', 'skipped')),
	ignored     boolean NOT NULL DEFAULT false,
	duration_ms bigint  NOT NULL DEFAULT 0,
	message     text    NOT NULL DEFAULT '',
	diff        text    NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, seq),
	FOREIGN KEY (buildset_id, job) REFERENCES host_builds (buildset_id, job) ON DELETE CASCADE
);
