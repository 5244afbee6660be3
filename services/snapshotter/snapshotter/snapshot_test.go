package snapshotter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/store"
)

// TestSnapshotOfALockedRepositoryIsRetried: a live restic process holds
// the repository's exclusive lock past --retry-lock, so the snapshot step
// fails with restic's "locked" exit; the attempt is retried (the job goes
// back to queued with a retry event), and once the lock is gone the next
// attempt makes the snapshot.
func TestSnapshotOfALockedRepositoryIsRetried(t *testing.T) {
	h := newHarness(t)
	h.serve(t, h.snapshotter(300*time.Millisecond))
	site := uuid.NewString()
	h.stage(t, site, 20_000)
	release := h.liveExclusiveLock(t)

	id := uuid.NewString()
	live := h.follow(t, site, id)
	h.submitSnapshotID(t, site, id)
	retry := live.next(t, func(e domain.JobEvent) bool { return e.Step == "retry" })
	release() // the next attempt starts after the backoff (>= 1.5 s)
	if !strings.Contains(retry.Message, "attempt 1 of 3 failed") || !strings.Contains(retry.Message, "locked") {
		t.Errorf("retry event = %q", retry.Message)
	}

	job := h.wait(t, id)
	if job.Status != domain.StatusSuccess {
		t.Fatalf("job %s: %s", job.Status, job.Error)
	}
	if job.Attempts < 2 {
		t.Errorf("attempts = %d, want a second one", job.Attempts)
	}
	if got := h.snapshotIDs(t, site); len(got) != 1 || got[0] != job.Summary["snapshot_id"] {
		t.Errorf("snapshots %q, want the job's %v", got, job.Summary["snapshot_id"])
	}
	if !h.hasEvent(t, id, func(e domain.JobEvent) bool {
		return e.Step == "snapshot" && e.Level == domain.LevelError && strings.Contains(e.Message, "locked")
	}) {
		t.Error("no event names the failed attempt's restic error")
	}
}

// brokenStatusWrites is the real store whose site status writes fail as
// a write cut off does: the real driver call, on a context that has
// ended.
type brokenStatusWrites struct{ *store.Store }

func (b brokenStatusWrites) PutSiteStatus(ctx context.Context, st domain.SiteStatus) error {
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	return b.Store.PutSiteStatus(cctx, st)
}

// TestSnapshotHealthWriteFailureIsAJobEvent: the snapshot is made and the
// job succeeds, but the site's health could not be written: the job says
// so in a warn event instead of the failure vanishing.
func TestSnapshotHealthWriteFailureIsAJobEvent(t *testing.T) {
	h := newHarness(t)
	s := h.snapshotter(0)
	s.Store = brokenStatusWrites{h.st}
	h.serve(t, s)
	site := uuid.NewString()
	h.stage(t, site, 10_000)

	job := h.wait(t, h.submitSnapshot(t, site))
	if job.Status != domain.StatusSuccess {
		t.Fatalf("job %s: %s", job.Status, job.Error)
	}
	ev := h.event(t, job.ID, func(e domain.JobEvent) bool { return e.Level == domain.LevelWarn })
	if ev.Step != "health" || !strings.HasPrefix(ev.Message, "site health (success) not recorded: ") ||
		!strings.Contains(ev.Message, "put site status "+site) {
		t.Errorf("event = %s %q", ev.Step, ev.Message)
	}
	st, err := h.st.GetSiteStatus(t.Context(), site)
	if err != nil {
		t.Fatal(err)
	}
	if st.Health.Status != domain.HealthUnknown || st.LastSuccessAt != nil {
		t.Errorf("site status written after all: %+v", st)
	}
}

// TestSnapshotRecordsItsStaging: a snapshot records on the site which
// staging holds its baseline (the node that owns the site in health).
func TestSnapshotRecordsItsStaging(t *testing.T) {
	h := newHarness(t)
	h.serve(t, h.snapshotter(0))
	site := uuid.NewString()
	h.stage(t, site, 10_000)
	job := h.wait(t, h.submitSnapshot(t, site))
	if job.Status != domain.StatusSuccess {
		t.Fatalf("job %s: %s", job.Status, job.Error)
	}
	st, err := h.st.GetSiteStatus(t.Context(), site)
	if err != nil {
		t.Fatal(err)
	}
	if h.stagingID == "" || st.LastStagingID != h.stagingID || st.LastSuccessAt == nil {
		t.Errorf("site status %+v, want last_staging_id %s", st, h.stagingID)
	}
}

// TestSnapshotOfAnotherStagingIsRefused: a snapshot request whose pull
// was made on another staging (another node), or that names none (an
// older version's hand-off), is never snapshotted, even though this
// node's staging holds an older copy of the site: the job and the site
// health fail, naming both stagings and what to do.
func TestSnapshotOfAnotherStagingIsRefused(t *testing.T) {
	h := newHarness(t)
	h.serve(t, h.snapshotter(0))
	const other = "ffffffffffffffffffffffffffffffff"
	for _, tc := range []struct {
		name    string
		handOff *domain.HandOff
		want    []string
	}{
		{"another node's pull", &domain.HandOff{Staging: other, Worker: "worker-b"},
			[]string{"the pull of this job was made on staging " + other + " (worker worker-b)", "this snapshotter's staging is " + h.stagingID, "`satoru worker`"}},
		{"no staging recorded", nil,
			[]string{"recorded no staging", "this snapshotter's staging is " + h.stagingID}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			site := uuid.NewString()
			h.stage(t, site, 10_000) // stale data a snapshot must not present
			now := time.Now().UTC()
			id := uuid.NewString()
			h.submit(t, domain.Job{ID: id, SiteUUID: site, Type: domain.JobBackup, Status: domain.StatusRunning, Attempts: 1,
				CreatedAt: now, StartedAt: &now, Worker: "worker-b", HandOff: tc.handOff,
				Targets: []domain.TargetRun{{TargetHash: stagedTarget, Path: "/data", Mode: domain.ModeDirectory, Status: domain.HealthSuccess}}},
				events.StepSnapshot)
			job := h.wait(t, id)
			if job.Status != domain.StatusFailed {
				t.Fatalf("job %s (%s), want failed", job.Status, job.Error)
			}
			st, err := h.st.GetSiteStatus(t.Context(), site)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(job.Error, w) || !strings.Contains(st.Health.Message, w) {
					t.Errorf("job error %q / health %q: want %q", job.Error, st.Health.Message, w)
				}
			}
			if st.Health.Status != domain.HealthFailed || st.LastStagingID != "" {
				t.Errorf("site health %s, last staging %q; want failed and none", st.Health.Status, st.LastStagingID)
			}
			if got := h.snapshotIDs(t, site); len(got) != 0 {
				t.Errorf("snapshots %q made of another node's staging", got)
			}
		})
	}
}
