package scheduler

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

// Per-site policy through the real scheduler, store and NATS, with the
// clock injected through Tick: a paused site gets no scheduled job, a site
// with a 02:30 Europe/Berlin cron is backed up once on the DST spring and
// fall days (one run across a restart of the scheduler, which reads the
// stored spec back), and a maintenance window holds a due run until it
// ends.
func TestSitePolicySchedules(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	const (
		paused = "0b7a3a4e-aaaa-4c1e-9a55-000000000001"
		cron   = "0b7a3a4e-bbbb-4c1e-9a55-000000000002"
		window = "0b7a3a4e-cccc-4c1e-9a55-000000000003"
	)
	sites := []domain.Site{
		{UUID: paused, Name: "paused", Host: "10.0.0.1", Port: 22, User: "b",
			Policy: &domain.SitePolicy{Paused: true, Schedule: &domain.BackupSchedule{IntervalMinutes: 60}}},
		{UUID: cron, Name: "cron", Host: "10.0.0.2", Port: 22, User: "b",
			Policy: &domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "30 2 * * *", Timezone: "Europe/Berlin"}}},
		{UUID: window, Name: "window", Host: "10.0.0.3", Port: 22, User: "b",
			Policy: &domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "0 1 * * *", Timezone: "Europe/Berlin"},
				MaintenanceWindows: []domain.MaintenanceWindow{{Name: "night", Start: "00:30", End: "04:00", Timezone: "Europe/Berlin"}}}},
	}
	if _, err := e.st.InsertSites(ctx, sites); err != nil {
		t.Fatal(err)
	}
	set := Settings{ScanInterval: day, Tick: time.Minute}

	// Run over the spring-forward day and the fall-back day, ticking
	// every 5 minutes from noon the day before (the months between are
	// skipped: their missed runs give one catch-up run then), a new
	// scheduler instance each time (it reads the schedules back from the
	// store). Only the runs on the DST days count.
	backups, all := map[string][]time.Time{}, map[string]int{}
	for _, d := range []time.Time{time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), time.Date(2026, 10, 25, 0, 0, 0, 0, berlin)} {
		s := e.scheduler(t, "sched-"+d.Format("0102"), set)
		for now := d.Add(-12 * time.Hour); now.Before(d.AddDate(0, 0, 1)); now = now.Add(5 * time.Minute) {
			if _, err := s.Tick(ctx, now); err != nil {
				t.Fatalf("tick at %s: %v", now, err)
			}
			for _, r := range e.published(t) {
				all[r.Type+":"+r.SiteUUID]++
				if r.Type == string(domain.JobBackup) && !now.Before(d) {
					backups[r.SiteUUID] = append(backups[r.SiteUUID], now)
				}
			}
			e.finishAll(t, now)
		}
		s.Resign()
	}
	wall := func(ts []time.Time) string {
		var out []string
		for _, t := range ts {
			out = append(out, t.In(berlin).Format("01-02 15:04 MST"))
		}
		return strings.Join(out, ",")
	}
	if all["backup:"+paused]+all["retention:"+paused] != 0 {
		t.Errorf("paused site had scheduled jobs: %v", all)
	}
	// Spring: 02:30 does not exist, the run comes at 03:00 CEST. Fall:
	// 02:30 happens twice, the run comes at the first only.
	if got, want := wall(backups[cron]), "03-29 03:00 CEST,10-25 02:30 CEST"; got != want {
		t.Errorf("cron site backed up at %s, want %s", got, want)
	}
	// 01:00 is inside the 00:30-04:00 window: the run waits for its end.
	if got, want := wall(backups[window]), "03-29 04:00 CEST,10-25 04:00 CET"; got != want {
		t.Errorf("windowed site backed up at %s, want %s", got, want)
	}
	for _, j := range e.allJobs(t) {
		if j.Trigger != domain.TriggerSchedule {
			t.Errorf("job %s (%s) trigger %q, want schedule", j.ID, j.Type, j.Trigger)
		}
	}
	scs, err := e.st.ListSchedules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scs {
		if sc.ID == store.ScheduleID(store.ScheduleBackup, cron) && sc.Spec != "30 2 * * * Europe/Berlin" {
			t.Errorf("stored spec %q", sc.Spec)
		}
		if sc.ID == store.ScheduleID(store.ScheduleBackup, paused) && sc.IntervalSeconds != 3600 {
			t.Errorf("paused site's schedule interval %d, want its own 3600", sc.IntervalSeconds)
		}
	}

	// Resumed: the paused site's overdue backup runs at the next tick.
	sites[0].Policy.Paused = false
	if err := e.st.ReplaceSite(ctx, sites[0]); err != nil {
		t.Fatal(err)
	}
	s := e.scheduler(t, "sched-resume", set)
	defer s.Resign()
	now := time.Date(2026, 10, 26, 12, 0, 0, 0, berlin)
	if _, err := s.Tick(ctx, now); err != nil {
		t.Fatal(err)
	}
	if got := countRequests(e.published(t)); got["backup:"+paused] != 1 {
		t.Errorf("after resuming: %v, want one backup of the resumed site", got)
	}
}

// The leader exports each site's pause and expected backup gap for the
// stale-backup alert, drops a removed site's, and clears them when it
// stops leading.
func TestSitePolicyMetrics(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const (
		weekly = "0b7a3a4e-dddd-4c1e-9a55-000000000004"
		paused = "0b7a3a4e-eeee-4c1e-9a55-000000000005"
	)
	if _, err := e.st.InsertSites(ctx, []domain.Site{
		{UUID: weekly, Name: "weekly", Host: "10.0.0.4", Port: 22, User: "b",
			Policy: &domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "@weekly"},
				MaintenanceWindows: []domain.MaintenanceWindow{{Start: "01:00", End: "03:00"}}}},
		{UUID: paused, Name: "paused", Host: "10.0.0.5", Port: 22, User: "b", Policy: &domain.SitePolicy{Paused: true}},
	}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := New(Deps{Settings: Settings{Instance: "metrics", ScanInterval: day}, Store: e.st, Infra: e.in, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	gauges := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]float64{}
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "satoru_site_") {
				continue
			}
			for _, m := range mf.GetMetric() {
				out[mf.GetName()+"/"+m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
		return out
	}
	now := time.Date(2026, 6, 3, 12, 0, 0, 0, time.UTC)
	if _, err := s.Tick(ctx, now); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"satoru_site_paused/" + weekly: 0, "satoru_site_backup_expected_interval_seconds/" + weekly: (7*24 + 2) * 3600,
		"satoru_site_paused/" + paused: 1, "satoru_site_backup_expected_interval_seconds/" + paused: 24 * 3600,
	}
	if got := gauges(); !reflect.DeepEqual(got, want) {
		t.Fatalf("gauges = %v\nwant %v", got, want)
	}
	if err := e.st.DeleteSite(ctx, paused); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tick(ctx, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got := gauges(); len(got) != 2 || got["satoru_site_paused/"+weekly] != 0 {
		t.Fatalf("after removing a site: %v", got)
	}
	s.Resign()
	if got := gauges(); len(got) != 0 {
		t.Fatalf("after resigning: %v", got)
	}
}
