-- A buildset's plan and spec, written once when it is made and never
-- changed, are kept apart from its row, which changes at every step of its
-- life. SQLite rewrites a row whole when its size changes, overflow pages
-- and all: every state change of a buildset, and the update of its changed
-- counter that follows (0011), wrote its plan and spec again, some 4 MB of
-- log for a buildset of 10,000 jobs. A buildset without either has no row
-- here.
CREATE TABLE buildset_specs (
	seq  INTEGER PRIMARY KEY REFERENCES buildsets (seq) ON DELETE CASCADE,
	plan BLOB,
	spec BLOB
);
INSERT INTO buildset_specs (seq, plan, spec)
	SELECT seq, plan, spec FROM buildsets WHERE plan IS NOT NULL OR spec IS NOT NULL;
ALTER TABLE buildsets DROP COLUMN plan;
ALTER TABLE buildsets DROP COLUMN spec;
