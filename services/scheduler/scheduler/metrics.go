package scheduler

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/observe"
)

// metrics are the scheduler's series. Only the leader's ticks count.
type metrics struct {
	leader   prometheus.Gauge
	duration prometheus.Histogram
	queued   *prometheus.CounterVec
	waiting  prometheus.Gauge
	lost     prometheus.Counter
	failed   prometheus.Counter
	errors   prometheus.Counter
	lastTick prometheus.Gauge

	historyDeleted  *prometheus.CounterVec
	historyErrors   prometheus.Counter
	historyLastPass prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "satoru_scheduler_leader",
			Help: "1 while this scheduler instance holds the leader lease.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "satoru_scheduler_tick_duration_seconds",
			Help:    "Wall time of the leader's ticks.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		queued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_scheduler_jobs_queued_total",
			Help: "Jobs the scheduler queued, by type.",
		}, []string{"type"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "satoru_scheduler_runs_waiting",
			Help: "Due runs held back at the last tick because their site had a job queued or running.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "satoru_scheduler_runs_lost_total",
			Help: "Due runs another scheduler had already queued (a guard behind the leader lease caught them).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "satoru_scheduler_runs_failed_total",
			Help: "Due runs that could not be queued at a tick (retried on the next).",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "satoru_scheduler_tick_errors_total",
			Help: "Leader ticks that ended with an error.",
		}),
		lastTick: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "satoru_scheduler_last_tick_timestamp_seconds",
			Help: "When the leader last finished a tick without error.",
		}),
		historyDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_history_deleted_total",
			Help: "What the history pass deleted (history_retention_days): kind=jobs counts jobs, kind=events their job_events documents, kind=audit audit entries (audit_retention_days).",
		}, []string{"kind"}),
		historyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "satoru_history_errors_total",
			Help: "History pass steps that failed (the pass goes on at the next tick).",
		}),
		historyLastPass: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "satoru_history_last_pass_timestamp_seconds",
			Help: "When the leader last finished a whole history pass.",
		}),
	}
	m.historyDeleted.WithLabelValues("jobs")
	m.historyDeleted.WithLabelValues("events")
	for _, t := range []domain.JobType{domain.JobBackup, domain.JobRetention, domain.JobResticSync, domain.JobCheck, domain.JobVerify} {
		m.queued.WithLabelValues(string(t))
	}
	if reg == nil {
		return m
	}
	m.leader = observe.Register(reg, m.leader)
	m.duration = observe.Register(reg, m.duration)
	m.queued = observe.Register(reg, m.queued)
	m.waiting = observe.Register(reg, m.waiting)
	m.lost = observe.Register(reg, m.lost)
	m.failed = observe.Register(reg, m.failed)
	m.errors = observe.Register(reg, m.errors)
	m.lastTick = observe.Register(reg, m.lastTick)
	m.historyDeleted = observe.Register(reg, m.historyDeleted)
	m.historyErrors = observe.Register(reg, m.historyErrors)
	m.historyLastPass = observe.Register(reg, m.historyLastPass)
	return m
}

func (m *metrics) observe(r TickResult, err error) {
	m.duration.Observe(r.Took.Seconds())
	for t, n := range r.Queued {
		m.queued.WithLabelValues(string(t)).Add(float64(n))
	}
	m.waiting.Set(float64(r.Waiting))
	m.lost.Add(float64(r.Lost))
	m.failed.Add(float64(r.Failed))
	if err != nil {
		m.errors.Inc()
		return
	}
	m.lastTick.SetToCurrentTime()
}
