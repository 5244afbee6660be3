package scheduler

import (
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// runningJob stores a job running since started whose last heartbeat was
// at heartbeat, after attempts attempts.
func (e *env) runningJob(tb testing.TB, id, site string, typ domain.JobType, attempts int, heartbeat time.Time) domain.Job {
	tb.Helper()
	started := heartbeat.Add(-time.Minute)
	j := domain.Job{ID: id, SiteUUID: site, Type: typ, Status: domain.StatusRunning, Attempts: attempts,
		CreatedAt: started.Add(-time.Minute), StartedAt: &started, HeartbeatAt: &heartbeat, Worker: "puller-dead"}
	if err := e.st.InsertJob(ctxT(tb), j); err != nil {
		tb.Fatal(err)
	}
	return j
}

func (e *env) job(tb testing.TB, id string) domain.Job {
	tb.Helper()
	j, err := e.st.GetJob(ctxT(tb), id)
	if err != nil {
		tb.Fatal(err)
	}
	return j
}

func TestRecoverStaleJobs(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	now := start.Add(10 * time.Hour)
	old := now.Add(-10 * time.Minute)
	const max = 3

	lost := e.runningJob(t, "job-lost", "site-a", domain.JobBackup, max, old)
	retry := e.runningJob(t, "job-retry", "site-b", domain.JobBackup, 1, old)
	e.runningJob(t, "job-fresh", "site-c", domain.JobBackup, max, now.Add(-time.Minute))
	// Its worker still renews the site lease: the scheduler leaves it.
	e.runningJob(t, "job-held", "site-d", domain.JobBackup, max, old)
	held, err := e.in.AcquireSite(ctx, "site-d", bus.LeaseHolder{JobID: "job-held", Worker: "puller-slow"})
	if err != nil {
		t.Fatal(err)
	}
	// Its request is still in the stream: it will be redelivered.
	e.runningJob(t, "job-queued", "site-e", domain.JobBackup, 1, old)
	if err := e.in.Publish(ctx, events.JobRequest{V: events.JobRequestV1, JobID: "job-queued", SiteUUID: "site-e", Type: "backup"}); err != nil {
		t.Fatal(err)
	}
	// Handed off to the snapshotter, whose request was lost.
	handed := e.runningJob(t, "job-handed", "site-f", domain.JobBackup, 1, old)
	if err := e.st.HandOffJob(ctx, handed.ID, map[string]any{"pulled": 1}, []domain.TargetRun{{TargetHash: "h", Path: "/var/www"}}, domain.HandOff{Staging: "0123456789abcdef0123456789abcdef", Worker: "w1"}, old); err != nil {
		t.Fatal(err)
	}
	// Handed off in process (a worker node): its snapshot ran on the
	// pulling node's delivery of the backup request, which was lost; the
	// job starts over from the pull, never from a snapshot elsewhere.
	local := e.runningJob(t, "job-local", "site-g", domain.JobBackup, 1, old)
	if err := e.st.HandOffJob(ctx, local.ID, map[string]any{"pulled": 1}, []domain.TargetRun{{TargetHash: "h", Path: "/var/www"}}, domain.HandOff{Staging: "0123456789abcdef0123456789abcdef", Worker: "w1", Local: true}, old); err != nil {
		t.Fatal(err)
	}
	// A repository-level job (offsite sync) on its last attempt.
	e.runningJob(t, "job-sync", "", domain.JobResticSync, max, old)

	s := e.scheduler(t, "sched-a", Settings{StaleAfter: 5 * time.Minute, MaxAttempts: max})
	res := mustTick(t, s, now)
	want := Recovery{Ran: true, Stale: 7, Failed: 2, Republished: 3, Pending: 1, Busy: 1}
	if res.Recovery != want {
		t.Fatalf("recovery = %+v, want %+v", res.Recovery, want)
	}

	// Out of attempts: failed, saying since when no heartbeat came.
	for _, id := range []string{lost.ID, "job-sync"} {
		j := e.job(t, id)
		wantErr := "worker lost: no heartbeat since " + old.Format(time.RFC3339)
		if j.Status != domain.StatusFailed || j.Error != wantErr || j.FinishedAt == nil || !j.FinishedAt.Equal(now) {
			t.Errorf("%s = %s %q %v, want failed %q", id, j.Status, j.Error, j.FinishedAt, wantErr)
		}
		evs, err := e.st.ListEvents(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 || evs[0].Level != domain.LevelError || !strings.Contains(evs[0].Message, "worker lost") {
			t.Errorf("%s events = %+v", id, evs)
		}
	}
	// The leases the scheduler took are free again.
	for _, key := range []string{events.LeaseKey("site-a"), events.LeaseKey(events.RepoSite), events.LeaseKey("site-b")} {
		if h, ok, err := e.in.LeaseHolderOf(ctx, key); err != nil || ok {
			t.Errorf("lease %s held by %+v (%v) after recovery", key, h, err)
		}
	}
	// Attempts left: the requests are published again (the stream kept
	// job-queued's, which is still there, once).
	reqs := e.published(t)
	var got []string
	for _, r := range reqs {
		got = append(got, r.JobID+":"+r.Type+":"+r.Staging)
	}
	sort.Strings(got)
	// The snapshot request names the staging the pull wrote.
	if want := []string{"job-handed:snapshot:0123456789abcdef0123456789abcdef", "job-local:backup:", "job-queued:backup:", "job-retry:backup:"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("requests = %q, want %q", got, want)
	}
	for _, id := range []string{retry.ID, "job-fresh", "job-held", "job-queued", handed.ID} {
		if j := e.job(t, id); j.Status != domain.StatusRunning {
			t.Errorf("%s = %s, want still running", id, j.Status)
		}
	}

	// At most one pass a minute.
	if res := mustTick(t, s, now.Add(30*time.Second)); res.Recovery.Ran {
		t.Errorf("second pass 30 s later: %+v", res.Recovery)
	}
	// A minute on: the held lease is released, so job-held (its worker
	// gone) is failed now; the republished ones are pending in the stream
	// until a worker takes them (published() acked them: they are gone, so
	// they are published again, deduplicated by NATS within its window).
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
	res = mustTick(t, s, now.Add(61*time.Second))
	if !res.Recovery.Ran || res.Recovery.Failed != 1 {
		t.Errorf("pass a minute later: %+v", res.Recovery)
	}
	if j := e.job(t, "job-held"); j.Status != domain.StatusFailed || !strings.HasPrefix(j.Error, "worker lost: ") {
		t.Errorf("job-held = %s %q", j.Status, j.Error)
	}
	if reqs := e.published(t); len(reqs) != 0 {
		t.Errorf("requests published again within the duplicate window: %+v", reqs)
	}
}

func TestRecoverOff(t *testing.T) {
	e := newEnv(t)
	now := start.Add(time.Hour)
	e.runningJob(t, "job-lost", "site-a", domain.JobBackup, 5, now.Add(-24*time.Hour))
	s := e.scheduler(t, "sched-a", Settings{})
	if res := mustTick(t, s, now); res.Recovery.Ran {
		t.Errorf("recovery ran without StaleAfter: %+v", res.Recovery)
	}
	if j := e.job(t, "job-lost"); j.Status != domain.StatusRunning {
		t.Errorf("job = %s", j.Status)
	}
}

// TestRecoverKeepsTheDeadWorkersEvents: a worker that died between two
// writes to the store had published events the store lacks; failing its
// job stores them first and numbers the failure after them.
func TestRecoverKeepsTheDeadWorkersEvents(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	now := start.Add(10 * time.Hour)
	old := now.Add(-10 * time.Minute)
	j := e.runningJob(t, "job-dead", "site-g", domain.JobBackup, 3, old)
	ev := func(seq int) domain.JobEvent {
		return domain.JobEvent{Seq: seq, TS: old, Step: "pull", Level: domain.LevelInfo, Message: "event " + strconv.Itoa(seq)}
	}
	if err := e.st.AppendEvents(ctx, j.ID, ev(1), ev(2)); err != nil {
		t.Fatal(err)
	}
	for seq := 1; seq <= 4; seq++ {
		se := events.StepEvent{V: events.StepEventV1, JobID: j.ID, SiteUUID: j.SiteUUID, JobType: string(j.Type), Status: "running", Event: ev(seq)}
		if err := e.in.PublishEvent(ctx, se); err != nil {
			t.Fatal(err)
		}
	}

	s := e.scheduler(t, "sched-a", Settings{StaleAfter: 5 * time.Minute, MaxAttempts: 3})
	if res := mustTick(t, s, now); res.Recovery.Failed != 1 {
		t.Fatalf("recovery = %+v, want the job failed", res.Recovery)
	}
	evs, err := e.st.ListEvents(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, strconv.Itoa(ev.Seq)+":"+ev.Message)
	}
	want := []string{"1:event 1", "2:event 2", "3:event 3", "4:event 4", "5:finished: failed: worker lost: no heartbeat since " + old.Format(time.RFC3339)}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("events =\n%q\nwant\n%q", got, want)
	}
}
