-- JobDurations reads a job's latest successful attempts; the index it read
-- them by (job, result, finished_at) held every attempt, so that each
-- attempt's start and end changed it: a page more written by every job's
-- commit. This one holds the successful attempts alone, entered once, when
-- an attempt ends with SUCCESS, and in the order JobDurations reads them.
DROP INDEX attempts_job_result_finished;
CREATE INDEX attempts_succeeded ON attempts (job, finished_at, number) WHERE result = 'SUCCESS';
