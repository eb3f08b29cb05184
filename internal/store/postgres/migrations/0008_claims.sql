-- Claims: an admitted buildset has no owner until a server claims it, and
-- a released owner's admitted and running buildsets lose theirs, for any
-- server to claim. Those of owners released before this (waiting for their
-- successor to adopt them) are made claimable now.
UPDATE buildsets SET owner = ''
	WHERE state IN ('ADMITTED', 'RUNNING') AND pinned_to = ''
		AND owner IN (SELECT id FROM owners WHERE state = 'released');
-- Claims look for the buildsets with no owner, by state, oldest first.
CREATE INDEX buildsets_unowned ON buildsets (state, seq) WHERE owner = '';
