package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

func withOffsite(d *Deps) {
	d.OffsiteConfigured = true
	d.SyncInterval = 6 * time.Hour
}

func TestCreateSync(t *testing.T) {
	for name, body := range map[string]string{"no body": "", "empty object": "{}", "empty object with spaces": " {} "} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, withOffsite)
			rec := h.do("POST", "/api/v1/sync", body)
			if rec.Code != http.StatusAccepted {
				t.Fatalf("POST /sync = %d %s", rec.Code, rec.Body)
			}
			got := decode[JobAccepted](t, rec)
			if got.JobID != "id-1" || got.Status != domain.StatusQueued || rec.Header().Get("Location") != "/api/v1/jobs/id-1" {
				t.Errorf("answer %+v, Location %q", got, rec.Header().Get("Location"))
			}
			j := h.store.jobs["id-1"]
			if j.SiteUUID != "" || j.Type != domain.JobResticSync || j.Status != domain.StatusQueued || !j.CreatedAt.Equal(testNow) {
				t.Errorf("job = %+v", j)
			}
			want := events.JobRequest{V: events.JobRequestV1, JobID: "id-1", SiteUUID: "", Type: "restic_sync"}
			if len(h.disp.published) != 1 || h.disp.published[0] != want || want.Subject() != "satoru.jobs._repo.restic_sync" {
				t.Errorf("published %+v", h.disp.published)
			}
			if strings.Join(h.calls, ",") != "InsertJob id-1,Publish id-1" {
				t.Errorf("calls = %q, want insert then publish", h.calls)
			}
		})
	}
}

func TestCreateSyncRejects(t *testing.T) {
	tests := []struct {
		name       string
		configured bool
		body       string
		status     int
		code, msg  string
	}{
		{"not configured", false, "", 409, CodeConflict, "offsite sync is not configured: set restic_b2_repository"},
		{"unknown field", true, `{"force":true}`, 400, CodeInvalidArgument, `unknown field "force"`},
		{"not JSON", true, `sync please`, 400, CodeInvalidArgument, "not valid JSON"},
		{"not an object", true, `[]`, 400, CodeInvalidArgument, "must be a JSON object"},
		{"trailing data", true, `{} {}`, 400, CodeInvalidArgument, "unexpected data after the JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(d *Deps) { d.OffsiteConfigured = tc.configured })
			wantError(t, h.do("POST", "/api/v1/sync", tc.body), tc.status, tc.code, tc.msg)
			if len(h.calls) != 0 {
				t.Errorf("a rejected request wrote: %q", h.calls)
			}
		})
	}
	t.Run("publish fails: job marked failed, 503", func(t *testing.T) {
		old := publishBackoff
		publishBackoff = []time.Duration{0}
		defer func() { publishBackoff = old }()
		h := newHarness(t, withOffsite)
		h.disp.publishErr = errors.New("nats: timeout")
		wantError(t, h.do("POST", "/api/v1/sync", ""), 503, CodeUnavailable, "job id-1 could not be queued")
		if j := h.store.jobs["id-1"]; j.Status != domain.StatusFailed {
			t.Errorf("job = %+v", j)
		}
	})
	t.Run("chunked empty body", func(t *testing.T) {
		h := newHarness(t, withOffsite)
		req := httptest.NewRequest("POST", "/api/v1/sync", strings.NewReader(""))
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.e.ServeHTTP(rec, req)
		if rec.Code != http.StatusAccepted {
			t.Errorf("chunked empty POST /sync = %d %s", rec.Code, rec.Body)
		}
	})
}

func TestGetSync(t *testing.T) {
	t.Run("never synced", func(t *testing.T) {
		h := newHarness(t, withOffsite)
		rec := h.do("GET", "/api/v1/sync", "")
		if rec.Code != 200 {
			t.Fatalf("GET /sync = %d %s", rec.Code, rec.Body)
		}
		got := decode[map[string]any](t, rec)
		want := map[string]any{"repo": domain.OffsiteSyncStateID, "status": "unknown", "configured": true, "interval_seconds": float64(21600),
			"health": "stale", "snapshots_copied": float64(0), "bytes": float64(0), "snapshots_pending": float64(0), "oldest_pending_age_seconds": float64(0)}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s = %v, want %v (body %s)", k, got[k], v, rec.Body)
			}
		}
	})
	t.Run("state with lag", func(t *testing.T) {
		h := newHarness(t, withOffsite)
		h.store.sync = &domain.SyncState{ID: domain.OffsiteSyncStateID, Status: domain.HealthSuccess, Repository: "s3:https://s3.example/b/r",
			LastAttemptAt: at(-time.Hour), LastSuccessAt: at(-time.Hour), SnapshotsCopied: 3, Bytes: 4096,
			SnapshotsPending: 1, OldestPendingAt: at(-30 * time.Minute)}
		got := decode[SyncView](t, h.do("GET", "/api/v1/sync", ""))
		if got.Health != SyncOK || got.OldestPendingAgeSeconds != 1800 || got.Repository != "s3:https://s3.example/b/r" ||
			got.SnapshotsCopied != 3 || got.Bytes != 4096 || !got.Configured || got.LastSuccessAt == nil {
			t.Errorf("GET /sync = %+v", got)
		}
	})
	t.Run("not configured", func(t *testing.T) {
		h := newHarness(t)
		got := decode[SyncView](t, h.do("GET", "/api/v1/sync", ""))
		if got.Configured || got.Health != SyncNotConfigured || got.IntervalSeconds != 86400 {
			t.Errorf("GET /sync = %+v", got)
		}
	})
	t.Run("store down", func(t *testing.T) {
		h := newHarness(t, withOffsite)
		h.store.fail["GetSyncState"] = errStoreDown
		rec := h.do("GET", "/api/v1/sync", "")
		wantError(t, rec, 503, CodeUnavailable, "the store is unavailable")
		if strings.Contains(rec.Body.String(), "s3cr3t") {
			t.Errorf("body leaks the cause: %s", rec.Body)
		}
	})
}

