package server

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sortie-ci/sortie/internal/ansible"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/coordinator"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

// metrics are the server's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg *prometheus.Registry

	buildsets        *prometheus.CounterVec
	buildsetDuration *prometheus.HistogramVec
	buildsetWait     *prometheus.HistogramVec
	builds           *prometheus.CounterVec
	buildDuration    *prometheus.HistogramVec
	running          prometheus.Gauge
	queue            *prometheus.GaugeVec
	holders          *prometheus.GaugeVec
	waiters          *prometheus.GaugeVec
	semaphoreWait    *prometheus.HistogramVec
	reloads          *prometheus.CounterVec
	reports          *prometheus.CounterVec
	hosts            *prometheus.CounterVec
	leader           prometheus.Gauge
	elections        prometheus.Counter
}

func newMetrics() *metrics {
	buckets := []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		buildsets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sortie_buildsets_total", Help: "Buildsets finished, by pipeline and result.",
		}, []string{"pipeline", "result"}),
		buildsetDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sortie_buildset_duration_seconds", Help: "Time from a buildset's first build to its end.", Buckets: buckets,
		}, []string{"pipeline"}),
		buildsetWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sortie_buildset_wait_seconds", Help: "Time from a buildset's creation to its start (managers and pipeline semaphore).", Buckets: buckets,
		}, []string{"pipeline"}),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sortie_builds_total", Help: "Builds finished, by pipeline, job and result.",
		}, []string{"pipeline", "job", "result"}),
		buildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sortie_build_duration_seconds", Help: "Time from a build's first attempt to its end.", Buckets: buckets,
		}, []string{"pipeline", "job"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sortie_builds_running", Help: "Attempts running now: executor slots in use.",
		}),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sortie_queue_length", Help: "Buildsets waiting for their pipeline's manager.",
		}, []string{"pipeline"}),
		holders: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sortie_semaphore_holders", Help: "Holders of each semaphore.",
		}, []string{"semaphore"}),
		semaphoreWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sortie_semaphore_wait_seconds", Help: "Time from a request for a semaphore (a job ready to start, a buildset admitted by its manager) to its grant.",
			Buckets: append([]float64{0.1}, buckets...),
		}, []string{"semaphore"}),
		waiters: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sortie_semaphore_waiters", Help: "Requests waiting for each semaphore.",
		}, []string{"semaphore"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sortie_config_reloads_total", Help: "Config reloads, by outcome (ok, refused).",
		}, []string{"outcome"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sortie_report_deliveries_total", Help: "Tries of report deliveries made here, by reporter and outcome (delivered, retry, failed: given up).",
		}, []string{"reporter", "outcome"}),
		hosts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sortie_ansible_hosts_total",
			Help: "Hosts Ansible reported on at the end of an attempt, by pipeline, job and outcome: reported (all of them), changed, failed, unreachable (a host counts in each that its recap has).",
		}, []string{"pipeline", "job", "outcome"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sortie_cluster_leader", Help: "1 while this server leads the servers sharing its store (managers, cron, polling, reaping), else 0.",
		}),
		elections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sortie_leader_elections_total", Help: "Terms this server was elected leader for.",
		}),
	}
	m.reg.MustRegister(m.leader, m.elections, m.buildsets, m.buildsetDuration, m.buildsetWait, m.builds, m.buildDuration,
		m.running, m.queue, m.holders, m.waiters, m.semaphoreWait, m.reloads, m.reports, m.hosts,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) buildsetDone(pipeline string, result store.Result) {
	if result != "" {
		m.buildsets.WithLabelValues(pipeline, string(result)).Inc()
	}
}

func (m *metrics) reload(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("refused").Inc()
	}
}

// queues sets the queue length of every pipeline of cfg.
func (m *metrics) queues(cfg *config.Config, queued map[string]int) {
	m.queue.Reset()
	for _, name := range cfg.PipelineNames() {
		m.queue.WithLabelValues(name).Set(float64(queued[name]))
	}
}

