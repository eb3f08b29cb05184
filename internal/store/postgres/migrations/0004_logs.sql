-- Build logs kept in the database, in chunks of whole lines (logs.Chunks):
-- every node can read them, live and after their writer died. A log is the
-- concatenation of its chunks in start_offset order (the same as seq's);
-- start_offset is the byte offset of a chunk's first byte in the whole
-- log, so that a reader starts anywhere without reading what comes before.
-- No foreign key to attempts: a chunk may be written before its attempt's
-- row is visible to others, and the rows are kept as they are.
CREATE TABLE log_chunks (
	buildset_id  text        NOT NULL,
	job          text        NOT NULL,
	attempt      integer     NOT NULL,
	seq          integer     NOT NULL,
	start_offset bigint      NOT NULL,
	data         bytea       NOT NULL,
	written_at   timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (buildset_id, job, attempt, seq)
);
CREATE UNIQUE INDEX log_chunks_offset ON log_chunks (buildset_id, job, attempt, start_offset);
