// Command triggers measures how fast `sortie serve` accepts triggers: C
// clients POST N triggers in all to /api/v1/pipelines/deploy/trigger as
// fast as they are answered, and it prints the accepted triggers per
// second, the latency percentiles of a trigger, and the server's CPU time
// (its own and its git children's) per trigger. Each binary given runs on
// a fresh state dir and repository, one after the other, so that a
// baseline and a change are compared in the same run (docs/benchmarks.md).
// With -database postgres (or both), the server runs on a fresh database
// of a throwaway PostgreSQL cluster (benchkit.StartPostgres), and the
// cluster's CPU time per trigger is reported beside the server's.
// It measures; it asserts nothing.
//
//	go run ./bench/triggers -n 1000 -c 16 [-bin /path/to/old/sortie,...] [-database sqlite|postgres|both]
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/bench/internal/benchkit"
)

func main() {
	n := flag.Int("n", 1000, "triggers in all")
	c := flag.Int("c", 16, "concurrent clients")
	bins := flag.String("bin", "", "comma-separated sortie binaries to compare, each labelled by its path; the tree's own build is always measured last")
	db := flag.String("database", "sqlite", "the server's store: sqlite, postgres or both (each binary on SQLite, then on PostgreSQL)")
	pgSettings := flag.String("pg-settings", benchkit.PostgresSettings, "settings of the PostgreSQL cluster (postgres -c name=value ...)")
	flag.StringVar(&serverLog, "server-log", "", "a directory to keep each server's output in (<run>-<store>.log), to look into a run")
	flag.Parse()
	if *db != "sqlite" && *db != "postgres" && *db != "both" {
		fmt.Fprintln(os.Stderr, "triggers: -database: want sqlite, postgres or both")
		os.Exit(2)
	}
	if err := run(*n, *c, *bins, *db, *pgSettings); err != nil {
		fmt.Fprintln(os.Stderr, "triggers:", err)
		os.Exit(1)
	}
}

// serverLog is the -server-log directory, "" to discard the servers' output.
var serverLog string

func run(n, c int, bins, database, pgSettings string) error {
	work, err := os.MkdirTemp("", "sortie-triggers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	own, err := benchkit.Build(work)
	if err != nil {
		return err
	}
	var list []string
	if bins != "" {
		list = strings.Split(bins, ",")
	}
	list = append(list, own)
	var pg *benchkit.Postgres
	if database != "sqlite" {
		if pg, err = benchkit.StartPostgres(pgSettings); err != nil {
			return err
		}
		defer pg.Stop()
	}
	fmt.Printf("%d triggers from %d clients; manager independent, one job `true` per buildset; %s\n", n, c, benchkit.Machine())
	if pg != nil {
		fmt.Printf("PostgreSQL: %s on a unix socket, settings %q (the rest PostgreSQL's defaults), a fresh database per binary\n", pg.Version, pg.Settings)
	}
	fmt.Printf("%-34s %10s %9s %9s %9s %12s %12s %6s\n", "binary", "accepted/s", "p50 ms", "p99 ms", "max ms", "CPU/trigger", "DB CPU/trig", "errors")
	for i, bin := range list {
		label := bin
		if bin == own {
			label = "this tree"
		}
		for _, store := range []string{"sqlite", "postgres"} {
			if database != "both" && database != store {
				continue
			}
			var db *benchkit.Postgres
			if store == "postgres" {
				db = pg
			}
			r, err := measure(bin, filepath.Join(work, fmt.Sprintf("%d-%s", i, store)), n, c, db)
			if err != nil {
				return fmt.Errorf("%s on %s: %w", label, store, err)
			}
			dbcpu := "-"
			if db != nil {
				dbcpu = fmt.Sprintf("%.2f ms", ms(r.dbcpu))
			}
			fmt.Printf("%-34s %10.0f %9.1f %9.1f %9.1f %9.2f ms %12s %6d\n", label+" ("+store+")", r.rate, ms(r.p50), ms(r.p99), ms(r.max), ms(r.cpu), dbcpu, r.errors)
		}
	}
	return nil
}

type result struct {
	rate          float64
	p50, p99, max time.Duration
	cpu           time.Duration // per accepted trigger
	dbcpu         time.Duration // the PostgreSQL cluster's, per accepted trigger
	errors        int
}

// measure runs the triggers against bin serve on SQLite in its state
// dir, or on a fresh database of pg when pg is not nil.
func measure(bin, dir string, n, c int, pg *benchkit.Postgres) (*result, error) {
	repo := filepath.Join(dir, "repo")
	if err := benchkit.Repo(repo); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "sortie.yaml")
	// independent: every trigger makes a buildset that runs, none is
	// superseded, so that the server does what production does with each.
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`source: {url: %q, branch: main}
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  deploy:
    manager: independent
    jobs: [boot]
`, repo)), 0o644); err != nil {
		return nil, err
	}
	var args []string
	dbcpu := func() (time.Duration, error) { return 0, nil }
	if pg != nil {
		name := "triggers_" + strings.NewReplacer("-", "_", "/", "_").Replace(filepath.Base(dir))
		url, err := pg.NewDatabase(name)
		if err != nil {
			return nil, err
		}
		defer pg.DropDatabase(name)
		args, dbcpu = []string{"--database", url}, pg.CPU
	}
	var log io.Writer
	if serverLog != "" {
		f, err := os.Create(filepath.Join(serverLog, filepath.Base(dir)+".log"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		log = f
	}
	srv, err := benchkit.StartWith(bin, cfg, filepath.Join(dir, "state"), args, log, "SORTIE_TOKENS=bench-token")
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c}, Timeout: time.Minute}
	cpu0, err := srv.CPU()
	if err != nil {
		return nil, err
	}
	db0, err := dbcpu()
	if err != nil {
		return nil, err
	}
	var (
		next     atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		failures int
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range c {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				err := benchkit.Post(client, srv.Base+"/api/v1/pipelines/deploy/trigger", "bench-token", "{}")
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					failures++
					if failures == 1 {
						fmt.Fprintln(os.Stderr, "first error:", err)
					}
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	cpu1, err := srv.CPU()
	if err != nil {
		return nil, err
	}
	db1, err := dbcpu()
	if err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, fmt.Errorf("no trigger accepted")
	}
	slices.Sort(lat)
	return &result{
		rate:   float64(len(lat)) / took.Seconds(),
		p50:    lat[len(lat)/2],
		p99:    lat[min(len(lat)-1, len(lat)*99/100)],
		max:    lat[len(lat)-1],
		cpu:    (cpu1 - cpu0) / time.Duration(len(lat)),
		dbcpu:  (db1 - db0) / time.Duration(len(lat)),
		errors: failures,
	}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
