package observe

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// dashboardPath is deploy/compose/grafana/dashboards/satoru.json of this checkout.
func dashboardPath(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate this test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "compose", "grafana", "dashboards", "satoru.json")
}

// otherServiceMetrics are the metrics registered outside this package by
// services this package cannot import (they import it): the syncer's
// (services/syncer/syncer NewMetrics), the scheduler's
// (services/scheduler/scheduler) and the snapshotter's repository check
// (services/snapshotter/snapshotter NewCheckMetrics). Keep in step with
// those files.
var otherServiceMetrics = []string{
	"satoru_sync_last_success_timestamp_seconds",
	"satoru_sync_last_status_success",
	"satoru_sync_snapshots_pending",
	"satoru_sync_oldest_pending_timestamp_seconds",
	"satoru_sync_snapshots_copied_total",
	"satoru_scheduler_leader",
	"satoru_scheduler_tick_duration_seconds",
	"satoru_scheduler_jobs_queued_total",
	"satoru_scheduler_runs_waiting",
	// services/snapshotter/snapshotter NewCheckMetrics.
	"satoru_repo_check_status",
	"satoru_repo_check_last_success_timestamp_seconds",
	"satoru_repo_check_last_run_timestamp_seconds",
}

// describer is a Registerer that only records the names of the metrics
// registered on it, from their descriptors, so vectors with no series
// yet are seen too.
type describer struct {
	names map[string]bool
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describer) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqName.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
	return nil
}
func (d *describer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}
func (d *describer) Unregister(prometheus.Collector) bool { return true }

// exposedMetrics is every metric name Satoru exposes: this package's
// collectors (as a real registry builds them), the Go and process
// collectors of NewRegistry, and the other services' list. Histograms add
// their _bucket, _sum and _count series.
func exposedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	d := &describer{names: map[string]bool{}}
	NewJobMetrics(d)
	NewPullMetrics(d)
	NewSnapshotMetrics(d)
	NewVerifyMetrics(d)
	NewDiskMetrics(d)
	NewQueueMetrics(d)
	reg := NewRegistry()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		d.names[mf.GetName()] = true
	}
	for _, n := range otherServiceMetrics {
		d.names[n] = true
	}
	out := map[string]bool{}
	for n := range d.names {
		out[n] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			out[n+s] = true
		}
	}
	for _, must := range []string{"satoru_jobs_finished_total", "satoru_site_health", "satoru_disk_free_bytes", "satoru_jobs_pending"} {
		if !out[must] {
			t.Fatalf("collected metric names lack %s; the collection is broken: %v", must, sorted(out))
		}
	}
	return out
}

func sorted(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type dashPanel struct {
	ID      int         `json:"id"`
	Type    string      `json:"type"`
	Title   string      `json:"title"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

var (
	quoted     = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	braces     = regexp.MustCompile(`\{[^}]*\}`)
	brackets   = regexp.MustCompile(`\[[^\]]*\]`)
	grouping   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	identifier = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
)

// metricNames returns the satoru_ metric names a PromQL expression reads.
// Label matchers, ranges and grouping label lists are dropped first, so
// only selectors remain; every Satoru metric is prefixed satoru_.
func metricNames(expr string) []string {
	e := quoted.ReplaceAllString(expr, `""`)
	e = braces.ReplaceAllString(e, "")
	e = brackets.ReplaceAllString(e, "")
	e = grouping.ReplaceAllString(e, "")
	var out []string
	for _, id := range identifier.FindAllString(e, -1) {
		if strings.HasPrefix(id, "satoru_") {
			out = append(out, id)
		}
	}
	return out
}

func TestMetricNamesParser(t *testing.T) {
	got := metricNames(`histogram_quantile(0.95, sum by (type, le) (rate(satoru_jobs_duration_seconds_bucket{type="satoru_x"}[5m]))) / on (satoru_label) satoru_disk_free_bytes`)
	if strings.Join(got, ",") != "satoru_jobs_duration_seconds_bucket,satoru_disk_free_bytes" {
		t.Errorf("metricNames = %q", got)
	}
}

// TestDashboardMetricsExist: every query of the provisioned Grafana
// dashboard reads only metrics Satoru exposes, so a renamed metric breaks
// this test rather than a panel.
func TestDashboardMetricsExist(t *testing.T) {
	b, err := os.ReadFile(dashboardPath(t))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string      `json:"uid"`
		Title  string      `json:"title"`
		Panels []dashPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard needs a uid and a title for provisioning")
	}
	exposed := exposedMetrics(t)
	used := map[string]bool{}
	ids := map[int]bool{}
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				names := metricNames(tg.Expr)
				if len(names) == 0 {
					t.Errorf("panel %q: query %q reads no Satoru metric", p.Title, tg.Expr)
				}
				for _, n := range names {
					used[n] = true
					if !exposed[n] {
						t.Errorf("panel %q: query %q reads %s, which Satoru does not expose", p.Title, tg.Expr, n)
					}
				}
			}
		}
	}
	walk(dash.Panels)
	// The panels the dashboard promises.
	for _, want := range []string{"satoru_site_health", "satoru_site_last_status", "satoru_site_last_success_timestamp_seconds",
		"satoru_jobs_finished_total", "satoru_jobs_duration_seconds_bucket", "satoru_sync_last_success_timestamp_seconds",
		"satoru_disk_free_bytes", "satoru_disk_min_free_bytes"} {
		if !used[want] {
			t.Errorf("no panel reads %s", want)
		}
	}
}
