-- A cancel asked of the server that runs a buildset, by another server
-- that got the API call: who asked, "" when nobody did.
ALTER TABLE buildsets ADD COLUMN cancel_by TEXT NOT NULL DEFAULT '';
CREATE INDEX buildsets_cancel_by ON buildsets (owner) WHERE cancel_by <> '';
