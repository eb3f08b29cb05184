-- The outbox: each report of a buildset's event to one reporter, recorded in
-- the transaction of the state change that causes it, and sent by whichever
-- process claims it (store.Outbox).

CREATE TABLE report_deliveries (
	-- seq is the order deliveries were recorded in.
	seq           INTEGER PRIMARY KEY AUTOINCREMENT,
	id            TEXT    NOT NULL UNIQUE,
	buildset_id   TEXT    NOT NULL REFERENCES buildsets (id) ON DELETE CASCADE,
	reporter      TEXT    NOT NULL,
	event         TEXT    NOT NULL,
	-- target is the caller's frozen reporter (JSON, no secret), kept as given.
	target        BLOB    NOT NULL,
	state         TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
	tries         INTEGER NOT NULL DEFAULT 0,
	last_error    TEXT    NOT NULL DEFAULT '',
	created_at    INTEGER NOT NULL,
	next_at       INTEGER NOT NULL,
	last_try_at   INTEGER,
	done_at       INTEGER,
	claimed_by    TEXT    NOT NULL DEFAULT '',
	claimed_until INTEGER
);
-- Claims read the pending deliveries by due time, and the oldest pending
-- one of each buildset and reporter.
CREATE INDEX report_deliveries_pending ON report_deliveries (next_at, seq) WHERE state = 'pending';
CREATE INDEX report_deliveries_order ON report_deliveries (buildset_id, reporter, seq) WHERE state = 'pending';
CREATE INDEX report_deliveries_buildset ON report_deliveries (buildset_id, seq);
