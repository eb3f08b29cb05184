-- The outbox: each report of a buildset's event to one reporter, recorded in
-- the transaction of the state change that causes it, and sent by whichever
-- node claims it (store.Outbox; claims take rows FOR UPDATE SKIP LOCKED).

CREATE TABLE report_deliveries (
	-- seq is the order deliveries were recorded in.
	seq           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	id            text        NOT NULL UNIQUE,
	buildset_id   text        NOT NULL REFERENCES buildsets (id) ON DELETE CASCADE,
	reporter      text        NOT NULL,
	event         text        NOT NULL,
	-- target is the caller's frozen reporter (JSON, no secret), byte for byte.
	target        bytea       NOT NULL,
	state         text        NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
	tries         integer     NOT NULL DEFAULT 0,
	last_error    text        NOT NULL DEFAULT '',
	created_at    timestamptz NOT NULL,
	next_at       timestamptz NOT NULL,
	last_try_at   timestamptz,
	done_at       timestamptz,
	claimed_by    text        NOT NULL DEFAULT '',
	claimed_until timestamptz
);
CREATE INDEX report_deliveries_pending ON report_deliveries (next_at, seq) WHERE state = 'pending';
CREATE INDEX report_deliveries_order ON report_deliveries (buildset_id, reporter, seq) WHERE state = 'pending';
CREATE INDEX report_deliveries_buildset ON report_deliveries (buildset_id, seq);
