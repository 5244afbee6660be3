package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/policy"
	"github.com/satoru/satoru/shared/store"
)

func compile(t *testing.T, p domain.SitePolicy) policy.Compiled {
	t.Helper()
	c, err := policy.Compile(&p)
	if err != nil {
		t.Fatalf("compile %+v: %v", p, err)
	}
	return c
}

// sim runs the plan every tick from start to end with one site whose jobs
// finish a minute after being queued, and returns when its runs were
// queued by kind.
type sim struct {
	t        *testing.T
	site     string
	settings Settings
	scheds   map[string]store.Schedule
	active   []domain.Job
	finishAt map[string]time.Time
	fired    map[string][]time.Time
	waits    []Wait
}

func newSim(t *testing.T, st Settings) *sim {
	return &sim{t: t, site: "0b7a3a4e-1111-4c1e-9a55-000000000001", settings: st,
		scheds: map[string]store.Schedule{}, finishAt: map[string]time.Time{}, fired: map[string][]time.Time{}}
}

func (s *sim) run(from, to time.Time, tick time.Duration, pol func(now time.Time) policy.Compiled) {
	s.t.Helper()
	for now := from; now.Before(to); now = now.Add(tick) {
		kept := s.active[:0]
		for _, j := range s.active {
			if now.Before(s.finishAt[j.ID]) {
				kept = append(kept, j)
			}
		}
		s.active = kept
		in := Input{Now: now, Settings: s.settings, Sites: []string{s.site}, Active: s.active, ActiveKnown: true,
			Policies: map[string]policy.Compiled{s.site: pol(now)}}
		for _, sc := range s.scheds {
			in.Schedules = append(in.Schedules, sc)
		}
		out := Plan(in)
		for _, sc := range out.Create {
			s.scheds[sc.ID] = sc
		}
		for _, sw := range out.Reschedule {
			s.scheds[sw.Schedule.ID] = sw.Schedule
		}
		for _, r := range out.Fire {
			if !r.Swap.Expect.Equal(s.scheds[r.Swap.Schedule.ID].NextRunAt) {
				s.t.Fatalf("swap expects %s, stored %s", r.Swap.Expect, s.scheds[r.Swap.Schedule.ID].NextRunAt)
			}
			if r.Job.Trigger != domain.TriggerSchedule {
				s.t.Fatalf("scheduled job trigger = %q", r.Job.Trigger)
			}
			s.scheds[r.Swap.Schedule.ID] = r.Swap.Schedule
			s.active = append(s.active, r.Job)
			s.finishAt[r.Job.ID] = now.Add(time.Minute)
			s.fired[r.Kind] = append(s.fired[r.Kind], now)
		}
		s.waits = append(s.waits, out.Waiting...)
	}
}

func wall(ts []time.Time, loc *time.Location) string {
	var out []string
	for _, t := range ts {
		out = append(out, t.In(loc).Format("01-02 15:04 MST"))
	}
	return strings.Join(out, ",")
}

// A 02:30 daily cron in Europe/Berlin over the 2026 DST changes, ticking
// every minute: on the spring day (02:30 does not exist) it runs once, at
// 03:00 CEST; on the fall day (02:30 happens twice) once, at the first.
func TestPlanCronDST(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		from time.Time
		want string
	}{
		{"spring forward", time.Date(2026, 3, 28, 12, 0, 0, 0, loc), "03-28 02:30 CET,03-29 03:00 CEST,03-30 02:30 CEST"},
		{"fall back", time.Date(2026, 10, 24, 12, 0, 0, 0, loc), "10-24 02:30 CEST,10-25 02:30 CEST,10-26 02:30 CET"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := compile(t, domain.SitePolicy{Schedule: &domain.BackupSchedule{Cron: "30 2 * * *", Timezone: "Europe/Berlin"}})
			s := newSim(t, Settings{ScanInterval: day})
			s.run(tc.from.Add(-14*time.Hour), tc.from.Add(2*day), time.Minute, func(time.Time) policy.Compiled { return pol })
			if got := wall(s.fired[store.ScheduleBackup], loc); got != tc.want {
				t.Fatalf("backups at %s, want %s", got, tc.want)
			}
			if sc := s.scheds[store.ScheduleID(store.ScheduleBackup, s.site)]; sc.Spec != "30 2 * * * Europe/Berlin" || sc.IntervalSeconds != 0 {
				t.Errorf("schedule spec = %q interval %d", sc.Spec, sc.IntervalSeconds)
			}
		})
	}
}

