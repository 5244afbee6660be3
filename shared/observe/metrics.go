package observe

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/disk"
)

// Site outcomes as the site metrics name them (domain.Health values).
const (
	SiteSuccess = "success"
	SiteWarning = "warning"
	SiteFailed  = "failed"
)

var siteOutcomes = []string{SiteSuccess, SiteWarning, SiteFailed}

// SiteMetrics are the per-site backup gauges alerts read. Sites are few
// (an operator registers each), so a site label is bounded.
type SiteMetrics struct {
	// LastSuccess is when the site's last successful backup finished; a
	// backup with warnings does not count, as in site_status.last_success_at.
	LastSuccess *prometheus.GaugeVec
	// LastRun is when the site's last backup finished, whatever its
	// outcome; with several processes the newest one holds the truth.
	LastRun *prometheus.GaugeVec
	// LastStatus is 1 when the last backup made a snapshot (success or
	// warning), 0 when it failed.
	LastStatus *prometheus.GaugeVec
	// Health is one-hot over success, warning and failed.
	Health *prometheus.GaugeVec
}

// NewSiteMetrics registers the site metrics on reg, sharing collectors
// already there.
func NewSiteMetrics(reg prometheus.Registerer) *SiteMetrics {
	m := &SiteMetrics{
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_last_success_timestamp_seconds",
			Help: "When the site's last successful backup finished (Unix time).",
		}, []string{"site"}),
		LastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_last_run_timestamp_seconds",
			Help: "When the site's last backup finished, whatever its outcome (Unix time).",
		}, []string{"site"}),
		LastStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_last_status",
			Help: "1 if the site's last backup made a snapshot (success or warning), 0 if it failed.",
		}, []string{"site"}),
		Health: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_health",
			Help: "Outcome of the site's last backup, one-hot by status (success, warning, failed).",
		}, []string{"site", "status"}),
	}
	m.LastSuccess = Register(reg, m.LastSuccess)
	m.LastRun = Register(reg, m.LastRun)
	m.LastStatus = Register(reg, m.LastStatus)
	m.Health = Register(reg, m.Health)
	return m
}

// Finished records a backup of site that ended with status (a job
// status: success, warning, failed; anything else, such as canceled,
// leaves the gauges alone) at at. A failure always sets the status to
// failed.
func (m *SiteMetrics) Finished(site, status string, at time.Time) {
	if m == nil || site == "" {
		return
	}
	switch status {
	case SiteSuccess, SiteWarning, SiteFailed:
	default:
		return
	}
	ts := unixSeconds(at)
	m.LastRun.WithLabelValues(site).Set(ts)
	ok := 1.0
	if status == SiteFailed {
		ok = 0
	}
	m.LastStatus.WithLabelValues(site).Set(ok)
	for _, s := range siteOutcomes {
		v := 0.0
		if s == status {
			v = 1
		}
		m.Health.WithLabelValues(site, s).Set(v)
	}
	if status == SiteSuccess {
		m.LastSuccess.WithLabelValues(site).Set(ts)
	}
}

// SeedLastSuccess sets a site's last success from the store, so
// staleness alerts survive a restart. Call it before the service takes
// jobs: it overwrites the gauge.
func (m *SiteMetrics) SeedLastSuccess(site string, at time.Time) {
	if m == nil || site == "" || at.IsZero() {
		return
	}
	m.LastSuccess.WithLabelValues(site).Set(unixSeconds(at))
}

// PullMetrics count what the puller moves, by site.
type PullMetrics struct {
	Transferred *prometheus.CounterVec
	Files       *prometheus.CounterVec
	Targets     *prometheus.CounterVec
}

// NewPullMetrics registers the puller's metrics on reg.
func NewPullMetrics(reg prometheus.Registerer) *PullMetrics {
	m := &PullMetrics{
		Transferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_puller_transferred_bytes_total",
			Help: "Bytes transferred from sites into staging, by site.",
		}, []string{"site"}),
		Files: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_puller_files_total",
			Help: "Files in the targets pulled (each pull counts all of its target's files), by site.",
		}, []string{"site"}),
		Targets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_puller_targets_total",
			Help: "Targets pulled, by site and outcome (success, warning, failed).",
		}, []string{"site", "status"}),
	}
	m.Transferred = Register(reg, m.Transferred)
	m.Files = Register(reg, m.Files)
	m.Targets = Register(reg, m.Targets)
	return m
}

// Target records one target's pull.
func (m *PullMetrics) Target(site, status string, transferred, files int64) {
	if m == nil {
		return
	}
	m.Targets.WithLabelValues(site, status).Inc()
	if transferred > 0 {
		m.Transferred.WithLabelValues(site).Add(float64(transferred))
	}
	if files > 0 {
		m.Files.WithLabelValues(site).Add(float64(files))
	}
}

// SnapshotMetrics count what the snapshotter adds to the repository.
type SnapshotMetrics struct {
	DataAdded *prometheus.CounterVec
}

