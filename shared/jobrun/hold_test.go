package jobrun_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
)

// TestHeldJobStaysQueued: while Hold holds a queued job (its site in a
// maintenance window), the job does not start: no attempt, no lease, it
// stays queued and its request comes back; once the hold ends it runs.
func TestHeldJobStaysQueued(t *testing.T) {
	r := newRig(t)
	var holding atomic.Bool
	holding.Store(true)
	var asked atomic.Int32
	hold := func(ctx context.Context, job domain.Job) (time.Time, string, error) {
		asked.Add(1)
		if holding.Load() {
			return time.Now().Add(time.Hour), "site in maintenance window test", nil
		}
		return time.Time{}, "", nil
	}
	var ran atomic.Int32
	work := func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		ran.Add(1)
		return jobrun.Outcome{Status: domain.StatusSuccess}
	}
	r.startWorkerWith(t, "node-a", events.ConsumerPuller, 3, work, func(x *jobrun.Executor) {
		x.Hold, x.HoldRecheck = hold, 200*time.Millisecond
	})
	r.queue(t, "job-held", "site-held", domain.JobBackup)
	deadline := time.Now().Add(10 * time.Second)
	for asked.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if asked.Load() < 3 {
		t.Fatalf("Hold asked %d times: the held request did not come back", asked.Load())
	}
	j, err := r.st.GetJob(t.Context(), "job-held")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != domain.StatusQueued || j.Attempts != 0 || ran.Load() != 0 {
		t.Fatalf("held job: status %s, %d attempts, ran %d times; want queued, untouched", j.Status, j.Attempts, ran.Load())
	}
	holding.Store(false)
	if j := r.waitJob(t, "job-held"); j.Status != domain.StatusSuccess || j.Attempts != 1 || ran.Load() != 1 {
		t.Fatalf("after the hold: status %s, %d attempts, ran %d times", j.Status, j.Attempts, ran.Load())
	}
}
