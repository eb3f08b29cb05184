-- Leadership (issue 12): one row at most, the leader's term, held by a live
-- owner and renewed before it runs out; terms count up in leader_terms,
-- which outlives the row. Cron ticks are claimed with the buildset they
-- fire, so that a tick fires once across processes and leader changes.

CREATE TABLE leader (
	name       TEXT    PRIMARY KEY DEFAULT 'default' CHECK (name = 'default'),
	owner      TEXT    NOT NULL REFERENCES owners (id),
	term       INTEGER NOT NULL,
	elected_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
);

-- The last term given: one row.
CREATE TABLE leader_terms (
	one  INTEGER PRIMARY KEY CHECK (one = 1),
	last INTEGER NOT NULL
);
INSERT INTO leader_terms (one, last) VALUES (1, 0);

CREATE TABLE cron_ticks (
	pipeline TEXT    NOT NULL,
	tick     INTEGER NOT NULL,
	buildset TEXT    NOT NULL REFERENCES buildsets (id),
	-- term is the leader's term that fired it; 0 when made outside one.
	term     INTEGER NOT NULL,
	PRIMARY KEY (pipeline, tick)
);
