package scheduler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/policy"
)

// policyMetrics tell the alert rules what each site's policy expects, so
// a paused site, or one backed up weekly, does not count as stale. The
// leader sets them every tick; an instance that stops leading clears them,
// so only the leader's values are seen.
type policyMetrics struct {
	paused   *prometheus.GaugeVec
	expected *prometheus.GaugeVec
	known    map[string]bool
}

func newPolicyMetrics(reg prometheus.Registerer) *policyMetrics {
	m := &policyMetrics{
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_paused",
			Help: "1 while the site's policy pauses its scheduled jobs (set by the scheduler leader).",
		}, []string{"site"}),
		expected: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_site_backup_expected_interval_seconds",
			Help: "Longest time the site's backups are expected to be apart: its schedule's interval (or longest cron gap) plus its longest maintenance window (set by the scheduler leader).",
		}, []string{"site"}),
		known: map[string]bool{},
	}
	if reg != nil {
		m.paused = observe.Register(reg, m.paused)
		m.expected = observe.Register(reg, m.expected)
	}
	return m
}

// set records every site's values and drops those of sites gone.
func (m *policyMetrics) set(sites []string, pols map[string]policy.Compiled, global time.Duration, now time.Time) {
	seen := make(map[string]bool, len(sites))
	for _, site := range sites {
		seen[site] = true
		pol := pols[site]
		paused := 0.0
		if pol.Paused {
			paused = 1
		}
		m.paused.WithLabelValues(site).Set(paused)
		m.expected.WithLabelValues(site).Set(pol.ExpectedGap(now, global).Seconds())
	}
	for site := range m.known {
		if !seen[site] {
			m.paused.DeleteLabelValues(site)
			m.expected.DeleteLabelValues(site)
		}
	}
	m.known = seen
}

// reset drops every site's values (this instance no longer leads).
func (m *policyMetrics) reset() {
	m.paused.Reset()
	m.expected.Reset()
	m.known = map[string]bool{}
}
