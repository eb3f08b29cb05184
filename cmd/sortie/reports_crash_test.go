package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/testport"
)

// hookLog is a webhook receiver that takes the deliveries signed with
// secret, refuses (503, come back in a second) those signed with
// downSecret, and counts what it got. A server signs with the secret of
// its own environment when it sends: one started with downSecret finds
// the receiver down, one started with secret finds it up, whatever the
// moment at which one stops and the other starts.
type hookLog struct {
	t                  *testing.T
	secret, downSecret string

	mu sync.Mutex
	// tries counts the requests of each delivery, refused or taken;
	// taken counts those taken; order lists "buildset event" as taken.
	tries, taken map[string]int
	order        []string
	changed      chan struct{}
}

func newHookLog(t *testing.T, secret, downSecret string) *hookLog {
	return &hookLog{t: t, secret: secret, downSecret: downSecret, tries: map[string]int{}, taken: map[string]int{}, changed: make(chan struct{}, 1)}
}

// signedWith says whether the request's signature is body's with secret.
func signedWith(r *http.Request, body []byte, secret string) bool {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal([]byte(r.Header.Get("X-Sortie-Signature-256")), []byte("sha256="+hex.EncodeToString(mac.Sum(nil))))
}

func (h *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	accept := signedWith(r, body, h.secret)
	if !accept && !signedWith(r, body, h.downSecret) {
		h.t.Errorf("a delivery signed with neither secret: %s", body)
	}
	var b struct{ ID, Event string }
	json.Unmarshal(body, &b)
	id := r.Header.Get("X-Sortie-Delivery")
	h.mu.Lock()
	defer h.mu.Unlock()
	defer func() {
		select {
		case h.changed <- struct{}{}:
		default:
		}
	}()
	h.tries[id]++
	if !accept {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	h.taken[id]++
	h.order = append(h.order, b.ID+" "+b.Event)
	w.WriteHeader(http.StatusNoContent)
}

// waitUntil waits until cond, read under the lock, holds.
func (h *hookLog) waitUntil(t *testing.T, what, logPath string, cond func() bool) {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		h.mu.Lock()
		ok := cond()
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-h.changed:
		case <-deadline:
			log, _ := os.ReadFile(logPath)
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("the receiver: timed out waiting until %s; tries %v, taken %v\n%s", what, h.tries, h.taken, tail(string(log), 4000))
		}
	}
}

// TestReportsSurviveKill: a server whose webhook receiver is down records
// its buildsets' deliveries and keeps them pending; killed with SIGKILL
// and started again once the receiver is back, it delivers every one, each
// once (the receiver took none before), in order per buildset, with the
// X-Sortie-Delivery ids recorded (and, for the starts, tried) before the
// kill. The receiver is down for the first server and up for the second
// by the secret each signs with (hookLog): a retry the first sends just
// before the kill is refused, as it would be if the receiver came back
// only after it.
func TestReportsSurviveKill(t *testing.T) {
	const (
		buildsets  = 3
		downSecret = "crash-hook-secret"
		secret     = "crash-hook-secret-2"
	)
	hook := newHookLog(t, secret, downSecret)
	recv := httptest.NewServer(hook)
	defer recv.Close()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir, state := t.TempDir(), t.TempDir()
	cfgPath := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %q, branch: main}
reporters:
  hook: {type: webhook, url: %q, secret_env: HOOK_SECRET}
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: "true"}
pipelines:
  deploy: {manager: independent, jobs: [boot, a], report: {start: [hook], success: [hook]}}
`, repo, recv.URL))
	addr := testport.Addr(t)
	logPath := filepath.Join(dir, "serve.log")
	env := []string{"SORTIE_TOKENS=crash-token", "HOOK_SECRET=" + downSecret}
	args := []string{"--config", cfgPath, "--state-dir", state}
	srv := startServe(t, addr, logPath, env, args...)
	defer func() { srv.stop(t) }()

	var ids []string
	for range buildsets {
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/pipelines/deploy/trigger", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer crash-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var r struct{ Buildset string }
		json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("trigger: %d", resp.StatusCode)
		}
		ids = append(ids, r.Buildset)
	}
	// Every buildset ends, its reporter down: its start and success are
	// recorded, the start tried (and refused), the success waiting for it.
	type reports struct {
		Reports []struct {
			ID, Event, State string
			Tries            int
		}
	}
	recorded := map[string]bool{}
	deadline := time.Now().Add(time.Minute)
	for _, id := range ids {
		for {
			bs := getJSON[apiBuildset](t, addr, "/api/v1/buildsets/"+id)
			r := getJSON[reports](t, addr, "/api/v1/buildsets/"+id+"/reports")
			if bs.State == "DONE" && len(r.Reports) == 2 && r.Reports[0].Tries > 0 {
				if bs.Result != "SUCCESS" {
					t.Fatalf("buildset %s: %s: a reporter that is down changed its result", id, bs.Result)
				}
				for _, d := range r.Reports {
					if d.State != "pending" {
						t.Fatalf("buildset %s: %+v delivered to a receiver that is down", id, d)
					}
					recorded[d.ID] = true
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("buildset %s: %s %s, reports %+v", id, bs.State, bs.Result, r.Reports)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	srv.kill()
	env[1] = "HOOK_SECRET=" + secret // the receiver is back
	srv = startServe(t, addr, logPath, env, args...)

	hook.waitUntil(t, "every delivery was taken", logPath, func() bool { return len(hook.taken) == 2*buildsets })
	hook.mu.Lock()
	for id, n := range hook.taken {
		if !recorded[id] {
			t.Errorf("delivery %s was not recorded before the kill: a new id for the same report", id)
		}
		if n != 1 {
			t.Errorf("delivery %s taken %d times, want once", id, n)
		}
	}
	seen := map[string]string{}
	for _, o := range hook.order {
		bs, ev, _ := strings.Cut(o, " ")
		if want := map[string]string{"": "start", "start": "success"}[seen[bs]]; ev != want {
			t.Errorf("buildset %s: %s after %q, want %s", bs, ev, seen[bs], want)
		}
		seen[bs] = ev
	}
	hook.mu.Unlock()
	// The server records each outcome after the receiver has answered.
	deadline = time.Now().Add(time.Minute)
	for _, id := range ids {
		for {
			r := getJSON[reports](t, addr, "/api/v1/buildsets/"+id+"/reports")
			if len(r.Reports) == 2 && r.Reports[0].State == "delivered" && r.Reports[1].State == "delivered" {
				if r.Reports[0].Tries < 2 {
					t.Errorf("reports of %s: %+v; want the start tried before the kill and after", id, r.Reports)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reports of %s after the restart: %+v", id, r.Reports)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if log, _ := os.ReadFile(logPath); strings.Contains(string(log), secret) {
		t.Error("the secret is in the server's log")
	}
}

// getJSON reads an API resource.
func getJSON[T any](t *testing.T, addr, path string) T {
	t.Helper()
	var v T
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return v
}