// granted records how long a granted request waited, per semaphore
// (semaphore.Client.OnGrant).
func (m *metrics) granted(semaphores []string, waited time.Duration) {
	for _, name := range semaphores {
		m.semaphoreWait.WithLabelValues(name).Observe(waited.Seconds())
	}
}

// semaphores counts holders and waiters from the store.
func (m *metrics) semaphores(ctx context.Context, st store.Semaphores) {
	hs, err := st.Holders(ctx)
	if err != nil {
		return
	}
	ws, err := st.Waiters(ctx)
	if err != nil {
		return
	}
	m.holders.Reset()
	m.waiters.Reset()
	for _, h := range hs {
		m.holders.WithLabelValues(h.Semaphore).Inc()
	}
	for _, w := range ws {
		m.waiters.WithLabelValues(w.Semaphore).Inc()
	}
}

// coordObserver feeds the metrics from the coordinator
// (coordinator.Observer).
type coordObserver struct {
	m  *metrics
	st store.Semaphores
}

// Passed sets the queue lengths, and counts the semaphores' holders and
// waiters, after each pass of the managers.
func (o coordObserver) Passed(ctx context.Context, cfg *config.Config, queued map[string]int) {
	o.m.queues(cfg, queued)
	o.m.semaphores(ctx, o.st)
}

// Launched observes a run.
func (o coordObserver) Launched(bs *store.Buildset) coordinator.RunObserver { return o.m.observer(bs) }

// Leading keeps sortie_cluster_leader and counts the terms begun.
func (o coordObserver) Leading(term int64, leading bool) {
	if leading {
		o.m.leader.Set(1)
		o.m.elections.Inc()
		return
	}
	o.m.leader.Set(0)
}

// observer is a buildset.Observer feeding the metrics for one buildset.
func (m *metrics) observer(bs *store.Buildset) *observer {
	return &observer{m: m, bs: bs, started: map[string]time.Time{}, running: map[string]bool{}}
}

type observer struct {
	m  *metrics
	bs *store.Buildset

	mu      sync.Mutex
	start   time.Time
	started map[string]time.Time
	running map[string]bool
}

func (o *observer) BuildsetStarted(bs *store.Buildset, _ *graph.Plan) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.start = time.Now()
	if bs.State != store.BuildsetRunning {
		o.m.buildsetWait.WithLabelValues(bs.Pipeline).Observe(time.Since(bs.CreatedAt).Seconds())
	}
}

func (o *observer) AttemptStarted(job string, attempt int, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.started[job]; !ok {
		o.started[job] = at
	}
	if !o.running[job] {
		o.running[job] = true
		o.m.running.Inc()
	}
}

func (o *observer) BuildFinished(job string, result store.Result, _ string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.m.builds.WithLabelValues(o.bs.Pipeline, job, string(result)).Inc()
	if s, ok := o.started[job]; ok {
		o.m.buildDuration.WithLabelValues(o.bs.Pipeline, job).Observe(at.Sub(s).Seconds())
	}
	if o.running[job] {
		delete(o.running, job)
		o.m.running.Dec()
	}
}

// HostsRecorded counts the hosts an attempt's Ansible runs reported on
// (buildset.HostsObserver).
func (o *observer) HostsRecorded(job string, _ int, out ansible.Outcome) {
	for outcome, n := range map[string]int{"reported": out.Hosts, "changed": out.Changed, "failed": out.Failed, "unreachable": out.Unreachable} {
		o.m.hosts.WithLabelValues(o.bs.Pipeline, job, outcome).Add(float64(n))
	}
}

// Done observes the buildset's duration and frees the slots it still
// counted (a drained run).
func (o *observer) Done() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.start.IsZero() {
		o.m.buildsetDuration.WithLabelValues(o.bs.Pipeline).Observe(time.Since(o.start).Seconds())
	}
	for range o.running {
		o.m.running.Dec()
	}
	o.running = map[string]bool{}
}
