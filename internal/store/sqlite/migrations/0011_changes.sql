-- The managers read what changed in the buildsets since their last look,
-- not every active buildset. buildset_changes is a counter that these
-- triggers bump whenever a buildset is made or its state, owner or
-- pinned_to is set, and buildsets.changed the counter's value at the
-- buildset's last change. The write lock makes it commit-ordered: a change
-- committed after a reader read the counter has a larger number. The
-- counter starts at 1, so that a reader's cursor is never 0 (a full read);
-- buildsets made before this migration keep 0, and a reader starts with a
-- full read anyway.
CREATE TABLE buildset_changes (n INTEGER NOT NULL);
INSERT INTO buildset_changes (n) VALUES (1);
ALTER TABLE buildsets ADD COLUMN changed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX buildsets_changed ON buildsets (changed);
CREATE TRIGGER buildsets_changed_insert AFTER INSERT ON buildsets BEGIN
	UPDATE buildset_changes SET n = n + 1;
	UPDATE buildsets SET changed = (SELECT n FROM buildset_changes) WHERE seq = NEW.seq;
END;
CREATE TRIGGER buildsets_changed_update AFTER UPDATE OF state, owner, pinned_to ON buildsets BEGIN
	UPDATE buildset_changes SET n = n + 1;
	UPDATE buildsets SET changed = (SELECT n FROM buildset_changes) WHERE seq = NEW.seq;
END;
