package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

func TestWindowAt(t *testing.T) {
	loc := berlin(t)
	at := func(m time.Month, d, h, mi int) time.Time { return time.Date(2026, m, d, h, mi, 0, 0, loc) }
	nightly := domain.MaintenanceWindow{Name: "nightly", Start: "22:00", End: "02:00", Timezone: "Europe/Berlin"}
	weekday := domain.MaintenanceWindow{Days: []string{"mon", "Tuesday"}, Start: "09:00", End: "17:00", Timezone: "Europe/Berlin"}
	cases := []struct {
		name    string
		w       domain.MaintenanceWindow
		t       time.Time
		in      bool
		wantEnd time.Time
	}{
		{"before start", nightly, at(time.June, 1, 21, 59), false, time.Time{}},
		{"at start", nightly, at(time.June, 1, 22, 0), true, at(time.June, 2, 2, 0)},
		{"after midnight, still in yesterday's window", nightly, at(time.June, 2, 1, 59), true, at(time.June, 2, 2, 0)},
		{"at end", nightly, at(time.June, 2, 2, 0), false, time.Time{}},
		{"weekday window on monday", weekday, at(time.June, 1, 10, 0), true, at(time.June, 1, 17, 0)}, // 2026-06-01 is a Monday
		{"weekday window on tuesday", weekday, at(time.June, 2, 16, 59), true, at(time.June, 2, 17, 0)},
		{"weekday window not on wednesday", weekday, at(time.June, 3, 10, 0), false, time.Time{}},
		// The night the clock springs forward: 22:00 CET to 02:00, a wall
		// time that does not exist, so the window ends at 03:00 CEST.
		{"window over the spring gap", nightly, time.Date(2026, 3, 29, 0, 59, 0, 0, time.UTC), true,
			time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, err := ParseWindow(tc.w)
			if err != nil {
				t.Fatal(err)
			}
			end, in := w.At(tc.t)
			if in != tc.in || !end.Equal(tc.wantEnd) {
				t.Fatalf("At(%s) = %s, %v; want %s, %v", tc.t, end, in, tc.wantEnd, tc.in)
			}
		})
	}
}

func TestCompileNamesTheField(t *testing.T) {
	cases := []struct {
		name string
		p    domain.SitePolicy
		want string
	}{
		{"cron and interval", domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "0 2 * * *", IntervalMinutes: 60}}, "schedule: give either"},
		{"bad cron", domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "0 2 * *"}}, "schedule.cron:"},
		{"cron never matches", domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "0 0 30 2 *"}}, "schedule.cron: \"0 0 30 2 *\" never matches"},
		{"bad zone", domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "0 2 * * *", Timezone: "Nowhere/Land"}}, "schedule.cron: time zone"},
		{"negative interval", domain.SitePolicy{Schedule: &domain.BackupSchedule{IntervalMinutes: -5}}, "schedule.interval_minutes:"},
		{"zone with interval", domain.SitePolicy{Schedule: &domain.BackupSchedule{IntervalMinutes: 60, Timezone: "UTC"}}, "schedule.timezone:"},
		{"empty schedule", domain.SitePolicy{Schedule: &domain.BackupSchedule{}}, "schedule: give interval_minutes"},
		{"retention keeps nothing", domain.SitePolicy{Retention: &domain.RetentionKeep{}}, "retention.keeps nothing"},
		{"retention negative", domain.SitePolicy{Retention: &domain.RetentionKeep{KeepLast: -1}}, "retention.keep_last:"},
		{"retention bad within", domain.SitePolicy{Retention: &domain.RetentionKeep{KeepWithin: "3 weeks"}}, "retention.keep_within:"},
		{"window start", domain.SitePolicy{MaintenanceWindows: []domain.MaintenanceWindow{{Start: "25:00", End: "01:00"}}}, "maintenance_windows[0].start:"},
		{"window end", domain.SitePolicy{MaintenanceWindows: []domain.MaintenanceWindow{{Start: "01:00", End: "1am"}}}, "maintenance_windows[0].end:"},
		{"window day", domain.SitePolicy{MaintenanceWindows: []domain.MaintenanceWindow{{Start: "01:00", End: "02:00"}, {Days: []string{"caturday"}, Start: "01:00", End: "02:00"}}}, "maintenance_windows[1].days[0]:"},
		{"window zone", domain.SitePolicy{MaintenanceWindows: []domain.MaintenanceWindow{{Start: "01:00", End: "02:00", Timezone: "X/Y"}}}, "maintenance_windows[0].timezone:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(&tc.p)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("Compile = %v, want an error starting %q", err, tc.want)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		p := domain.SitePolicy{Paused: true, Schedule: &domain.BackupSchedule{Cron: "30 2 * * *", Timezone: "Europe/Berlin"},
			Retention:          &domain.RetentionKeep{KeepLast: 1},
			MaintenanceWindows: []domain.MaintenanceWindow{{Start: "09:00", End: "17:00", Days: []string{"mon"}}}}
		c, err := Compile(&p)
		if err != nil || !c.Paused || c.Cron == nil || len(c.Windows) != 1 {
			t.Fatalf("Compile = %+v, %v", c, err)
		}
	})
}

func TestExpectedGap(t *testing.T) {
	now := time.Date(2026, 6, 3, 12, 0, 0, 0, time.UTC) // a Wednesday
	cases := []struct {
		name string
		p    *domain.SitePolicy
		want time.Duration
	}{
		{"no policy: the global interval", nil, 24 * time.Hour},
		{"own interval", &domain.SitePolicy{Schedule: &domain.BackupSchedule{IntervalMinutes: 90}}, 90 * time.Minute},
		{"weekday cron sees the weekend", &domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "0 2 * * mon-fri"}}, 72 * time.Hour},
		{"weekly cron", &domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "@weekly"}}, 7 * 24 * time.Hour},
		{"plus the longest window", &domain.SitePolicy{MaintenanceWindows: []domain.MaintenanceWindow{
			{Start: "22:00", End: "02:00"}, {Start: "09:00", End: "10:00"}}}, 28 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Compile(tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.ExpectedGap(now, 24*time.Hour); got != tc.want {
				t.Fatalf("ExpectedGap = %s, want %s", got, tc.want)
			}
		})
	}
}
