package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

type sitesFake map[string]domain.Site

var errGone = errors.New("not found")
var errStore = errors.New("store down")

func (f sitesFake) GetSite(_ context.Context, uuid string) (domain.Site, error) {
	if uuid == "broken" {
		return domain.Site{}, errStore
	}
	s, ok := f[uuid]
	if !ok {
		return domain.Site{}, errGone
	}
	return s, nil
}

// TestHoldFor: a queued job of a site inside one of its windows is held
// until the window ends; a forced job, a restore, a repository job, a
// site without windows or outside them, and a deleted site are not; a
// store error is an error, not a start.
func TestHoldFor(t *testing.T) {
	loc := berlin(t)
	now := time.Date(2026, time.June, 1, 23, 0, 0, 0, loc)
	nightly := domain.MaintenanceWindow{Name: "nightly", Start: "22:00", End: "02:00", Timezone: "Europe/Berlin"}
	sites := sitesFake{
		"in":    {UUID: "in", Name: "plant", Policy: &domain.SitePolicy{MaintenanceWindows: []domain.MaintenanceWindow{nightly}}},
		"out":   {UUID: "out", Name: "depot", Policy: &domain.SitePolicy{MaintenanceWindows: []domain.MaintenanceWindow{{Start: "08:00", End: "09:00", Timezone: "Europe/Berlin"}}}},
		"plain": {UUID: "plain", Name: "shop"},
	}
	hold := HoldFor(sites, func(err error) bool { return errors.Is(err, errGone) }, func() time.Time { return now })
	cases := []struct {
		name     string
		job      domain.Job
		held     bool
		wantErr  bool
		wantWhy  string
		wantTill time.Time
	}{
		{name: "backup in a window", job: domain.Job{SiteUUID: "in", Type: domain.JobBackup}, held: true,
			wantWhy: `site "plant" is in maintenance window "nightly" (22:00-02:00 Europe/Berlin) until 2026-06-02T00:00:00Z`, wantTill: time.Date(2026, time.June, 2, 2, 0, 0, 0, loc)},
		{name: "verify in a window", job: domain.Job{SiteUUID: "in", Type: domain.JobVerify}, held: true},
		{name: "forced into the window", job: domain.Job{SiteUUID: "in", Type: domain.JobBackup, PolicyNote: "started by hand while the site is paused; " + NoteForcedWindow + " nightly"}},
		{name: "restore", job: domain.Job{SiteUUID: "in", Type: domain.JobRestore}},
		{name: "repository job", job: domain.Job{Type: domain.JobResticSync}},
		{name: "outside the window", job: domain.Job{SiteUUID: "out", Type: domain.JobBackup}},
		{name: "no windows", job: domain.Job{SiteUUID: "plain", Type: domain.JobBackup}},
		{name: "deleted site", job: domain.Job{SiteUUID: "gone", Type: domain.JobBackup}},
		{name: "store error", job: domain.Job{SiteUUID: "broken", Type: domain.JobBackup}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			until, why, err := hold(context.Background(), tc.job)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if held := !until.IsZero(); held != tc.held {
				t.Fatalf("held = %v (until %s, %q), want %v", held, until, why, tc.held)
			}
			if tc.wantWhy != "" && !strings.Contains(why, tc.wantWhy) {
				t.Errorf("why = %q, want it to say %q", why, tc.wantWhy)
			}
			if !tc.wantTill.IsZero() && !until.Equal(tc.wantTill) {
				t.Errorf("until = %s, want %s", until, tc.wantTill)
			}
		})
	}
}
