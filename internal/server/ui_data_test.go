package server

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestLogFollowFrom: ?from=<attempt>:<offset> starts a followed log where
// a page's server-side render stopped, as Last-Event-ID does for a
// reconnecting client (which wins when both are given); LogTail says where
// that is.
func TestLogFollowFrom(t *testing.T) { forEachLogKind(t, testLogFollowFrom) }

func testLogFollowFrom(t *testing.T, opt envOpt) {
	g := newGate(t)
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  talk: {run: 'echo one; echo two; %s; echo three'}
pipelines:
  p: {jobs: [boot, talk]}
`, g.wait()), opt)
	release(t, g)
	id := e.trigger("p", nil)
	ctx := context.Background()
	var tail *LogTail
	waitFor(t, "two lines in the log", func() bool {
		var err error
		tail, err = e.srv.LogTail(ctx, id, "talk", 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(tail.Data), "\n") == 2
	})
	if tail.Attempt != 1 || tail.Done || tail.Start != 0 || tail.Offset != int64(len(tail.Data)) || tail.Size != tail.Offset {
		t.Fatalf("tail = attempt %d done %v start %d offset %d size %d", tail.Attempt, tail.Done, tail.Start, tail.Offset, tail.Size)
	}
	afterOne := int64(strings.Index(string(tail.Data), "\n") + 1)
	// The last bytes only, from a line start.
	last, err := e.srv.LogTail(ctx, id, "talk", 1, tail.Offset-afterOne)
	if err != nil {
		t.Fatal(err)
	}
	if last.Start != afterOne || !strings.HasSuffix(string(last.Data), "| two\n") || strings.Contains(string(last.Data), "one") {
		t.Errorf("tail of the last line: start %d %q", last.Start, last.Data)
	}
	if _, err := e.srv.LogTail(ctx, id, "talk", 2, 100); err == nil {
		t.Errorf("LogTail of attempt 2 of 1: no error")
	}

	follow := func(query, lastID string) chan sseEvent {
		t.Helper()
		rctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(rctx, "GET", e.url+"/api/v1/buildsets/"+id+"/builds/talk/log?follow=1&"+query, nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		ch := make(chan sseEvent, 10)
		go readSSE(bufio.NewReader(resp.Body), ch)
		return ch
	}
	next := func(ch chan sseEvent) sseEvent {
		t.Helper()
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatal("the stream ended")
			}
			return ev
		case <-time.After(20 * time.Second):
			t.Fatal("no event in 20s")
		}
		return sseEvent{}
	}
	fromOne := follow(fmt.Sprintf("from=1:%d", afterOne), "")
	if ev := next(fromOne); ev.event != "" || !strings.HasSuffix(ev.data, "| two") {
		t.Errorf("from the offset after one: %+v, want two", ev)
	}
	// Last-Event-ID, sent by a reconnecting EventSource, wins over ?from.
	fromEnd := follow("from=1:0", fmt.Sprintf("1:%d", tail.Offset))
	g.open(t)
	for _, ch := range []chan sseEvent{fromOne, fromEnd} {
		if ev := next(ch); ev.event != "" || !strings.HasSuffix(ev.data, "| three") {
			t.Errorf("after the gate: %+v, want three", ev)
		}
		if ev := next(ch); ev.event != "end" || ev.data != "SUCCESS" {
			t.Errorf("last: %+v, want end SUCCESS", ev)
		}
	}
	e.waitDone(id)
	done, err := e.srv.LogTail(ctx, id, "talk", 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !done.Done || strings.Count(string(done.Data), "\n") != 3 {
		t.Errorf("after the end: done %v, %q", done.Done, done.Data)
	}
}

// TestHistory: History filters by pipeline, job, result and commit prefix,
// and pages with Next; JobHistory and JobMedian read a job's history.
func TestHistory(t *testing.T) {
	e := start(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: "true"}
  b: {run: "false"}
pipelines:
  p: {jobs: [boot, a]}
  q: {jobs: [boot, b]}
`, envOpt{})
	p1 := e.waitDone(e.trigger("p", nil))
	q1 := e.waitDone(e.trigger("q", nil))
	p2 := e.waitDone(e.trigger("p", nil))
	ctx := context.Background()
	ids := func(q HistoryQuery) ([]string, string) {
		t.Helper()
		page, err := e.srv.History(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range page.Rows {
			out = append(out, r.ID)
		}
		return out, page.Next
	}
	for _, c := range []struct {
		q    HistoryQuery
		want []string
	}{
		{HistoryQuery{}, []string{p2.ID, q1.ID, p1.ID}},
		{HistoryQuery{Pipeline: "q"}, []string{q1.ID}},
		{HistoryQuery{Job: "a"}, []string{p2.ID, p1.ID}},
		{HistoryQuery{Result: "FAILURE"}, []string{q1.ID}},
		// With a job, the result is that build's: boot never failed,
		// though q1 did; b failed in q1.
		{HistoryQuery{Job: "boot", Result: "FAILURE"}, nil},
		{HistoryQuery{Job: "boot", Result: "SUCCESS"}, []string{p2.ID, q1.ID, p1.ID}},
		{HistoryQuery{Job: "b", Result: "FAILURE"}, []string{q1.ID}},
		{HistoryQuery{Commit: p1.Commit[:6]}, []string{p2.ID, q1.ID, p1.ID}},
		{HistoryQuery{Commit: "0000"}, nil},
	} {
		if got, next := ids(c.q); !slices.Equal(got, c.want) || next != "" {
			t.Errorf("History(%+v) = %v next %q, want %v", c.q, got, next, c.want)
		}
	}
	got, next := ids(HistoryQuery{Limit: 2})
	if !slices.Equal(got, []string{p2.ID, q1.ID}) || next != q1.ID {
		t.Errorf("first page: %v next %q", got, next)
	}
	if got, next = ids(HistoryQuery{Limit: 2, Before: next}); !slices.Equal(got, []string{p1.ID}) || next != "" {
		t.Errorf("second page: %v next %q", got, next)
	}
	rows, err := e.srv.JobHistory(ctx, "b", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Build == nil || rows[0].Build.Result != "FAILURE" || rows[0].Build.Log == "" {
		t.Errorf("JobHistory(b) = %+v", rows)
	}
	if _, ok, err := e.srv.JobMedian(ctx, "a"); err != nil || !ok {
		t.Errorf("JobMedian(a): %v %v", ok, err)
	}
	if _, ok, err := e.srv.JobMedian(ctx, "b"); err != nil || ok {
		t.Errorf("JobMedian(b), never successful: %v %v", ok, err)
	}
}
