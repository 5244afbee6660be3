package domain

import (
	"strings"
	"testing"
	"time"
)

func TestSiteStatusVerifyHold(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	ok := HealthState{Status: HealthSuccess, Message: "backup succeeded", UpdatedAt: t0}
	warn := HealthState{Status: HealthWarning, Message: "1 of 2 targets failed", UpdatedAt: t0.Add(2 * time.Hour)}

	tests := []struct {
		name  string
		steps func(st *SiteStatus)
		want  Health
		msg   string // the health message contains it
		held  bool
	}{
		{"a backup without a verify sets its health", func(st *SiteStatus) { st.SetHealth(ok) }, HealthSuccess, "backup succeeded", false},
		{"a successful verify leaves the health alone", func(st *SiteStatus) {
			st.SetHealth(warn)
			st.SetVerify(VerifyResult{Status: HealthSuccess, At: t0})
		}, HealthWarning, "targets failed", false},
		{"a failed verify fails the site with its reason", func(st *SiteStatus) {
			st.SetHealth(ok)
			st.SetVerify(VerifyResult{Status: HealthFailed, At: t0, Error: "sqlite target abc: integrity_check: Page 3"})
		}, HealthFailed, VerifyFailedPrefix + "sqlite target abc", true},
		{"a later successful backup does not hide it", func(st *SiteStatus) {
			st.SetVerify(VerifyResult{Status: HealthFailed, At: t0, Error: "count mismatch"})
			st.SetHealth(ok)
		}, HealthFailed, "latest job: success: backup succeeded", true},
		{"a successful verify gives back the health the jobs set meanwhile", func(st *SiteStatus) {
			st.SetHealth(ok)
			st.SetVerify(VerifyResult{Status: HealthFailed, At: t0, Error: "count mismatch"})
			st.SetHealth(warn)
			st.SetVerify(VerifyResult{Status: HealthSuccess, At: t0.Add(3 * time.Hour)})
		}, HealthWarning, "targets failed", false},
		{"two failed verifies keep the health from before the first", func(st *SiteStatus) {
			st.SetHealth(warn)
			st.SetVerify(VerifyResult{Status: HealthFailed, At: t0, Error: "a"})
			st.SetVerify(VerifyResult{Status: HealthFailed, At: t0, Error: "b"})
			st.SetVerify(VerifyResult{Status: HealthSuccess, At: t0})
		}, HealthWarning, "targets failed", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var st SiteStatus
			tc.steps(&st)
			if st.Health.Status != tc.want || !strings.Contains(st.Health.Message, tc.msg) {
				t.Errorf("health = %+v, want %s containing %q", st.Health, tc.want, tc.msg)
			}
			if (st.HeldHealth != nil) != tc.held {
				t.Errorf("held = %+v, want held %v", st.HeldHealth, tc.held)
			}
		})
	}
}
