package operatorbench

import (
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

func TestStepBreakdown(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	started, finished := at(10), at(2000)
	evs := []domain.JobEvent{
		{Seq: 1, TS: at(12), Step: "job"},
		{Seq: 2, TS: at(400), Step: "host_key"},
		{Seq: 3, TS: at(401), Step: "ssh_connect"},
		{Seq: 4, TS: at(403), Step: "headroom"},
		{Seq: 5, TS: at(405), Step: "pull"},
		{Seq: 6, TS: at(700), Step: "pull_progress"},
		{Seq: 7, TS: at(900), Step: "pull"},
		{Seq: 9, TS: at(1500), Step: "snapshot"},
		{Seq: 8, TS: at(1000), Step: "snapshot"},
		{Seq: 10, TS: at(1990), Step: "job"},
	}
	for _, tc := range []struct {
		name    string
		summary map[string]any
		want    string
	}{
		{"events only", nil,
			"from events: queue 0.010, job 0.492, preflight 0.389, headroom 0.002, pull 0.497, snapshot 0.600, finish 0.010"},
		{"with the job's step times", map[string]any{"pull_seconds": 0.6, "preflight_seconds": 0.38, "queue_seconds": 0.01, "bytes": 5.0},
			"job steps: queue 0.010, preflight 0.380, pull 0.600; from events: queue 0.010, job 0.492, preflight 0.389, headroom 0.002, pull 0.497, snapshot 0.600, finish 0.010"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := domain.Job{CreatedAt: t0, StartedAt: &started, FinishedAt: &finished, Summary: tc.summary}
			if got := stepBreakdown(j, append([]domain.JobEvent(nil), evs...)); got != tc.want {
				t.Errorf("stepBreakdown:\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"none", nil, 0},
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
