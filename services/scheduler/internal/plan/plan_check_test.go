package plan

import (
	"reflect"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

func TestPlanCheck(t *testing.T) {
	now := at("2026-11-25T12:00:00Z")
	week := 7 * day
	st := Settings{ScanInterval: day, SyncInterval: day, SyncEnabled: true, CheckInterval: week}

	t.Run("turned on makes its schedule at its offset, off removes it", func(t *testing.T) {
		out := Plan(Input{Now: now, Settings: st})
		var check *store.Schedule
		for i := range out.Create {
			if out.Create[i].ID == "check" {
				check = &out.Create[i]
			}
		}
		if check == nil || check.Kind != store.ScheduleCheck || check.SiteUUID != "" || check.IntervalSeconds != int64(week/time.Second) ||
			!check.NextRunAt.Equal(NextSlot(now, week, Offset(CheckKey, week))) {
			t.Fatalf("Create = %+v", out.Create)
		}
		off := st
		off.CheckInterval = 0
		if got := Plan(Input{Now: now, Settings: off, Schedules: out.Create}); !reflect.DeepEqual(got.Delete, []string{"check"}) {
			t.Errorf("check off: Delete = %v", got.Delete)
		}
	})

	t.Run("due: a repository job of type check, next slot one interval on", func(t *testing.T) {
		out := Plan(Input{Now: now, Settings: st, ActiveKnown: true,
			Schedules: []store.Schedule{{ID: "check", Kind: "check", IntervalSeconds: int64(week / time.Second), NextRunAt: now.Add(-time.Minute)},
				{ID: "sync", Kind: "sync", IntervalSeconds: 86400, NextRunAt: now.Add(time.Hour)}}})
		if len(out.Fire) != 1 {
			t.Fatalf("Fire = %v", ids(out.Fire))
		}
		r := out.Fire[0]
		if r.Job.Type != domain.JobCheck || r.Job.SiteUUID != "" || r.Job.ID != JobID("check", "", now.Add(-time.Minute)) ||
			!r.Swap.Schedule.NextRunAt.After(now) || r.Swap.Schedule.NextRunAt.Sub(now) > week {
			t.Errorf("run = %+v", r)
		}
	})

	t.Run("waits behind a running sync, and a due sync behind it", func(t *testing.T) {
		out := Plan(Input{Now: now, Settings: st, ActiveKnown: true,
			Schedules: []store.Schedule{{ID: "check", Kind: "check", IntervalSeconds: int64(week / time.Second), NextRunAt: now},
				{ID: "sync", Kind: "sync", IntervalSeconds: 86400, NextRunAt: now}},
			Active: []domain.Job{active("api-sync", "", domain.JobResticSync, domain.StatusRunning)}})
		if len(out.Fire) != 0 || len(out.Waiting) != 2 {
			t.Errorf("Fire = %v, Waiting = %+v", ids(out.Fire), out.Waiting)
		}
		out = Plan(Input{Now: now, Settings: st, ActiveKnown: true,
			Schedules: []store.Schedule{{ID: "check", Kind: "check", IntervalSeconds: int64(week / time.Second), NextRunAt: now},
				{ID: "sync", Kind: "sync", IntervalSeconds: 86400, NextRunAt: now}}})
		// One repository job at a time: the sync fires, the check waits for it.
		if !reflect.DeepEqual(ids(out.Fire), []string{"sync:"}) || len(out.Waiting) != 1 || out.Waiting[0].Kind != "check" {
			t.Errorf("Fire = %v, Waiting = %+v", ids(out.Fire), out.Waiting)
		}
	})
}
