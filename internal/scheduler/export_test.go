package scheduler

import "time"

// RetryDelayForTest exposes the backoff to the tests of package scheduler_test.
func RetryDelayForTest(l *Loop, attempt int) time.Duration { return l.retryDelay(attempt) }
