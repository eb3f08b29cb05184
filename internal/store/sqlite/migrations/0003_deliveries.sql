-- The webhook deliveries a server has received, so that one delivered again
-- (a forge's retry, a replay) is recognised across restarts. ClaimDelivery
-- keeps the table bounded by age and count.

CREATE TABLE deliveries (
	-- id is the forge and its delivery id: "github/72d3162e-...".
	id          TEXT    PRIMARY KEY,
	received_at INTEGER NOT NULL
);
CREATE INDEX deliveries_received_at ON deliveries (received_at);
