package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// VerifyMetrics are the per-site gauges of the restore tests (verify
// jobs), for the alert on a failed or overdue verification.
type VerifyMetrics struct {
	// LastVerified is when the site's latest snapshot last restored and
	// checked out intact.
	LastVerified *prometheus.GaugeVec
	// Status is 1 when the site's last verification succeeded, 0 when it
	// failed.
	Status *prometheus.GaugeVec
	// LastRun is when the site's last verification finished, whatever its
	// outcome: with several processes the newest one holds the truth.
	LastRun *prometheus.GaugeVec
}

// NewVerifyMetrics registers the verify metrics on reg, sharing
// collectors already there.
func NewVerifyMetrics(reg prometheus.Registerer) *VerifyMetrics {
	m := &VerifyMetrics{
		LastVerified: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_last_verified_timestamp_seconds",
			Help: "When the site's latest snapshot last restored and checked out intact in a verify job (Unix time).",
		}, []string{"site"}),
		Status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_verify_status",
			Help: "1 if the site's last verify job found its latest snapshot intact, 0 if it failed.",
		}, []string{"site"}),
		LastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_last_verify_run_timestamp_seconds",
			Help: "When the site's last verify job finished, whatever its outcome (Unix time).",
		}, []string{"site"}),
	}
	m.LastVerified = Register(reg, m.LastVerified)
	m.Status = Register(reg, m.Status)
	m.LastRun = Register(reg, m.LastRun)
	return m
}

// Verified records a finished verification of site at at.
func (m *VerifyMetrics) Verified(site string, ok bool, at time.Time) {
	if m == nil || site == "" {
		return
	}
	m.LastRun.WithLabelValues(site).Set(unixSeconds(at))
	if ok {
		m.Status.WithLabelValues(site).Set(1)
		m.LastVerified.WithLabelValues(site).Set(unixSeconds(at))
		return
	}
	m.Status.WithLabelValues(site).Set(0)
}

// Seed sets a site's gauges from its stored status (lastRun: when the
// last verify finished, nil for none), so an overdue or failed
// verification stays visible across a restart.
func (m *VerifyMetrics) Seed(site string, lastVerified, lastRun *time.Time, lastOK *bool) {
	if m == nil || site == "" {
		return
	}
	if lastRun != nil && !lastRun.IsZero() {
		m.LastRun.WithLabelValues(site).Set(unixSeconds(*lastRun))
	}
	if lastVerified != nil && !lastVerified.IsZero() {
		m.LastVerified.WithLabelValues(site).Set(unixSeconds(*lastVerified))
	}
	if lastOK != nil {
		v := 0.0
		if *lastOK {
			v = 1
		}
		m.Status.WithLabelValues(site).Set(v)
	}
}
