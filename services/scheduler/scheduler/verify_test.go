package scheduler

import (
	"reflect"
	"testing"
	"time"

	"github.com/satoru/satoru/services/scheduler/internal/plan"
	"github.com/satoru/satoru/shared/domain"
)

// With verify_interval_hours set, every site's latest snapshot is
// verified once a week at its own slot, through the real stream and
// store (0 queueing none is TestPlanVerify's).
func TestSchedulerQueuesVerify(t *testing.T) {
	const week = 7 * day
	e := newEnv(t)
	sites := siteUUIDs(2)
	e.addSites(t, sites...)
	s := e.scheduler(t, "sched-verify", Settings{ScanInterval: day, VerifyInterval: week})
	end := start.Add(15 * day)
	var last time.Time
	for now := start; now.Before(end); now = now.Add(30 * time.Minute) {
		mustTick(t, s, now)
		e.finishAll(t, now)
		last = now
	}
	want := map[string]int{}
	for _, site := range sites {
		off := plan.Offset(plan.VerifyKey(site), week)
		for slot := plan.NextSlot(start, week, off); !slot.After(last); slot = slot.Add(week) {
			want["verify:"+site]++
		}
		want["backup:"+site] = 15
	}
	jobs := e.allJobs(t)
	if got := counts(jobs); !reflect.DeepEqual(got, want) {
		t.Fatalf("jobs = %v, want %v", got, want)
	}
	reqs := e.published(t)
	if got := countRequests(reqs); !reflect.DeepEqual(got, want) {
		t.Errorf("requests = %v, want %v", got, want)
	}
	checkOnce(t, reqs, jobs)
	for _, j := range jobs {
		if j.Type == domain.JobVerify && j.SiteUUID == "" {
			t.Errorf("verify job without a site: %+v", j)
		}
	}
}
