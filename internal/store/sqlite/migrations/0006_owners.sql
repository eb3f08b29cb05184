-- Owners as data (issue 12): the processes that own buildsets, holders and
-- waiters become rows with a kind, an identity, a lease, an epoch (their
-- fencing token) and a state, in place of the lease rows. Every process
-- registers before it writes; a write carrying a fence that is not its
-- owner's live epoch is refused.

CREATE TABLE owners (
	-- id is one process incarnation: the bastion's tag of its builds.
	id         TEXT    PRIMARY KEY,
	kind       TEXT    NOT NULL CHECK (kind IN ('node', 'run')),
	-- node is a server's node name, a run's host name; host is where its
	-- local-bastion builds run ('' for an owner carried over from the
	-- leases, whose host is not known); state_dir is absolute.
	node       TEXT    NOT NULL DEFAULT '',
	host       TEXT    NOT NULL DEFAULT '',
	state_dir  TEXT    NOT NULL DEFAULT '',
	-- epoch is above every epoch given before it: MAX(epoch) + 1, rows are
	-- never deleted.
	epoch      INTEGER NOT NULL UNIQUE,
	state      TEXT    NOT NULL DEFAULT 'live' CHECK (state IN ('live', 'fenced', 'ended', 'released')),
	started_at INTEGER NOT NULL,
	renewed_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	version    TEXT    NOT NULL DEFAULT '',
	config_fp  TEXT    NOT NULL DEFAULT '',
	slots_max  INTEGER NOT NULL DEFAULT 0,
	slots_used INTEGER NOT NULL DEFAULT 0
);
-- A successor finds its predecessors by node, host and state dir; a reaper
-- the live owners whose lease ran out.
CREATE INDEX owners_identity ON owners (node, host, state_dir);
CREATE INDEX owners_state ON owners (state, expires_at);

-- The leases carried over, live: the kind was the id's prefix ("run-" for
-- a `sortie run`, anything else a server's).
INSERT INTO owners (id, kind, epoch, state, started_at, renewed_at, expires_at)
	SELECT owner, CASE WHEN owner LIKE 'run-%' THEN 'run' ELSE 'node' END,
		ROW_NUMBER() OVER (ORDER BY owner), 'live', expires_at, expires_at, expires_at
	FROM leases;
-- An owner of a holder, a waiter or an active buildset without a lease row
-- was released already (its kept holders wait for an adopter): it is
-- carried over released.
INSERT INTO owners (id, kind, epoch, state, started_at, renewed_at, expires_at)
	SELECT o, CASE WHEN o LIKE 'run-%' THEN 'run' ELSE 'node' END,
		(SELECT COALESCE(MAX(epoch), 0) FROM owners) + ROW_NUMBER() OVER (ORDER BY o), 'released', 0, 0, 0
	FROM (SELECT owner AS o FROM semaphore_holders
		UNION SELECT owner FROM semaphore_waiters
		UNION SELECT owner FROM buildsets WHERE state <> 'DONE' AND owner <> '')
	WHERE o NOT IN (SELECT id FROM owners);
DROP TABLE leases;

-- A `sortie run`'s buildset was QUEUED with the run as its owner; it is now
-- pinned to it, and has no owner until it starts.
ALTER TABLE buildsets ADD COLUMN pinned_to TEXT NOT NULL DEFAULT '';
UPDATE buildsets SET pinned_to = owner, owner = '' WHERE state = 'QUEUED' AND owner <> '';
