package observe

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSiteMetricsFinished(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewSiteMetrics(reg)
	t1 := time.Unix(1_700_000_000, 0)
	t2 := t1.Add(time.Hour)
	t3 := t2.Add(time.Hour)

	m.Finished("s1", SiteSuccess, t1)
	m.Finished("s1", SiteFailed, t2)
	if got := testutil.ToFloat64(m.LastStatus.WithLabelValues("s1")); got != 0 {
		t.Errorf("last status after a failure = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.LastSuccess.WithLabelValues("s1")); got != float64(t1.Unix()) {
		t.Errorf("last success = %v, want %v (a failure keeps it)", got, t1.Unix())
	}
	if got := testutil.ToFloat64(m.LastRun.WithLabelValues("s1")); got != float64(t2.Unix()) {
		t.Errorf("last run = %v, want %v", got, t2.Unix())
	}
	for status, want := range map[string]float64{SiteSuccess: 0, SiteWarning: 0, SiteFailed: 1} {
		if got := testutil.ToFloat64(m.Health.WithLabelValues("s1", status)); got != want {
			t.Errorf("health %s = %v, want %v", status, got, want)
		}
	}

	// A warning makes a snapshot: status ok, but not a success.
	m.Finished("s1", SiteWarning, t3)
	if got := testutil.ToFloat64(m.LastStatus.WithLabelValues("s1")); got != 1 {
		t.Errorf("last status after a warning = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.LastSuccess.WithLabelValues("s1")); got != float64(t1.Unix()) {
		t.Errorf("a warning moved last success to %v", got)
	}
	// Canceled (or any other status) leaves everything alone.
	m.Finished("s1", "canceled", t3.Add(time.Hour))
	if got := testutil.ToFloat64(m.LastRun.WithLabelValues("s1")); got != float64(t3.Unix()) {
		t.Errorf("a canceled backup moved last run to %v", got)
	}
	if problems, err := testutil.CollectAndLint(m.Health); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestSharedRegistryShareSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, b := NewJobMetrics(reg), NewJobMetrics(reg)
	if a.Retries != b.Retries || a.Sites.LastStatus != b.Sites.LastStatus {
		t.Fatal("two services on one registry got different collectors")
	}
	if NewPullMetrics(reg).Transferred != NewPullMetrics(reg).Transferred ||
		NewSnapshotMetrics(reg).DataAdded != NewSnapshotMetrics(reg).DataAdded ||
		NewDiskMetrics(reg) != NewDiskMetrics(reg) || NewQueueMetrics(reg) != NewQueueMetrics(reg) {
		t.Fatal("collectors not shared")
	}
	NewPullMetrics(reg).Target("s1", "success", 100, 3)
	NewPullMetrics(reg).Target("s1", "failed", 0, 0)
	NewSnapshotMetrics(reg).Snapshot("s1", 0)
	a.Retries.WithLabelValues("backup").Inc()
	if got := testutil.ToFloat64(b.Retries.WithLabelValues("backup")); got != 1 {
		t.Errorf("retries seen through the second service = %v, want 1", got)
	}
	n, err := testutil.GatherAndCount(reg, "satoru_puller_transferred_bytes_total", "satoru_puller_targets_total",
		"satoru_snapshotter_data_added_bytes_total")
	if err != nil || n != 4 {
		t.Fatalf("series = %d (%v), want 4", n, err)
	}
}

func TestDiskMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := NewDiskMetrics(reg)
	dir := t.TempDir()
	notYet := filepath.Join(dir, "staging", "not", "created")
	d.Watch(notYet, 1, 50)
	d.Watch(dir, 1<<62, 0)
	d.Watch("", 1, 1) // ignored
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if vals[mf.GetName()] == nil {
				vals[mf.GetName()] = map[string]float64{}
			}
			vals[mf.GetName()][m.Label[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	free, size, lim := vals["satoru_disk_free_bytes"], vals["satoru_disk_size_bytes"], vals["satoru_disk_min_free_bytes"]
	if len(free) != 2 || free[notYet] <= 0 || size[notYet] < free[notYet] {
		t.Fatalf("free %v size %v", free, size)
	}
	if lim[notYet] != size[notYet]/2 || lim[dir] != float64(int64(1)<<62) {
		t.Errorf("limits %v: want half the size for the percent and the bytes for the other", lim)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestQueueMetricsCacheAndErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	q := NewQueueMetrics(reg)
	now := time.Unix(1_700_000_000, 0)
	q.now = func() time.Time { return now }
	calls := 0
	q.Watch("puller", func(context.Context) (uint64, error) { calls++; return uint64(calls * 10), nil })
	q.Watch("syncer", func(context.Context) (uint64, error) { return 0, errors.New("no consumer") })

	want := func(v string) {
		t.Helper()
		exp := "# HELP satoru_jobs_pending Job requests waiting in a durable consumer: not yet delivered plus delivered and not yet acknowledged.\n" +
			"# TYPE satoru_jobs_pending gauge\n" + `satoru_jobs_pending{consumer="puller"} ` + v + "\n"
		if err := testutil.GatherAndCompare(reg, strings.NewReader(exp), "satoru_jobs_pending"); err != nil {
			t.Error(err)
		}
	}
	want("10")
	now = now.Add(QueueCacheFor / 2)
	want("10") // cached
	now = now.Add(QueueCacheFor)
	want("20")
	if calls != 2 {
		t.Errorf("pending read %d times, want 2", calls)
	}
}
