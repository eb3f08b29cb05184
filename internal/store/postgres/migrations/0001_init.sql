-- The schema of the SQLite store as of its migration 0003, in PostgreSQL's
-- terms. Times are timestamptz (microseconds; SQLite keeps nanoseconds).
-- Empty strings, not NULL, stand for an unset result, error, owner, log or
-- reason; NULL stands for an unset time, a buildset without a file list
-- (files), without a plan or without a spec.

CREATE TABLE buildsets (
	-- seq is the arrival order (store.Buildset.Seq): strictly increasing,
	-- never reused, with gaps where a transaction rolled back.
	seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id          text        NOT NULL UNIQUE,
	pipeline    text        NOT NULL,
	commit_sha  text        NOT NULL,
	files       text[],
	state       text        NOT NULL CHECK (state IN ('QUEUED', 'ADMITTED', 'RUNNING', 'DONE')),
	result      text        NOT NULL DEFAULT '',
	error       text        NOT NULL DEFAULT '',
	-- plan (graph.Plan as JSON) and spec (opaque JSON) are kept byte for
	-- byte: jsonb would reorder keys and respace them.
	plan        bytea,
	spec        bytea,
	cause       text        NOT NULL DEFAULT '',
	rerun_of    text        NOT NULL DEFAULT '',
	owner       text        NOT NULL DEFAULT '',
	created_at  timestamptz NOT NULL,
	admitted_at timestamptz,
	started_at  timestamptz,
	finished_at timestamptz
);
CREATE INDEX buildsets_created ON buildsets (created_at, seq);
CREATE INDEX buildsets_pipeline_created ON buildsets (pipeline, created_at, seq);
CREATE INDEX buildsets_commit_created ON buildsets (commit_sha, created_at, seq);
-- ActiveBuildsets: the few buildsets not DONE.
CREATE INDEX buildsets_state ON buildsets (state, seq);

CREATE TABLE builds (
	buildset_id text        NOT NULL REFERENCES buildsets (id) ON DELETE CASCADE,
	job         text        NOT NULL,
	seq         integer     NOT NULL, -- creation order within the buildset
	state       text        NOT NULL CHECK (state IN ('WAITING', 'RUNNING', 'DONE')),
	result      text        NOT NULL DEFAULT '',
	attempt     integer     NOT NULL DEFAULT 0,
	started_at  timestamptz,
	finished_at timestamptz,
	log         text        NOT NULL DEFAULT '',
	reason      text        NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job)
);

CREATE TABLE attempts (
	buildset_id text        NOT NULL,
	job         text        NOT NULL,
	number      integer     NOT NULL CHECK (number >= 1),
	owner       text        NOT NULL DEFAULT '',
	started_at  timestamptz NOT NULL,
	finished_at timestamptz,
	result      text        NOT NULL DEFAULT '', -- '' while running
	log         text        NOT NULL DEFAULT '',
	error       text        NOT NULL DEFAULT '',
	PRIMARY KEY (buildset_id, job, number),
	FOREIGN KEY (buildset_id, job) REFERENCES builds (buildset_id, job) ON DELETE CASCADE
);
-- JobDurations: the latest successful attempts of a job.
CREATE INDEX attempts_job_result_finished ON attempts (job, result, finished_at);

-- Holders and waiters carry no foreign key to buildsets: a semaphore is
-- shared state between processes and must be releasable whatever happened
-- to the buildset rows.
CREATE TABLE semaphore_holders (
	semaphore   text        NOT NULL,
	holder      text        NOT NULL,
	buildset    text        NOT NULL,
	owner       text        NOT NULL,
	acquired_at timestamptz NOT NULL,
	PRIMARY KEY (semaphore, holder)
);
CREATE INDEX semaphore_holders_holder ON semaphore_holders (holder);
CREATE INDEX semaphore_holders_buildset ON semaphore_holders (buildset);
CREATE INDEX semaphore_holders_owner ON semaphore_holders (owner);

CREATE TABLE semaphore_waiters (
	semaphore  text        NOT NULL,
	holder     text        NOT NULL,
	buildset   text        NOT NULL,
	owner      text        NOT NULL,
	precedence integer     NOT NULL,
	since      timestamptz NOT NULL,
	PRIMARY KEY (semaphore, holder)
);
CREATE INDEX semaphore_waiters_holder ON semaphore_waiters (holder);
CREATE INDEX semaphore_waiters_buildset ON semaphore_waiters (buildset);
CREATE INDEX semaphore_waiters_owner ON semaphore_waiters (owner);

-- An owner without a row here is alive: a process renews its lease before it
-- first acquires, so a missing row means "not leased yet", not "dead".
CREATE TABLE leases (
	owner      text        PRIMARY KEY,
	expires_at timestamptz NOT NULL
);

-- pipeline '' pauses every pipeline.
CREATE TABLE pauses (
	pipeline  text        PRIMARY KEY,
	paused_by text        NOT NULL DEFAULT '',
	reason    text        NOT NULL DEFAULT '',
	paused_at timestamptz NOT NULL
);

-- The marks of triggers (the last commit polled, the last cron tick).
CREATE TABLE marks (
	name  text PRIMARY KEY,
	value text NOT NULL
);

-- The webhook deliveries a server has received, so that one delivered again
-- (a forge's retry, a replay) is recognised across restarts and nodes.
CREATE TABLE deliveries (
	-- id is the forge and its delivery id: "github/72d3162e-...".
	id          text        PRIMARY KEY,
	received_at timestamptz NOT NULL
);
CREATE INDEX deliveries_received_at ON deliveries (received_at);
