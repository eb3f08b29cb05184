-- Reserved for another change being made at the same time (owners and
-- fencing; reporters), which brings its own file under this number: this
-- placeholder goes when the two are merged.
SELECT 1;
