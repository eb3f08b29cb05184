package server

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/report"
	"github.com/sortie-ci/sortie/internal/store"
)

// ReportJSON is one report delivery of a buildset: to which reporter, of
// which event, how far it got. Its error is the receiver's, redacted; it
// holds no secret.
type ReportJSON struct {
	ID       string `json:"id"`
	Reporter string `json:"reporter"`
	Type     string `json:"type"`
	Event    string `json:"event"`
	// State is pending, delivered or failed (given up).
	State     string        `json:"state"`
	Tries     int           `json:"tries"`
	LastError string        `json:"last_error"`
	CreatedAt buildset.Time `json:"created_at"`
	// NextTryAt is when a pending delivery is tried next; null otherwise.
	NextTryAt buildset.Time `json:"next_try_at"`
	LastTryAt buildset.Time `json:"last_try_at"`
	// DoneAt is when it was delivered or given up on.
	DoneAt buildset.Time `json:"done_at"`
}

func (s *Server) getReports(w http.ResponseWriter, r *http.Request) {
	list, err := s.Reports(r.Context(), r.PathValue("id"))
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Reports []ReportJSON `json:"reports"`
	}{list})
}

// Reports lists a buildset's report deliveries in the order they were
// recorded (GET /api/v1/buildsets/{id}/reports).
func (s *Server) Reports(ctx context.Context, id string) ([]ReportJSON, error) {
	ds, err := s.reads.ReportDeliveries(ctx, id)
	if err != nil {
		return nil, noBuildset(err, id)
	}
	out := []ReportJSON{}
	for _, d := range ds {
		var target buildset.ReporterSpec
		json.Unmarshal(d.Target, &target) // a type left blank says it could not be read
		j := ReportJSON{
			ID: d.ID, Reporter: d.Reporter, Type: target.Type, Event: d.Event, State: string(d.State), Tries: d.Tries,
			LastError: d.LastError, CreatedAt: buildset.TimeOf(&d.CreatedAt), LastTryAt: buildset.TimeOf(d.LastTryAt),
			DoneAt: buildset.TimeOf(d.DoneAt),
		}
		if d.State == store.DeliveryPending {
			next := d.NextAt
			j.NextTryAt = buildset.TimeOf(&next)
		}
		out = append(out, j)
	}
	return out, nil
}

// newReportWorker makes the worker that sends the outbox's deliveries,
// counted in the metrics.
func (s *Server) newReportWorker() (*report.Worker, error) {
	return report.New(report.Options{
		Store: s.st, Name: s.owner, Getenv: s.opt.Getenv, Subjects: s.opt.Mirror, Log: s.log,
		OnTry: func(tr report.Try) {
			s.metrics.reports.WithLabelValues(tr.Delivery.Reporter, string(tr.Outcome)).Inc()
		},
	})
}

// outboxCollector reads the outbox's pending deliveries from the store at
// each scrape: every node shows the whole cluster's.
type outboxCollector struct {
	st      store.Outbox
	pending *prometheus.Desc
	oldest  *prometheus.Desc
}

func newOutboxCollector(st store.Outbox) *outboxCollector {
	return &outboxCollector{
		st: st,
		pending: prometheus.NewDesc("sortie_report_deliveries_pending",
			"Report deliveries not delivered yet, nor given up on.", nil, nil),
		oldest: prometheus.NewDesc("sortie_report_oldest_pending_seconds",
			"Age of the oldest pending report delivery; 0 when none is pending.", nil, nil),
	}
}

func (c *outboxCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.oldest
}

func (c *outboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.st.ReportDeliveryStats(ctx)
	if err != nil {
		// Missing for this scrape, rather than failing the whole of it.
		return
	}
	age := 0.0
	if st.OldestPending != nil {
		age = max(time.Since(*st.OldestPending).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
}
