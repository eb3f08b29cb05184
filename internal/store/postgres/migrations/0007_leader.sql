-- Leadership (issue 12): one row at most, the leader's term, held by a live
-- owner and renewed before it runs out; terms come from leader_terms. Cron
-- ticks are claimed with the buildset they fire, so that a tick fires once
-- across nodes and leader changes.

CREATE SEQUENCE leader_terms;

CREATE TABLE leader (
	name       text        PRIMARY KEY DEFAULT 'default' CHECK (name = 'default'),
	owner      text        NOT NULL REFERENCES owners (id),
	term       bigint      NOT NULL,
	elected_at timestamptz NOT NULL,
	expires_at timestamptz NOT NULL
);

CREATE TABLE cron_ticks (
	pipeline text        NOT NULL,
	tick     timestamptz NOT NULL,
	buildset text        NOT NULL REFERENCES buildsets (id),
	-- term is the leader's term that fired it; 0 when made outside one.
	term     bigint      NOT NULL,
	PRIMARY KEY (pipeline, tick)
);
