-- The order deliveries arrived in: ClaimDelivery keeps the newest, and tells
-- apart those received at the same instant by it (SQLite's store uses the
-- rowid).
ALTER TABLE deliveries ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
