-- A buildset's mode (check mode, a host limit) is kept in its row as well
-- as in its spec, so that a list of buildsets shows it without reading
-- every spec (some 650 KB for a buildset of 10,000 jobs). NULL for the
-- buildsets made before: their spec says it.
ALTER TABLE buildsets ADD COLUMN mode BLOB;
