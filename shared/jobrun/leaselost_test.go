package jobrun_test

import (
	"context"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
)

// TestLostLeaseIsRetried: a job whose site lease is lost while it runs
// (the entry gone, as when a renewal on a starved host came after the
// TTL) stops, is queued again as a retry saying why, and its next
// attempt, under a fresh lease, succeeds: a busy host is not a failed
// backup.
func TestLostLeaseIsRetried(t *testing.T) {
	r := newRig(t)
	in := r.connect(t, "lease-thief")
	work := func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		if job.Attempts > 1 {
			return jobrun.Outcome{Status: domain.StatusSuccess}
		}
		if err := in.Leases.Purge(context.WithoutCancel(ctx), events.LeaseKey(job.SiteUUID)); err != nil {
			t.Errorf("purge lease: %v", err)
		}
		<-ctx.Done() // the next renewal finds the lease gone and stops the job
		return jobrun.Outcome{Status: domain.StatusFailed, Error: "stopped"}
	}
	r.startWorker(t, "node-a", events.ConsumerPuller, 3, work)
	r.queue(t, "job-lost", "site-lost", domain.JobBackup)
	j := r.waitJob(t, "job-lost")
	if j.Status != domain.StatusSuccess || j.Attempts != 2 {
		t.Fatalf("job ended %s after %d attempt(s) (%q), want success on attempt 2", j.Status, j.Attempts, j.Error)
	}
	retried := false
	for _, e := range r.events(t, "job-lost") {
		retried = retried || (e.Step == "retry" && strings.Contains(e.Message, "site lease lost"))
	}
	if !retried {
		t.Fatalf("no retry event names the lost lease: %+v", r.events(t, "job-lost"))
	}
}

// TestLeaseLostAtALocalHandOffIsRetried: the lease is gone when a node
// hands its pull to its own snapshot step; the job is queued again and
// the next attempt pulls and snapshots under a fresh lease.
func TestLeaseLostAtALocalHandOffIsRetried(t *testing.T) {
	r := newRig(t)
	in := r.connect(t, "lease-thief")
	pull := func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		if job.Attempts == 1 {
			if err := in.Leases.Purge(context.WithoutCancel(ctx), events.LeaseKey(job.SiteUUID)); err != nil {
				t.Errorf("purge lease: %v", err)
			}
		}
		return handOffWork(ctx, job, rec)
	}
	snap := func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		return jobrun.Outcome{Status: domain.StatusSuccess, Summary: job.Summary, Targets: job.Targets}
	}
	r.startWorkerWith(t, "node-a", events.ConsumerPuller, 3, pull, nodeWith(stagingA, snap))
	r.queue(t, "job-hand", "site-hand", domain.JobBackup)
	j := r.waitJob(t, "job-hand")
	if j.Status != domain.StatusSuccess || j.Attempts != 2 {
		t.Fatalf("job ended %s after %d attempt(s) (%q), want success on attempt 2", j.Status, j.Attempts, j.Error)
	}
	retried := false
	for _, e := range r.events(t, "job-hand") {
		retried = retried || (e.Step == "retry" && strings.Contains(e.Message, "site lease lost"))
	}
	if !retried {
		t.Fatalf("no retry event names the lost lease: %+v", r.events(t, "job-hand"))
	}
}
