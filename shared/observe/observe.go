// Package observe sets up structured logging and the Prometheus registry
// with the metrics every service shares.
package observe

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewLogger returns a slog logger at level ("debug", "info", "warn",
// "error") in format "text" or "json".
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("observe: log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("observe: log format %q: want text or json", format)
}

// Version is the build's module version, or "devel".
func Version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// NewRegistry returns a registry with Go runtime, process and build info
// collectors. Each process has one; in `satoru up` every service shares it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "satoru_build_info",
			Help:        "Build information; always 1.",
			ConstLabels: prometheus.Labels{"version": Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}

// JobMetrics count jobs by type and outcome.
type JobMetrics struct {
	Finished *prometheus.CounterVec
	Duration *prometheus.HistogramVec
	Running  *prometheus.GaugeVec
	// Retries counts job attempts after the first (a redelivered job
	// whose worker died), by type.
	Retries *prometheus.CounterVec
	// Steps times each step of a job (queue, preflight, pull, handoff,
	// snapshot, finish, ...), by job type and step, so a slow step shows
	// in Grafana on its own.
	Steps *prometheus.HistogramVec
	// Sites hold each site's last backup outcome.
	Sites *SiteMetrics
}

// NewJobMetrics registers the job metrics on reg. A second call on the
// same registry returns the already registered collectors, so services
// sharing a registry share the series.
func NewJobMetrics(reg prometheus.Registerer) *JobMetrics {
	m := &JobMetrics{
		Finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_jobs_finished_total",
			Help: "Jobs finished, by type and final status.",
		}, []string{"type", "status"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "satoru_jobs_duration_seconds",
			Help:    "Wall time of finished job attempts, by type.",
			Buckets: []float64{0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200},
		}, []string{"type"}),
		Running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "satoru_jobs_running",
			Help: "Jobs running in this process, by type.",
		}, []string{"type"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_jobs_retries_total",
			Help: "Job attempts after the first (the previous worker stopped or died), by type.",
		}, []string{"type"}),
		Steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "satoru_job_step_seconds",
			Help:    "Wall time of each step of a job (queue, preflight, pull, handoff, snapshot, finish, ...), by job type and step.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"type", "step"}),
		Sites: NewSiteMetrics(reg),
	}
	m.Finished = Register(reg, m.Finished)
	m.Duration = Register(reg, m.Duration)
	m.Running = Register(reg, m.Running)
	m.Retries = Register(reg, m.Retries)
	m.Steps = Register(reg, m.Steps)
	return m
}

// Register registers c on reg, or returns the collector of the same kind
// already registered there under its name: services that share one
// registry (satoru up), or a second constructor call, share the series
// instead of failing. Any other registration error is a programming
// error (two metrics of one name with different labels or help), which
// every test that builds the metrics finds, so it panics.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(fmt.Sprintf("observe: register metric: %v", err))
	}
	return c
}
