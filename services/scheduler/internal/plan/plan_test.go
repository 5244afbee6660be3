package plan

import (
	"reflect"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

const day = 24 * time.Hour

var settings = Settings{ScanInterval: day, RetentionInterval: day, SyncInterval: day, SyncEnabled: false}

// slotOf is site's backup slot on the day of t (at or after t's midnight).
func slotOf(site string, t time.Time) time.Time {
	midnight := t.UTC().Truncate(day)
	return midnight.Add(Offset(site, day))
}

func tp(t time.Time) *time.Time { return &t }

func backup(site string, next time.Time) store.Schedule {
	return store.Schedule{ID: "backup:" + site, Kind: "backup", SiteUUID: site, IntervalSeconds: 86400, NextRunAt: next}
}

// ran marks sc as having queued job for the run due at due, at queued.
func ran(sc store.Schedule, due, queued time.Time, job string) store.Schedule {
	sc.LastDueAt, sc.LastRunAt, sc.LastJobID = tp(due), tp(queued), job
	return sc
}

func retention(site string, next time.Time) store.Schedule {
	return store.Schedule{ID: "retention:" + site, Kind: "retention", SiteUUID: site, IntervalSeconds: 86400, NextRunAt: next}
}

func active(id, site string, typ domain.JobType, status domain.JobStatus) domain.Job {
	return domain.Job{ID: id, SiteUUID: site, Type: typ, Status: status}
}

func ids(runs []Run) []string {
	out := []string{}
	for _, r := range runs {
		out = append(out, r.Kind+":"+r.SiteUUID)
	}
	return out
}

func TestPlan(t *testing.T) {
	now := at("2026-11-25T12:00:00Z")
	sA := slotOf("site-a", now) // site-a's slot today
	if !sA.Before(now) {
		sA = sA.Add(-day)
	} // the last slot at or before now
	yesterdayA := sA.Add(-day)

	tests := []struct {
		name  string
		in    Input
		check func(t *testing.T, out Output)
	}{
		{
			name: "new site gets its schedules at its first slot and nothing runs yet",
			in:   Input{Now: now, Settings: settings, Sites: []string{"site-a"}},
			check: func(t *testing.T, out Output) {
				first := NextSlot(now, day, Offset("site-a", day))
				want := []store.Schedule{
					{ID: "backup:site-a", Kind: "backup", SiteUUID: "site-a", IntervalSeconds: 86400, NextRunAt: first, UpdatedAt: now},
					{ID: "retention:site-a", Kind: "retention", SiteUUID: "site-a", IntervalSeconds: 86400, NextRunAt: first, UpdatedAt: now},
				}
				if !reflect.DeepEqual(out.Create, want) {
					t.Errorf("Create = %+v\nwant %+v", out.Create, want)
				}
				if out.NeedActive || len(out.Fire) > 0 {
					t.Errorf("runs for a new site: %+v", out)
				}
			},
		},
		{
			name: "nothing due: no active jobs needed",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"},
				Schedules: []store.Schedule{backup("site-a", sA.Add(day)), retention("site-a", sA.Add(day))}},
			check: func(t *testing.T, out Output) {
				if out.NeedActive || len(out.Fire)+len(out.Create)+len(out.Delete) > 0 {
					t.Errorf("out = %+v", out)
				}
			},
		},
		{
			name: "due backup without the active jobs asks for them",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"},
				Schedules: []store.Schedule{backup("site-a", sA), retention("site-a", sA)}},
			check: func(t *testing.T, out Output) {
				if !out.NeedActive || len(out.Fire) > 0 {
					t.Errorf("NeedActive = %v, Fire = %v", out.NeedActive, ids(out.Fire))
				}
			},
		},
		{
			name: "due backup of an idle site fires and moves to the next slot",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"}, ActiveKnown: true,
				Schedules: []store.Schedule{backup("site-a", sA), retention("site-a", sA)}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 1 {
					t.Fatalf("Fire = %v", ids(out.Fire))
				}
				r := out.Fire[0]
				wantJob := domain.Job{ID: JobID("backup", "site-a", sA), SiteUUID: "site-a", Type: domain.JobBackup,
					Status: domain.StatusQueued, CreatedAt: now, Trigger: domain.TriggerSchedule}
				if !reflect.DeepEqual(r.Job, wantJob) {
					t.Errorf("job = %+v\nwant %+v", r.Job, wantJob)
				}
				next := r.Swap.Schedule
				if !r.Swap.Expect.Equal(sA) || !next.NextRunAt.Equal(sA.Add(day)) || !next.LastDueAt.Equal(sA) ||
					!next.LastRunAt.Equal(now) || next.LastJobID != wantJob.ID {
					t.Errorf("swap = expect %s, %+v", r.Swap.Expect, next)
				}
			},
		},
		{
			name: "slots missed while down give one run, then the next slot",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"}, ActiveKnown: true,
				Schedules: []store.Schedule{backup("site-a", sA.Add(-3*day)), retention("site-a", sA.Add(-3*day))}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 1 || !out.Fire[0].Due.Equal(sA.Add(-3*day)) || !out.Fire[0].Swap.Schedule.NextRunAt.Equal(sA.Add(day)) {
					t.Errorf("Fire = %+v", out.Fire)
				}
			},
		},
		{
			name: "a site with any job queued or running waits",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a", "site-b"}, ActiveKnown: true,
				Schedules: []store.Schedule{backup("site-a", sA), retention("site-a", sA), backup("site-b", now), retention("site-b", now.Add(day))},
				Active:    []domain.Job{active("manual", "site-a", domain.JobPreflight, domain.StatusRunning)}},
			check: func(t *testing.T, out Output) {
				if got := ids(out.Fire); !reflect.DeepEqual(got, []string{"backup:site-b"}) {
					t.Errorf("Fire = %v", got)
				}
				if len(out.Waiting) != 1 || out.Waiting[0].SiteUUID != "site-a" || out.Waiting[0].BlockedBy.ID != "manual" {
					t.Errorf("Waiting = %+v", out.Waiting)
				}
			},
		},
		{
			name: "the run's own job still queued is resumed, running is adopted",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a", "site-b"}, ActiveKnown: true,
				Schedules: []store.Schedule{backup("site-a", sA), retention("site-a", sA.Add(day)), backup("site-b", now), retention("site-b", now.Add(day))},
				Active: []domain.Job{
					active(JobID("backup", "site-a", sA), "site-a", domain.JobBackup, domain.StatusQueued),
					active(JobID("backup", "site-b", now), "site-b", domain.JobBackup, domain.StatusRunning),
				}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 0 || len(out.Waiting) != 0 {
					t.Errorf("Fire = %v, Waiting = %+v", ids(out.Fire), out.Waiting)
				}
				if got := ids(out.Resume); !reflect.DeepEqual(got, []string{"backup:site-a"}) {
					t.Errorf("Resume = %v", got)
				}
				if got := ids(out.Adopt); !reflect.DeepEqual(got, []string{"backup:site-b"}) {
					t.Errorf("Adopt = %v", got)
				}
				if !out.Resume[0].Swap.Schedule.NextRunAt.Equal(sA.Add(day)) {
					t.Errorf("resumed schedule not moved on: %+v", out.Resume[0].Swap.Schedule)
				}
			},
		},
		{
			name: "retention follows a finished backup, keyed on that backup",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"}, ActiveKnown: true,
				Schedules: []store.Schedule{
					ran(backup("site-a", sA.Add(day)), sA, sA.Add(time.Minute), "b1"),
					ran(retention("site-a", sA), yesterdayA, yesterdayA.Add(time.Hour), "r0"),
				}},
			check: func(t *testing.T, out Output) {
				if got := ids(out.Fire); !reflect.DeepEqual(got, []string{"retention:site-a"}) {
					t.Fatalf("Fire = %v", got)
				}
				r := out.Fire[0]
				if r.Job.Type != domain.JobRetention || r.Job.ID != JobID("retention", "site-a", sA) {
					t.Errorf("job = %+v", r.Job)
				}
				if !r.Swap.Schedule.NextRunAt.Equal(sA.Add(day)) || !r.Swap.Schedule.LastDueAt.Equal(sA) {
					t.Errorf("retention moves to %s (last due %s), want the next backup slot %s",
						r.Swap.Schedule.NextRunAt, r.Swap.Schedule.LastDueAt, sA.Add(day))
				}
			},
		},
		{
			name: "retention waits while the backup runs",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"}, ActiveKnown: true,
				Schedules: []store.Schedule{ran(backup("site-a", sA.Add(day)), sA, sA, "b1"), retention("site-a", sA)},
				Active:    []domain.Job{active("b1", "site-a", domain.JobBackup, domain.StatusRunning)}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 0 || len(out.Waiting) != 1 || out.Waiting[0].Kind != "retention" {
					t.Errorf("Fire = %v, Waiting = %+v", ids(out.Fire), out.Waiting)
				}
			},
		},
		{
			name: "no retention twice for one backup",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"},
				Schedules: []store.Schedule{
					ran(backup("site-a", sA.Add(day)), sA, sA.Add(time.Minute), "b1"),
					ran(retention("site-a", sA), sA, sA.Add(time.Hour), "r1"),
				}},
			check: func(t *testing.T, out Output) {
				if out.NeedActive || len(out.Fire) > 0 {
					t.Errorf("out = %+v", out)
				}
			},
		},
		{
			name: "retention not before its interval, even after a backup",
			in: Input{Now: now, Settings: Settings{ScanInterval: day, RetentionInterval: 7 * day, SyncInterval: day}, Sites: []string{"site-a"},
				Schedules: []store.Schedule{
					ran(backup("site-a", sA.Add(day)), sA, sA.Add(time.Minute), "b2"),
					ran(store.Schedule{ID: "retention:site-a", Kind: "retention", SiteUUID: "site-a", IntervalSeconds: 7 * 86400, NextRunAt: yesterdayA.Add(7 * day)},
						yesterdayA, yesterdayA.Add(time.Hour), "r1"),
				}},
			check: func(t *testing.T, out Output) {
				if out.NeedActive || len(out.Fire) > 0 {
					t.Errorf("out = %+v", out)
				}
			},
		},
		{
			name: "backup and retention due together: the backup first",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-a"}, ActiveKnown: true,
				Schedules: []store.Schedule{
					ran(backup("site-a", sA), yesterdayA, yesterdayA, "b0"),
					retention("site-a", yesterdayA),
				}},
			check: func(t *testing.T, out Output) {
				if got := ids(out.Fire); !reflect.DeepEqual(got, []string{"backup:site-a"}) {
					t.Errorf("Fire = %v", got)
				}
				if len(out.Waiting) != 1 || out.Waiting[0].Kind != "retention" {
					t.Errorf("Waiting = %+v", out.Waiting)
				}
			},
		},
		{
			name: "retention off: its schedules go, none made",
			in: Input{Now: now, Settings: Settings{ScanInterval: day, SyncInterval: day}, Sites: []string{"site-a", "site-b"},
				Schedules: []store.Schedule{backup("site-a", sA.Add(day)), retention("site-a", sA), backup("site-b", now.Add(time.Hour))}},
			check: func(t *testing.T, out Output) {
				if !reflect.DeepEqual(out.Delete, []string{"retention:site-a"}) || len(out.Create) != 0 {
					t.Errorf("Delete = %v, Create = %+v", out.Delete, out.Create)
				}
			},
		},
		{
			name: "a removed site's schedules go",
			in: Input{Now: now, Settings: settings, Sites: []string{"site-b"},
				Schedules: []store.Schedule{backup("site-a", sA), retention("site-a", sA), backup("site-b", now.Add(time.Hour)), retention("site-b", now.Add(time.Hour))}},
			check: func(t *testing.T, out Output) {
				if !reflect.DeepEqual(out.Delete, []string{"backup:site-a", "retention:site-a"}) || out.NeedActive {
					t.Errorf("Delete = %v, NeedActive = %v", out.Delete, out.NeedActive)
				}
			},
		},
		{
			name: "sync: a repository job, waits for another repository job",
			in: Input{Now: now, Settings: Settings{ScanInterval: day, SyncInterval: 6 * time.Hour, SyncEnabled: true}, ActiveKnown: true,
				Schedules: []store.Schedule{{ID: "sync", Kind: "sync", IntervalSeconds: 6 * 3600, NextRunAt: now.Add(-time.Minute)}}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 1 {
					t.Fatalf("Fire = %v", ids(out.Fire))
				}
				r := out.Fire[0]
				if r.Job.Type != domain.JobResticSync || r.Job.SiteUUID != "" || r.Swap.Schedule.NextRunAt.Sub(now) > 6*time.Hour || !r.Swap.Schedule.NextRunAt.After(now) {
					t.Errorf("run = %+v", r)
				}
			},
		},
		{
			name: "sync waits for a running repository job",
			in: Input{Now: now, Settings: Settings{ScanInterval: day, SyncInterval: day, SyncEnabled: true}, ActiveKnown: true,
				Schedules: []store.Schedule{{ID: "sync", Kind: "sync", IntervalSeconds: 86400, NextRunAt: now}},
				Active:    []domain.Job{active("api-sync", "", domain.JobResticSync, domain.StatusRunning)}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 0 || len(out.Waiting) != 1 || out.Waiting[0].BlockedBy.ID != "api-sync" {
					t.Errorf("Fire = %v, Waiting = %+v", ids(out.Fire), out.Waiting)
				}
			},
		},
		{
			name: "sync turned on makes its schedule, off removes it",
			in:   Input{Now: now, Settings: Settings{ScanInterval: day, SyncInterval: day, SyncEnabled: true}},
			check: func(t *testing.T, out Output) {
				if len(out.Create) != 1 || out.Create[0].ID != "sync" || out.Create[0].SiteUUID != "" ||
					!out.Create[0].NextRunAt.Equal(NextSlot(now, day, Offset(SyncKey, day))) {
					t.Errorf("Create = %+v", out.Create)
				}
				off := Plan(Input{Now: now, Settings: Settings{ScanInterval: day}, Schedules: out.Create})
				if !reflect.DeepEqual(off.Delete, []string{"sync"}) {
					t.Errorf("sync off: Delete = %v", off.Delete)
				}
			},
		},
		{
			name: "a shorter scan interval pulls the next run in",
			in: Input{Now: now, Settings: Settings{ScanInterval: 6 * time.Hour, SyncInterval: day}, Sites: []string{"site-a"},
				Schedules: []store.Schedule{backup("site-a", sA.Add(day))}},
			check: func(t *testing.T, out Output) {
				want := NextSlot(now, 6*time.Hour, Offset("site-a", 6*time.Hour))
				if len(out.Reschedule) != 1 || !out.Reschedule[0].Schedule.NextRunAt.Equal(want) ||
					out.Reschedule[0].Schedule.IntervalSeconds != 6*3600 || !out.Reschedule[0].Expect.Equal(sA.Add(day)) {
					t.Errorf("Reschedule = %+v, want next %s", out.Reschedule, want)
				}
			},
		},
		{
			name: "a longer scan interval keeps the next run",
			in: Input{Now: now, Settings: Settings{ScanInterval: 48 * time.Hour, SyncInterval: day}, Sites: []string{"site-a"},
				Schedules: []store.Schedule{backup("site-a", sA.Add(day))}},
			check: func(t *testing.T, out Output) {
				if len(out.Reschedule) != 1 || !out.Reschedule[0].Schedule.NextRunAt.Equal(sA.Add(day)) {
					t.Errorf("Reschedule = %+v", out.Reschedule)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, Plan(tc.in))
		})
	}
}

