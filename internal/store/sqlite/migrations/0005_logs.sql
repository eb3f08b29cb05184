-- Build logs kept in the store, in chunks of whole lines, for a process
-- that writes them there instead of files (logs.Chunks): every process on
-- the store can read them, live and after their writer died. A log is the
-- concatenation of its chunks in start_offset order (the same as seq's);
-- start_offset is the byte offset of a chunk's first byte in the whole
-- log, so that a reader starts anywhere without reading what comes before.
-- No foreign key to attempts: the rows are kept whatever becomes of the
-- attempt's. written_at is unix nanoseconds.
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
CREATE UNIQUE INDEX log_chunks_offset ON log_chunks (buildset_id, job, attempt, start_offset);
