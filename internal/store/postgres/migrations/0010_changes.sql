-- The managers read what changed in the buildsets since their last look,
-- not every active buildset. changed_xid is the transaction that last
-- made the buildset or set its state, owner or pinned_to (the trigger
-- below). A counter would not do: nodes write at once, and a change that
-- took its number first may commit last. Transaction ids tell instead: a
-- reader notes the oldest transaction still running when it looks
-- (pg_snapshot_xmin), and its next look reads every buildset changed by
-- that transaction or a later one, which holds every change it has not
-- seen. Buildsets made before this migration keep 0: a reader starts with
-- a full read anyway.
ALTER TABLE buildsets ADD COLUMN changed_xid xid8 NOT NULL DEFAULT '0';
CREATE INDEX buildsets_changed ON buildsets (changed_xid);
CREATE FUNCTION buildsets_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	NEW.changed_xid := pg_current_xact_id();
	RETURN NEW;
END
$$;
CREATE TRIGGER buildsets_changed BEFORE INSERT OR UPDATE OF state, owner, pinned_to ON buildsets
	FOR EACH ROW EXECUTE FUNCTION buildsets_changed();