// NewSnapshotMetrics registers the snapshotter's metrics on reg.
func NewSnapshotMetrics(reg prometheus.Registerer) *SnapshotMetrics {
	m := &SnapshotMetrics{
		DataAdded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_snapshotter_data_added_bytes_total",
			Help: "Bytes restic added to the local repository (after deduplication), by site.",
		}, []string{"site"}),
	}
	m.DataAdded = Register(reg, m.DataAdded)
	return m
}

// Snapshot records one snapshot of site.
func (m *SnapshotMetrics) Snapshot(site string, dataAdded int64) {
	if m == nil {
		return
	}
	c := m.DataAdded.WithLabelValues(site) // the series exists from the first snapshot, even with nothing new
	if dataAdded > 0 {
		c.Add(float64(dataAdded))
	}
}

// DiskMetrics report the free space of watched paths at scrape time:
// satoru_disk_free_bytes, satoru_disk_size_bytes and the configured
// headroom satoru_disk_min_free_bytes, by path.
type DiskMetrics struct {
	free, size, min *prometheus.Desc

	mu    sync.Mutex
	paths map[string]disk.Headroom
}

// NewDiskMetrics registers the disk collector on reg.
func NewDiskMetrics(reg prometheus.Registerer) *DiskMetrics {
	d := &DiskMetrics{
		free: prometheus.NewDesc("satoru_disk_free_bytes",
			"Bytes an unprivileged user can still write on the path's filesystem.", []string{"path"}, nil),
		size: prometheus.NewDesc("satoru_disk_size_bytes",
			"Size of the path's filesystem in bytes.", []string{"path"}, nil),
		min: prometheus.NewDesc("satoru_disk_min_free_bytes",
			"Configured headroom: backups refuse to start below this many free bytes.", []string{"path"}, nil),
		paths: map[string]disk.Headroom{},
	}
	return Register(reg, d)
}

// Watch reports path (or, until it exists, its nearest existing parent)
// with the headroom limits a backup checks it against.
func (d *DiskMetrics) Watch(path string, minFreeBytes int64, minFreePercent int) {
	if d == nil || path == "" {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.paths[path] = disk.Headroom{MinFreeBytes: minFreeBytes, MinFreePercent: minFreePercent}
}

// Describe implements prometheus.Collector.
func (d *DiskMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.free
	ch <- d.size
	ch <- d.min
}

// Collect implements prometheus.Collector.
func (d *DiskMetrics) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	paths := make(map[string]disk.Headroom, len(d.paths))
	for p, l := range d.paths {
		paths[p] = l
	}
	d.mu.Unlock()
	for p, h := range paths {
		s, err := disk.Stat(p)
		if err != nil {
			continue // no series beats a wrong one; the headroom check reports the error
		}
		ch <- prometheus.MustNewConstMetric(d.free, prometheus.GaugeValue, float64(s.FreeBytes), p)
		ch <- prometheus.MustNewConstMetric(d.size, prometheus.GaugeValue, float64(s.TotalBytes), p)
		ch <- prometheus.MustNewConstMetric(d.min, prometheus.GaugeValue, float64(h.MinBytes(s.TotalBytes)), p)
	}
}

// QueueMetrics report satoru_jobs_pending{consumer}: messages of a
// durable consumer not yet delivered or not yet acknowledged. Reading it
// costs a JetStream round trip, so a value is reused for QueueCacheFor.
type QueueMetrics struct {
	desc *prometheus.Desc

	mu      sync.Mutex
	sources map[string]*queueSource
	now     func() time.Time
}

// QueueCacheFor is how long a consumer's pending count is reused.
const QueueCacheFor = 5 * time.Second

// PendingFunc returns a consumer's pending count (JetStream's NumPending
// plus NumAckPending).
type PendingFunc func(ctx context.Context) (uint64, error)

type queueSource struct {
	fn  PendingFunc
	at  time.Time
	val uint64
	ok  bool
}

// NewQueueMetrics registers the queue collector on reg.
func NewQueueMetrics(reg prometheus.Registerer) *QueueMetrics {
	q := &QueueMetrics{
		desc: prometheus.NewDesc("satoru_jobs_pending",
			"Job requests waiting in a durable consumer: not yet delivered plus delivered and not yet acknowledged.",
			[]string{"consumer"}, nil),
		sources: map[string]*queueSource{},
		now:     time.Now,
	}
	return Register(reg, q)
}

// Watch reports consumer's pending count read with fn.
func (q *QueueMetrics) Watch(consumer string, fn PendingFunc) {
	if q == nil || fn == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.sources[consumer] = &queueSource{fn: fn}
}

// Describe implements prometheus.Collector.
func (q *QueueMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

// Collect implements prometheus.Collector. A consumer that cannot be read
// is left out rather than reported with an old count.
func (q *QueueMetrics) Collect(ch chan<- prometheus.Metric) {
	q.mu.Lock()
	defer q.mu.Unlock()
	names := make([]string, 0, len(q.sources))
	for n := range q.sources {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := q.sources[n]
		if now := q.now(); !s.ok || now.Sub(s.at) >= QueueCacheFor {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			v, err := s.fn(ctx)
			cancel()
			s.at, s.val, s.ok = now, v, err == nil
		}
		if s.ok {
			ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(s.val), n)
		}
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }
