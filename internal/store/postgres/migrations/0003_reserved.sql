-- Reserved for the owners change, which lands before the outbox (0004) and
-- replaces this file when the branches are merged.
SELECT 1;
