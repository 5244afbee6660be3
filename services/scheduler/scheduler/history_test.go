package scheduler

import (
	"bytes"
	"errors"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

// The leader's history pass, on the embedded store with the scheduler's
// clock injected: jobs that finished more than history_retention_days ago
// go with their events, at most HistoryPerTick per tick; recent and open
// jobs stay, however old; the pass runs a minute after the instance
// became leader, then once per HistoryEvery; followers never run it.
func TestHistoryPass(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const retention = 90 * day
	t0 := start.Add(200 * day)
	cutoff := t0.Add(time.Minute - retention) // the first pass runs at t0 + 1 minute

	type spec struct {
		id       string
		status   domain.JobStatus
		created  time.Time
		finished time.Time // zero: open
	}
	var specs []spec
	for i := range 45 { // finished over the 60 days before the cutoff
		at := cutoff.Add(-time.Duration(i+1) * 32 * time.Hour)
		specs = append(specs, spec{fmt.Sprintf("old-%02d", i), []domain.JobStatus{domain.StatusSuccess, domain.StatusFailed, domain.StatusCanceled}[i%3], at.Add(-time.Minute), at})
	}
	for i := range 10 { // finished after the cutoff
		at := cutoff.Add(time.Duration(i)*day + time.Hour)
		specs = append(specs, spec{fmt.Sprintf("new-%02d", i), domain.StatusWarning, at.Add(-time.Hour), at})
	}
	// Open jobs created long ago: never deleted.
	specs = append(specs,
		spec{"open-queued", domain.StatusQueued, cutoff.Add(-100 * day), time.Time{}},
		spec{"open-running", domain.StatusRunning, cutoff.Add(-100 * day), time.Time{}})
	for i, sp := range specs {
		site := fmt.Sprintf("5a70b0e4-0000-4000-8000-%012d", i%4)
		if err := e.st.InsertJob(ctx, domain.Job{ID: sp.id, SiteUUID: site, Type: domain.JobBackup, Status: domain.StatusQueued, CreatedAt: sp.created}); err != nil {
			t.Fatal(err)
		}
		if sp.status != domain.StatusQueued {
			if err := e.st.StartJob(ctx, sp.id, "w", 1, sp.created); err != nil {
				t.Fatal(err)
			}
		}
		if !sp.finished.IsZero() {
			if err := e.st.FinishJob(ctx, sp.id, sp.status, "", nil, sp.finished); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.st.AppendEvents(ctx, sp.id, domain.JobEvent{Seq: 1, TS: sp.created, Step: "job", Level: domain.LevelInfo, Message: "started"}); err != nil {
			t.Fatal(err)
		}
	}

	reg := prometheus.NewRegistry()
	set := Settings{Instance: "hist-1", HistoryRetention: retention, HistoryPerTick: 20, HistoryTimePerTick: time.Hour}
	s, err := New(Deps{Settings: set, Store: e.st, Infra: e.in, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	follower := e.scheduler(t, "hist-2", set)

	tick := func(s *Scheduler, now time.Time) TickResult {
		t.Helper()
		res, err := s.Tick(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if res.History.Err != nil {
			t.Fatal(res.History.Err)
		}
		return res
	}
	if h := tick(s, t0).History; h.Ran {
		t.Fatalf("pass ran at once on becoming leader: %+v", h)
	}
	// At most 20 per tick: 45 old jobs take three ticks.
	now := t0.Add(time.Minute)
	var deleted, eventDocs []int
	for k := 0; ; k++ {
		h := tick(s, now).History
		if !h.Ran || !h.Before.Equal(now.Add(-retention)) {
			t.Fatalf("tick %d: %+v, want a pass with cutoff %v", k, h, now.Add(-retention))
		}
		if fh := tick(follower, now).History; fh.Ran {
			t.Fatalf("a follower ran the pass: %+v", fh)
		}
		deleted, eventDocs = append(deleted, h.Jobs), append(eventDocs, h.EventDocs)
		if h.Jobs > set.HistoryPerTick {
			t.Fatalf("tick %d deleted %d jobs, more than %d", k, h.Jobs, set.HistoryPerTick)
		}
		if h.Done {
			break
		}
		if k > 5 {
			t.Fatalf("pass does not end: %v", deleted)
		}
		now = now.Add(30 * time.Second)
	}
	if len(deleted) != 3 || deleted[0] != 20 || deleted[1] != 20 || deleted[2] != 5 {
		t.Fatalf("deleted per tick %v, want [20 20 5]", deleted)
	}
	if eventDocs[0]+eventDocs[1]+eventDocs[2] != 45 {
		t.Fatalf("event documents deleted per tick %v, want 45 in all", eventDocs)
	}
	for _, sp := range specs {
		_, err := e.st.GetJob(ctx, sp.id)
		evs, eerr := e.st.ListEvents(ctx, sp.id)
		if eerr != nil {
			t.Fatal(eerr)
		}
		gone := errors.Is(err, store.ErrNotFound) && len(evs) == 0
		kept := err == nil && len(evs) == 1
		old := !sp.finished.IsZero() && sp.finished.Before(cutoff)
		if old && !gone || !old && !kept {
			t.Errorf("%s (%s, finished %v): job err %v, %d events", sp.id, sp.status, sp.finished, err, len(evs))
		}
	}
	list, err := e.st.ListJobs(ctx, store.JobFilter{Limit: store.MaxJobLimit})
	if err != nil || len(list) != 12 {
		t.Fatalf("listed %d jobs after the pass, want 12 (%v)", len(list), err)
	}

	// Not again within the hour; then the next pass finds what expired
	// since.
	if h := tick(s, now.Add(59*time.Minute)).History; h.Ran {
		t.Fatalf("second pass within the hour: %+v", h)
	}
	h := tick(s, now.Add(4*day-time.Hour)).History // cutoff: 3 days 23 hours after the first
	if !h.Ran || !h.Done || h.Jobs != 4 || h.EventDocs != 4 {
		t.Fatalf("pass four days later: %+v, want 4 jobs (new-00..03) deleted", h)
	}

	if got := testutil.ToFloat64(s.m.historyDeleted.WithLabelValues("jobs")); got != 49 {
		t.Errorf(`satoru_history_deleted_total{kind="jobs"} = %v, want 49`, got)
	}
	if got := testutil.ToFloat64(s.m.historyDeleted.WithLabelValues("events")); got != 49 {
		t.Errorf(`satoru_history_deleted_total{kind="events"} = %v, want 49`, got)
	}
	if testutil.ToFloat64(s.m.historyLastPass) == 0 {
		t.Error("satoru_history_last_pass_timestamp_seconds not set")
	}
	checkMetrics(t, reg)
}

// checkMetrics runs `promtool check metrics` over the registry's text
// exposition; a missing promtool fails the test.
func checkMetrics(t *testing.T, reg *prometheus.Registry) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run `make test` (scripts/install-tools.sh test installs the Debian prometheus package)")
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.Bytes()
	if !bytes.Contains(body, []byte(`satoru_history_deleted_total{kind="jobs"}`)) {
		t.Fatalf("exposition lacks the history counter:\n%s", body)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// With no retention the pass never runs.
func TestHistoryPassOff(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	j := domain.Job{ID: "old", Type: domain.JobResticSync, Status: domain.StatusQueued, CreatedAt: start}
	if err := e.st.InsertJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := e.st.FinishJob(ctx, j.ID, domain.StatusSuccess, "", nil, start); err != nil {
		t.Fatal(err)
	}
	s := e.scheduler(t, "off", Settings{})
	for _, now := range []time.Time{start.Add(400 * day), start.Add(400*day + 2*time.Hour)} {
		res, err := s.Tick(ctx, now)
		if err != nil || res.History.Ran {
			t.Fatalf("tick: %+v, %v", res.History, err)
		}
	}
	if _, err := e.st.GetJob(ctx, "old"); err != nil {
		t.Fatal(err)
	}
}