func TestHealth(t *testing.T) {
	disks := []DiskCheck{
		{Name: "staging_root", Path: "/srv/backups", MinFreePercent: 5},
		{Name: "restic_repo_path", Path: "/srv/repo", MinFreeBytes: 10 << 30},
	}
	space := func(path string) (DiskSpace, error) {
		switch path {
		case "/srv/backups":
			return DiskSpace{FreeBytes: 50 << 30, TotalBytes: 100 << 30, CheckedAt: path}, nil
		case "/srv/repo":
			return DiskSpace{FreeBytes: 5 << 30, TotalBytes: 100 << 30, CheckedAt: path}, nil
		}
		return DiskSpace{}, errors.New("no such disk")
	}
	setup := func(d *Deps) {
		withOffsite(d)
		d.Disks, d.DiskSpace = disks, space
		d.Ready = []Checker{fakeChecker{name: "store"}, fakeChecker{name: "nats"}}
	}

	t.Run("degraded", func(t *testing.T) {
		h := newHarness(t, setup)
		h.store.sites["u1"] = domain.Site{UUID: "u1", Name: "edge-a"}
		h.store.sites["u2"] = domain.Site{UUID: "u2", Name: "edge-b"}
		h.store.sites["u3"] = domain.Site{UUID: "u3", Name: "edge-c"}
		h.store.statuses["u1"] = domain.SiteStatus{Health: domain.HealthState{Status: domain.HealthSuccess}}
		h.store.statuses["u2"] = domain.SiteStatus{Health: domain.HealthState{Status: domain.HealthFailed, Message: "preflight: host key changed"}}
		h.store.sync = &domain.SyncState{ID: domain.OffsiteSyncStateID, Status: domain.HealthFailed, Error: "offsite repository refused the credentials",
			LastSuccessAt: at(-2 * time.Hour), SnapshotsPending: 4, OldestPendingAt: at(-3 * time.Hour)}
		rec := h.do("GET", "/api/v1/health", "")
		if rec.Code != 200 {
			t.Fatalf("GET /health = %d %s", rec.Code, rec.Body)
		}
		r := decode[HealthReport](t, rec)
		if r.Status != HealthDegraded || !r.CheckedAt.Equal(testNow) || len(r.Services) != 2 || !r.Services[0].OK {
			t.Errorf("report = %+v", r)
		}
		if r.Sites.Total != 3 || r.Sites.ByStatus[domain.HealthFailed] != 1 || r.Sites.ByStatus[domain.HealthUnknown] != 1 ||
			len(r.Sites.Failing) != 1 || r.Sites.Failing[0].SiteUUID != "u2" || r.Sites.Failing[0].Name != "edge-b" {
			t.Errorf("sites = %+v", r.Sites)
		}
		if r.Sync.Status != SyncFailed || r.Sync.SnapshotsPending != 4 || r.Sync.OldestPendingAgeSeconds != 3*3600 || r.Sync.LastSuccessAt == nil {
			t.Errorf("sync = %+v", r.Sync)
		}
		if len(r.Disks) != 2 || r.Disks[0].Status != DiskOK || r.Disks[0].FreePercent != 50 || r.Disks[1].Status != DiskLow {
			t.Errorf("disks = %+v", r.Disks)
		}
		if len(r.Problems) != 3 {
			t.Errorf("problems = %q, want site, sync and disk", r.Problems)
		}
	})
	t.Run("ok", func(t *testing.T) {
		h := newHarness(t, setup, func(d *Deps) { d.Disks = disks[:1] })
		h.store.sync = &domain.SyncState{ID: domain.OffsiteSyncStateID, Status: domain.HealthSuccess, LastSuccessAt: at(-time.Hour)}
		r := decode[HealthReport](t, h.do("GET", "/api/v1/health", ""))
		if r.Status != HealthOK || len(r.Problems) != 0 || r.Sites.Total != 0 || r.Sync.Status != SyncOK || r.Sites.Failing == nil {
			t.Errorf("report = %+v", r)
		}
	})
	t.Run("a failing readiness check degrades", func(t *testing.T) {
		h := newHarness(t, setup, func(d *Deps) {
			d.Disks = nil
			d.OffsiteConfigured = false
			d.Ready = []Checker{fakeChecker{name: "nats", err: errors.New("nats: connection closed")}}
		})
		r := decode[HealthReport](t, h.do("GET", "/api/v1/health", ""))
		if r.Status != HealthDegraded || r.Sync.Status != SyncNotConfigured || len(r.Problems) != 1 ||
			r.Problems[0] != "service check nats: failed" || r.Disks == nil {
			t.Errorf("report = %+v", r)
		}
	})
	t.Run("store down", func(t *testing.T) {
		h := newHarness(t, setup)
		h.store.fail["ListSiteStatuses"] = errStoreDown
		wantError(t, h.do("GET", "/api/v1/health", ""), 503, CodeUnavailable, "the store is unavailable")
	})
	t.Run("needs the token", func(t *testing.T) {
		h := newHarness(t, setup)
		wantError(t, h.request("GET", "/api/v1/health", "", nil), 401, CodeUnauthorized, "missing or invalid token")
	})
}
