package observe

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestVerifyMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewVerifyMetrics(reg)
	t1 := time.Unix(1000, 0)
	t2 := time.Unix(2000, 0)

	m.Verified("s1", true, t1)
	m.Verified("s1", false, t2)
	if got := testutil.ToFloat64(m.Status.WithLabelValues("s1")); got != 0 {
		t.Errorf("status after a failure = %v, want 0", got)
	}
	// A failure leaves the last successful verification where it was.
	if got := testutil.ToFloat64(m.LastVerified.WithLabelValues("s1")); got != 1000 {
		t.Errorf("last verified = %v, want 1000", got)
	}
	if got := testutil.ToFloat64(m.LastRun.WithLabelValues("s1")); got != 2000 {
		t.Errorf("last run = %v, want 2000", got)
	}

	ok := true
	m.Seed("s2", &t1, &t2, &ok)
	if testutil.ToFloat64(m.Status.WithLabelValues("s2")) != 1 || testutil.ToFloat64(m.LastVerified.WithLabelValues("s2")) != 1000 ||
		testutil.ToFloat64(m.LastRun.WithLabelValues("s2")) != 2000 {
		t.Error("seeded gauges do not match the stored status")
	}
	// A second constructor on the same registry shares the series.
	if NewVerifyMetrics(reg).Status != m.Status {
		t.Error("a second NewVerifyMetrics did not share the collectors")
	}
}
