package syncer

import (
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

// TestSyncToAStoppedOffsiteFailsFast: restic retries a failing backend for
// up to 15 minutes per operation; with the offsite stand-in stopped, a
// sync fails after restic_b2_retry_seconds with restic's reason, both when
// the offsite goes away between syncs (the copy) and before the first one
// (opening it), and job_timeout_sync_seconds bounds the rest.
func TestSyncToAStoppedOffsiteFailsFast(t *testing.T) {
	e := newSyncEnv(t)
	e.backup("one.bin")
	remote := e.remote(testAccessKey, testSecretKey)
	remote.BackendRetryLimit = 3 * time.Second
	stop := e.startSyncer(remote)
	if job := e.runSync(); job.Status != domain.StatusSuccess {
		t.Fatalf("first sync = %s: %s\n%s", job.Status, job.Error, e.logs)
	}

	e.s3.Stop()
	e.backup("two.bin")
	start := time.Now()
	job := e.runSync()
	took := time.Since(start)
	if job.Status != domain.StatusFailed || !strings.Contains(job.Error, "is unreachable (restic_b2_retry_seconds)") ||
		!strings.Contains(job.Error, "connection refused") || !strings.Contains(job.Error, "retrying after") {
		t.Fatalf("sync to the stopped offsite = %s %q, want failed naming restic's retry reason", job.Status, job.Error)
	}
	t.Logf("after %s: %s", took.Round(time.Second), job.Error)
	if took > 45*time.Second {
		t.Errorf("the failing sync took %s; restic's retries were not cut short", took)
	}
	if st := e.state(); st.Status != domain.HealthFailed || st.Error != job.Error {
		t.Errorf("sync_state = %s %q, want failed with the job's reason", st.Status, st.Error)
	}
	if strings.Contains(job.Error, testSecretKey) || strings.Contains(e.logs.String(), testSecretKey) {
		t.Error("the offsite key leaked into the error or the logs")
	}
	stop()

	// A new syncer (it opens the offsite repository first) with no retry
	// limit of its own: job_timeout_sync_seconds ends it, with the reason.
	remote.BackendRetryLimit = 0
	e.startSyncerWith(remote, 4*time.Second)
	start = time.Now()
	job = e.runSync()
	took = time.Since(start)
	if job.Status != domain.StatusFailed || !strings.Contains(job.Error, "did not finish within its limit of 4s (job_timeout_sync_seconds)") ||
		!strings.Contains(job.Error, "connection refused") {
		t.Fatalf("sync bounded by its limit = %s %q", job.Status, job.Error)
	}
	t.Logf("after %s: %s", took.Round(time.Second), job.Error)
	if took > 40*time.Second {
		t.Errorf("the sync bounded by 4s took %s", took)
	}
}