// Three sites over three days, jobs finishing ten minutes after they
// were queued: each site gets a backup per day at its own time, and a
// retention after each backup; nothing else.
func TestPlanSimulatedDays(t *testing.T) {
	start := at("2026-11-25T00:00:00Z")
	sites := []string{"0b7a3a4e-1111-4c1e-9a55-000000000001", "0b7a3a4e-2222-4c1e-9a55-000000000002", "0b7a3a4e-3333-4c1e-9a55-000000000003"}
	scheds := map[string]store.Schedule{}
	var activeJobs []domain.Job
	finishAt := map[string]time.Time{}
	count := map[string]int{}
	firstAt := map[string]time.Time{}
	for now := start; now.Before(start.Add(3 * day)); now = now.Add(10 * time.Minute) {
		// Jobs finish ten minutes after being queued.
		kept := activeJobs[:0]
		for _, j := range activeJobs {
			if now.Before(finishAt[j.ID]) {
				kept = append(kept, j)
			}
		}
		activeJobs = kept
		in := Input{Now: now, Settings: settings, Sites: sites, Active: activeJobs, ActiveKnown: true}
		for _, sc := range scheds {
			in.Schedules = append(in.Schedules, sc)
		}
		out := Plan(in)
		for _, sc := range out.Create {
			scheds[sc.ID] = sc
		}
		for _, r := range out.Fire {
			if r.Swap.Expect != scheds[r.Swap.Schedule.ID].NextRunAt {
				t.Fatalf("swap expects %s, stored %s", r.Swap.Expect, scheds[r.Swap.Schedule.ID].NextRunAt)
			}
			scheds[r.Swap.Schedule.ID] = r.Swap.Schedule
			activeJobs = append(activeJobs, r.Job)
			finishAt[r.Job.ID] = now.Add(10 * time.Minute)
			key := r.Kind + ":" + r.SiteUUID
			count[key]++
			if _, ok := firstAt[key]; !ok {
				firstAt[key] = now
			}
		}
		if len(out.Resume)+len(out.Adopt) > 0 {
			t.Fatalf("resume/adopt without a crash: %+v", out)
		}
	}
	for _, site := range sites {
		if count["backup:"+site] != 3 || count["retention:"+site] != 3 {
			t.Errorf("site %s: %d backups, %d retentions; want 3 and 3", site, count["backup:"+site], count["retention:"+site])
		}
		if d := firstAt["retention:"+site].Sub(firstAt["backup:"+site]); d != 10*time.Minute {
			t.Errorf("site %s: retention %s after the backup, want the first tick after it finished", site, d)
		}
	}
	if len(count) != 6 {
		t.Errorf("runs: %v", count)
	}
	if firstAt["backup:"+sites[0]] == firstAt["backup:"+sites[1]] && firstAt["backup:"+sites[1]] == firstAt["backup:"+sites[2]] {
		t.Errorf("all sites backed up at the same time: %v", firstAt)
	}
}
