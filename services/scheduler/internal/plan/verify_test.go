package plan

import (
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

func TestPlanVerify(t *testing.T) {
	const week = 7 * day
	now := at("2026-11-25T12:00:00Z")
	set := Settings{ScanInterval: day, VerifyInterval: week}
	off := Offset(VerifyKey("site-a"), week)
	verify := func(next time.Time) store.Schedule {
		return store.Schedule{ID: "verify:site-a", Kind: "verify", SiteUUID: "site-a", IntervalSeconds: int64(week / time.Second), NextRunAt: next}
	}
	future := now.Add(time.Hour)

	tests := []struct {
		name  string
		in    Input
		check func(t *testing.T, out Output)
	}{
		{
			name: "a new site gets a verify schedule at its own weekly slot",
			in:   Input{Now: now, Settings: set, Sites: []string{"site-a"}},
			check: func(t *testing.T, out Output) {
				var got *store.Schedule
				for i, sc := range out.Create {
					if sc.ID == "verify:site-a" {
						got = &out.Create[i]
					}
				}
				if got == nil || !got.NextRunAt.Equal(NextSlot(now, week, off)) || got.Kind != store.ScheduleVerify {
					t.Fatalf("verify schedule: %+v (all %+v)", got, out.Create)
				}
			},
		},
		{
			name: "verify interval 0 schedules none and deletes an existing one",
			in: Input{Now: now, Settings: Settings{ScanInterval: day}, Sites: []string{"site-a"},
				Schedules: []store.Schedule{backup("site-a", future), verify(now.Add(-time.Minute))}},
			check: func(t *testing.T, out Output) {
				if len(out.Delete) != 1 || out.Delete[0] != "verify:site-a" || len(out.Fire) != 0 || out.NeedActive {
					t.Errorf("out: %+v", out)
				}
			},
		},
		{
			name: "a due verify of an idle site fires a verify job and moves to the next weekly slot",
			in: Input{Now: now, Settings: set, Sites: []string{"site-a"}, ActiveKnown: true,
				Schedules: []store.Schedule{backup("site-a", future), verify(now.Add(-time.Minute))}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 1 || out.Fire[0].Job.Type != domain.JobVerify || out.Fire[0].Job.SiteUUID != "site-a" {
					t.Fatalf("Fire = %+v", out.Fire)
				}
				next := out.Fire[0].Swap.Schedule.NextRunAt
				if !next.After(now) || next.Sub(now) > week || !next.Equal(Next(now, now.Add(-time.Minute), week, off)) {
					t.Errorf("next verify at %s", next)
				}
			},
		},
		{
			name: "a due verify waits for the site's running backup",
			in: Input{Now: now, Settings: set, Sites: []string{"site-a"}, ActiveKnown: true,
				Active:    []domain.Job{active("b1", "site-a", domain.JobBackup, domain.StatusRunning)},
				Schedules: []store.Schedule{backup("site-a", future), verify(now.Add(-time.Minute))}},
			check: func(t *testing.T, out Output) {
				if len(out.Fire) != 0 || len(out.Waiting) != 1 || out.Waiting[0].Kind != store.ScheduleVerify {
					t.Errorf("out: %+v", out)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, Plan(tc.in)) })
	}
}
