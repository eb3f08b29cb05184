// Command webhookflood measures the memory of `sortie serve` under a flood
// of unauthenticated webhook deliveries: N concurrent POSTs to
// /webhooks/github, each with a body of SIZE bytes and a signature header of
// the right form but the wrong MAC, so that the server has to read every
// body to refuse it (docs/benchmarks.md). It builds sortie, starts
// `sortie serve` on a fresh state dir with a GitHub webhook configured,
// sends the deliveries all at once, and prints the server's resident memory
// before the flood and at its peak (VmHWM, from /proc), with the statuses
// the deliveries got. It measures; it asserts nothing.
//
//	go run ./bench/webhookflood -n 300 -size 26214400
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sortie-ci/sortie/bench/internal/benchkit"
)

func main() {
	n := flag.Int("n", 300, "concurrent deliveries")
	size := flag.Int64("size", 25<<20, "bytes of each delivery's body")
	chunked := flag.Bool("chunked", false, "send the bodies without a Content-Length")
	flag.Parse()
	if err := run(*n, *size, *chunked); err != nil {
		fmt.Fprintln(os.Stderr, "webhookflood:", err)
		os.Exit(1)
	}
}

func run(n int, size int64, chunked bool) error {
	work, bin, repo, cleanup, err := benchkit.Setup("sortie-webhookflood-")
	if err != nil {
		return err
	}
	defer cleanup()
	cfg := filepath.Join(work, "sortie.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`source: {url: %q, branch: main}
webhooks:
  github: {secret_env: GH_SECRET}
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  deploy:
    trigger: {push: {branch: main}}
    jobs: [boot]
`, repo)), 0o644); err != nil {
		return err
	}
	srv, err := benchkit.Start(bin, cfg, filepath.Join(work, "state"), nil, "GH_SECRET=bench-secret", "SORTIE_TOKENS=bench-token")
	if err != nil {
		return err
	}
	defer srv.Stop()
	base := srv.Base
	before, err := srv.Memory("VmRSS")
	if err != nil {
		return err
	}

	tr := &http.Transport{DisableKeepAlives: true, MaxConnsPerHost: 0}
	client := &http.Client{Transport: tr}
	var (
		mu       sync.Mutex
		statuses = map[string]int{}
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status := deliver(client, base, size, chunked)
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	peak, err := srv.Memory("VmHWM")
	if err != nil {
		return err
	}
	after, err := srv.Memory("VmRSS")
	if err != nil {
		return err
	}
	var keys []string
	for k := range statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, statuses[k]))
	}
	how := "Content-Length"
	if chunked {
		how = "chunked"
	}
	fmt.Printf("%d deliveries of %d bytes (%s), wrong MAC: %s in %v\n", n, size, how, strings.Join(parts, ", "), took.Round(time.Millisecond))
	fmt.Printf("sortie serve RSS: %.0f MB before, %.0f MB peak (VmHWM), %.0f MB after\n", mb(before), mb(peak), mb(after))
	return nil
}

// deliver sends one delivery whose MAC is wrong, and returns its status,
// or what went wrong.
func deliver(client *http.Client, base string, size int64, chunked bool) string {
	var body io.Reader = io.LimitReader(zeros{}, size)
	if chunked {
		body = io.MultiReader(body) // hides the length from the client
	}
	req, err := http.NewRequest("POST", base+"/webhooks/github", body)
	if err != nil {
		return err.Error()
	}
	if !chunked {
		req.ContentLength = size
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "flood")
	req.Header.Set("X-Hub-Signature-256", "sha256="+strings.Repeat("0", 64))
	resp, err := client.Do(req)
	if err != nil {
		// A server that answers without reading the body (a 503 when the
		// budget is full) closes the connection under the client's feet.
		switch {
		case errors.Is(err, syscall.ECONNRESET):
			return "connection reset while sending"
		case errors.Is(err, syscall.EPIPE):
			return "connection closed while sending"
		}
		return "error: " + err.Error()
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return strconv.Itoa(resp.StatusCode)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func mb(b int64) float64 { return float64(b) / 1e6 }
