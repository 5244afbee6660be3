package httpapi

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/satoru/satoru/shared/domain"
)

// The handler logic around a site's policy (testNow is 2026-01-02 03:04:05
// UTC, a Friday): PATCH keeps a policy it is not given, PUT normalises
// and validates, and manual jobs follow the pause and the windows.
func TestSitePolicyHandlers(t *testing.T) {
	h := newHarness(t)
	site := h.createSite(`{"name":"p1","host":"10.0.0.1","user":"b","policy":{"paused":true,"retention":{"keep_last":3}}}`)
	if site.Policy == nil || !site.Policy.Paused || site.Policy.Retention.KeepLast != 3 {
		t.Fatalf("created with policy %+v", site.Policy)
	}
	path := "/api/v1/sites/" + site.UUID

	t.Run("PATCH without policy keeps it", func(t *testing.T) {
		rec := h.do("PATCH", path, `{"name":"p1-renamed"}`)
		if got := decode[SiteDetail](t, rec); rec.Code != http.StatusOK || got.Policy == nil || !got.Policy.Paused {
			t.Fatalf("PATCH = %d, policy %+v", rec.Code, got.Policy)
		}
	})
	t.Run("PATCH with a bad policy names the field", func(t *testing.T) {
		wantError(t, h.do("PATCH", path, `{"policy":{"maintenance_windows":[{"start":"9:00","end":"10:00"}]}}`),
			http.StatusBadRequest, CodeInvalidArgument, "policy.maintenance_windows[0].start: want HH:MM")
	})
	t.Run("PUT normalises days, names and cron spacing", func(t *testing.T) {
		rec := h.do("PUT", path+"/policy", `{"schedule":{"cron":" 30  2 * * * ","timezone":" Europe/Berlin "},
			"maintenance_windows":[{"name":" night ","days":["Monday"," TUE"],"start":"22:00","end":"02:00"}]}`)
		if rec.Code != http.StatusOK {
			t.Fatalf("PUT = %d %s", rec.Code, rec.Body)
		}
		got := decode[PolicyView](t, rec)
		want := domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "30 2 * * *", Timezone: "Europe/Berlin"},
			MaintenanceWindows: []domain.MaintenanceWindow{{Name: "night", Days: []string{"mon", "tue"}, Start: "22:00", End: "02:00"}}}
		if !reflect.DeepEqual(got.Policy, want) {
			t.Errorf("policy = %+v\nwant %+v", got.Policy, want)
		}
		// 2026-01-02 02:30 Berlin has passed at 03:04 UTC: the next is the 3rd, 01:30 UTC.
		if len(got.NextCronRuns) != 3 || got.NextCronRuns[0].Format("2006-01-02T15:04Z07:00") != "2026-01-03T01:30Z" {
			t.Errorf("next cron runs = %v", got.NextCronRuns)
		}
		// The window is Monday and Tuesday only; testNow is a Friday.
		if got.InWindow != "" {
			t.Errorf("in window %q on a Friday", got.InWindow)
		}
	})
	t.Run("a manual job outside windows is marked manual, not paused", func(t *testing.T) {
		rec := h.do("POST", path+"/jobs", `{"type":"preflight"}`)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("job = %d %s", rec.Code, rec.Body)
		}
		j := h.store.jobs[decode[JobAccepted](t, rec).JobID]
		if j.Trigger != domain.TriggerManual || j.PolicyNote != "" {
			t.Errorf("job trigger %q note %q", j.Trigger, j.PolicyNote)
		}
	})
	t.Run("inside a window: 409 naming it, then forced", func(t *testing.T) {
		if rec := h.do("PUT", path+"/policy", `{"paused":true,"maintenance_windows":[{"name":"fri","days":["fri"],"start":"03:00","end":"04:00"}]}`); rec.Code != http.StatusOK {
			t.Fatalf("PUT = %d %s", rec.Code, rec.Body)
		}
		view := decode[PolicyView](t, h.do("GET", path+"/policy", ""))
		if view.InWindow == "" || view.WindowEndsAt == nil || view.WindowEndsAt.Format("15:04") != "04:00" {
			t.Errorf("view = %+v", view)
		}
		wantError(t, h.do("POST", path+"/jobs", `{"type":"backup"}`), http.StatusConflict, CodeMaintenanceWindow,
			`site "p1-renamed" is in maintenance window "fri" (03:00-04:00 UTC) until 2026-01-02T04:00:00Z`)
		rec := h.do("POST", path+"/jobs", `{"type":"backup","force":true}`)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("forced job = %d %s", rec.Code, rec.Body)
		}
		j := h.store.jobs[decode[JobAccepted](t, rec).JobID]
		if want := `started by hand while the site is paused; forced inside maintenance window "fri" (03:00-04:00 UTC)`; j.PolicyNote != want {
			t.Errorf("note %q, want %q", j.PolicyNote, want)
		}
	})
	t.Run("PUT {} clears the policy", func(t *testing.T) {
		if rec := h.do("PUT", path+"/policy", `{}`); rec.Code != http.StatusOK {
			t.Fatalf("PUT = %d", rec.Code)
		}
		if got := decode[SiteDetail](t, h.do("GET", path, "")); got.Policy != nil {
			t.Errorf("policy after clearing = %+v", got.Policy)
		}
	})
	t.Run("unknown site", func(t *testing.T) {
		wantError(t, h.do("GET", "/api/v1/sites/nope/policy", ""), http.StatusNotFound, CodeNotFound, `site "nope" not found`)
	})
}
