package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

func TestCheckHealthAt(t *testing.T) {
	now := testNow
	week := 7 * 24 * time.Hour
	ago := func(d time.Duration) *time.Time { x := now.Add(-d); return &x }
	tests := []struct {
		name     string
		st       domain.CheckState
		interval time.Duration
		want     string
		problem  string
	}{
		{"never run", domain.CheckState{Status: domain.HealthUnknown}, week, CheckNever, ""},
		{"passed recently", domain.CheckState{Status: domain.HealthSuccess, LastSuccessAt: ago(time.Hour), LastAttemptAt: ago(time.Hour)}, week, CheckOK, ""},
		{"passed just within two intervals", domain.CheckState{Status: domain.HealthSuccess, LastSuccessAt: ago(2 * week), LastAttemptAt: ago(2 * week)}, week, CheckOK, ""},
		{"no success within two intervals", domain.CheckState{Status: domain.HealthSuccess, LastSuccessAt: ago(2*week + time.Minute), LastAttemptAt: ago(2*week + time.Minute)}, week, CheckStale,
			"repository check is stale: last success 2025-12-19T03:03:05Z, more than twice the interval of 168h0m0s ago"},
		{"not scheduled is never stale", domain.CheckState{Status: domain.HealthSuccess, LastSuccessAt: ago(100 * week), LastAttemptAt: ago(100 * week)}, 0, CheckOK, ""},
		{"failed", domain.CheckState{Status: domain.HealthFailed, LastSuccessAt: ago(time.Hour), LastAttemptAt: ago(time.Minute), Error: "local repository /r: restic check: exit 1"}, week, CheckFailed,
			"repository check failed: local repository /r: restic check: exit 1"},
		{"failed, not scheduled", domain.CheckState{Status: domain.HealthFailed, LastAttemptAt: ago(time.Minute), Error: "x"}, 0, CheckFailed, "repository check failed: x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := CheckHealthAt(tc.st, tc.interval, now)
			if h.Status != tc.want || h.IntervalSeconds != int64(tc.interval/time.Second) {
				t.Fatalf("CheckHealthAt = %+v, want %s", h, tc.want)
			}
			r := HealthReport{Check: h, Sites: SummarizeSites(nil, nil), Sync: SyncHealth{Status: SyncNotConfigured}}
			Judge(&r)
			switch {
			case tc.problem == "" && (r.Status != HealthOK || len(r.Problems) != 0):
				t.Errorf("Judge = %s %q, want ok", r.Status, r.Problems)
			case tc.problem != "" && (r.Status != HealthDegraded || len(r.Problems) != 1 || r.Problems[0] != tc.problem):
				t.Errorf("Judge = %s %q, want degraded with %q", r.Status, r.Problems, tc.problem)
			}
		})
	}
}

// checkStore is the fake store with a check_state.
type checkStore struct {
	*fakeStore
	st domain.CheckState
}

func (c checkStore) GetCheckState(context.Context) (domain.CheckState, error) { return c.st, nil }

func TestCheckEndpoints(t *testing.T) {
	t.Run("POST queues a repository-level check job", func(t *testing.T) {
		h := newHarness(t)
		rec := h.do("POST", "/api/v1/check", "")
		if rec.Code != http.StatusAccepted || rec.Header().Get("Location") != "/api/v1/jobs/id-1" {
			t.Fatalf("POST /check = %d %s", rec.Code, rec.Body)
		}
		j := h.store.jobs["id-1"]
		if j.SiteUUID != "" || j.Type != domain.JobCheck || j.Status != domain.StatusQueued {
			t.Errorf("job = %+v", j)
		}
		want := events.JobRequest{V: events.JobRequestV1, JobID: "id-1", Type: "check"}
		if len(h.disp.published) != 1 || h.disp.published[0] != want || want.Subject() != "satoru.jobs._repo.check" {
			t.Errorf("published %+v", h.disp.published)
		}
	})
	t.Run("POST refuses a body with fields", func(t *testing.T) {
		h := newHarness(t)
		wantError(t, h.do("POST", "/api/v1/check", `{"subset":"100%"}`), 400, CodeInvalidArgument, `unknown field "subset"`)
		if len(h.calls) != 0 {
			t.Errorf("a rejected request wrote: %q", h.calls)
		}
	})
	t.Run("GET answers the state, its health and the active job", func(t *testing.T) {
		last := testNow.Add(-time.Hour)
		var cs checkStore
		h := newHarness(t, func(d *Deps) {
			d.CheckInterval = 24 * time.Hour
			cs = checkStore{fakeStore: d.Store.(*fakeStore), st: domain.CheckState{ID: domain.CheckStateID, Status: domain.HealthFailed,
				LastAttemptAt: &last, Error: "local repository /r: boom",
				Repositories: []domain.CheckRepoResult{{Name: "local", Repository: "/r", Status: domain.HealthFailed, Error: "boom"}}}}
			d.Store = cs
		})
		h.store.jobs["c1"] = domain.Job{ID: "c1", Type: domain.JobCheck, Status: domain.StatusRunning}
		rec := h.do("GET", "/api/v1/check", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /check = %d %s", rec.Code, rec.Body)
		}
		v := decode[CheckView](t, rec)
		if v.Health != CheckFailed || v.IntervalSeconds != 86400 || len(v.Repositories) != 1 || v.ActiveJob == nil || v.ActiveJob.ID != "c1" {
			t.Errorf("GET /check = %+v", v)
		}
		rec = h.do("GET", "/api/v1/health", "")
		if !strings.Contains(rec.Body.String(), `"repository check failed: local repository /r: boom"`) {
			t.Errorf("health = %s", rec.Body)
		}
	})
}
