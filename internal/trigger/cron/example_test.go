package cron_test

import (
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/trigger/cron"
)

// On start, a server asks each cron pipeline's schedule whether ticks passed
// while it was down, and runs the pipeline once for the latest of them.
func ExampleSchedule_Missed() {
	s, err := cron.Parse("0 * * * *", time.UTC)
	if err != nil {
		panic(err)
	}
	last := time.Date(2026, 1, 2, 6, 0, 0, 0, time.UTC)   // recorded before the crash
	start := time.Date(2026, 1, 2, 10, 7, 0, 0, time.UTC) // restarted
	if missed, latest := s.Missed(last, start); missed {
		fmt.Printf("hourly: missed ticks since %s; running once for %s\n", last.Format("15:04"), latest.Format("15:04"))
	}
	fmt.Println("next:", s.Next(start).Format("15:04"))
	// Output:
	// hourly: missed ticks since 06:00; running once for 10:00
	// next: 11:00
}