func TestPlanPolicy(t *testing.T) {
	start := at("2026-06-01T00:00:00Z")
	t.Run("paused site queues nothing and runs once when resumed", func(t *testing.T) {
		paused := compile(t, domain.SitePolicy{Paused: true})
		resume := start.Add(3 * day)
		s := newSim(t, Settings{ScanInterval: 6 * time.Hour, RetentionInterval: day})
		s.run(start, start.Add(4*day), 10*time.Minute, func(now time.Time) policy.Compiled {
			if now.Before(resume) {
				return paused
			}
			return policy.Compiled{}
		})
		b := s.fired[store.ScheduleBackup]
		if len(b) == 0 || b[0] != resume {
			t.Fatalf("first backup at %v, want %s (the first tick after resuming)", b, resume)
		}
		// After the catch-up, the 6 h slots: 4 more at most in the last day.
		if len(b) > 5 {
			t.Errorf("%d backups after resuming, want the catch-up and the slots: %v", len(b), b)
		}
		if len(s.waits) == 0 || s.waits[0].Held != "site is paused" {
			t.Errorf("waits = %+v, want held by the pause", s.waits)
		}
	})
	t.Run("paused site does not read the active jobs", func(t *testing.T) {
		out := Plan(Input{Now: start, Settings: settings, Sites: []string{"site-a"},
			Schedules: []store.Schedule{backup("site-a", start.Add(-time.Hour))},
			Policies:  map[string]policy.Compiled{"site-a": compile(t, domain.SitePolicy{Paused: true})}})
		if out.NeedActive || len(out.Fire) > 0 || len(out.Waiting) != 1 {
			t.Fatalf("out = %+v", out)
		}
	})
	t.Run("due run waits for the end of a maintenance window, then runs once", func(t *testing.T) {
		// The site's hourly backups, and a window 01:00-04:00 UTC.
		pol := compile(t, domain.SitePolicy{Schedule: &domain.BackupSchedule{IntervalMinutes: 60},
			MaintenanceWindows: []domain.MaintenanceWindow{{Name: "nightly", Start: "01:00", End: "04:00"}}})
		s := newSim(t, Settings{ScanInterval: day})
		s.run(start, start.Add(6*time.Hour), time.Minute, func(time.Time) policy.Compiled { return pol })
		var hours []string
		for _, f := range s.fired[store.ScheduleBackup] {
			hours = append(hours, f.UTC().Format("15:04"))
		}
		// Slots are at the site's offset in the hour; a tick each minute
		// queues a slot at the first minute at or after it.
		tickOf := func(h int) string {
			slot := NextSlot(start.Add(time.Duration(h)*time.Hour), time.Hour, Offset(s.site, time.Hour))
			return NextSlot(slot, time.Minute, 0).Format("15:04")
		}
		want := []string{tickOf(0), "04:00", tickOf(4), tickOf(5)}
		if strings.Join(hours, ",") != strings.Join(want, ",") {
			t.Fatalf("backups at %v, want %v", hours, want)
		}
		var held *Wait
		for i := range s.waits {
			if s.waits[i].Held != "" {
				held = &s.waits[i]
				break
			}
		}
		if held == nil || !strings.Contains(held.Reason(), `"nightly"`) || !held.Until.Equal(start.Add(4*time.Hour)) {
			t.Fatalf("held wait = %+v", held)
		}
	})
	t.Run("interval override reschedules to the earlier slot", func(t *testing.T) {
		next := start.Add(20 * time.Hour)
		out := Plan(Input{Now: start, Settings: settings, Sites: []string{"site-a"},
			Schedules: []store.Schedule{backup("site-a", next)},
			Policies:  map[string]policy.Compiled{"site-a": compile(t, domain.SitePolicy{Schedule: &domain.BackupSchedule{IntervalMinutes: 30}})}})
		if len(out.Reschedule) != 1 {
			t.Fatalf("Reschedule = %+v", out.Reschedule)
		}
		sc := out.Reschedule[0].Schedule
		if sc.IntervalSeconds != 1800 || sc.NextRunAt.After(start.Add(30*time.Minute)) {
			t.Fatalf("rescheduled to %+v", sc)
		}
	})
	t.Run("cron replaced by the global interval clears the spec", func(t *testing.T) {
		sc := backup("site-a", start.Add(time.Hour))
		sc.IntervalSeconds, sc.Spec = 0, "30 2 * * * UTC"
		out := Plan(Input{Now: start, Settings: settings, Sites: []string{"site-a"}, Schedules: []store.Schedule{sc}})
		if len(out.Reschedule) != 1 || out.Reschedule[0].Schedule.Spec != "" || out.Reschedule[0].Schedule.IntervalSeconds != 86400 {
			t.Fatalf("Reschedule = %+v", out.Reschedule)
		}
	})
}
