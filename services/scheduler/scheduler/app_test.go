package scheduler

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/services/scheduler/internal/plan"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/store"
)

var start = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)

var daily = Settings{ScanInterval: day, RetentionInterval: day, SyncInterval: day, SyncEnabled: true}

// wantDaily is what three days of daily scheduling give three sites: a
// backup and a retention per site per day, a sync per day.
func wantDaily(sites []string, days int) map[string]int {
	want := map[string]int{"restic_sync:": days}
	for _, s := range sites {
		want["backup:"+s] = days
		want["retention:"+s] = days
	}
	return want
}

func mustTick(t *testing.T, s *Scheduler, now time.Time) TickResult {
	t.Helper()
	res, err := s.Tick(ctxT(t), now)
	if err != nil {
		t.Fatalf("tick at %s: %v", now, err)
	}
	return res
}

// checkOnce fails unless every request was published once and matches a
// stored job.
func checkOnce(t *testing.T, reqs []events.JobRequest, jobs []domain.Job) {
	t.Helper()
	byID := map[string]domain.Job{}
	for _, j := range jobs {
		byID[j.ID] = j
	}
	seen := map[string]bool{}
	for _, r := range reqs {
		if seen[r.JobID] {
			t.Errorf("job %s published twice", r.JobID)
		}
		seen[r.JobID] = true
		j, ok := byID[r.JobID]
		if !ok || string(j.Type) != r.Type || j.SiteUUID != r.SiteUUID {
			t.Errorf("request %+v has no matching job (%+v)", r, j)
		}
	}
	if len(seen) != len(jobs) {
		t.Errorf("%d jobs stored, %d published", len(jobs), len(seen))
	}
}

// Three sites over three simulated days, a tick every 10 minutes, the
// test finishing every job right after the tick that queued it. Halfway
// the scheduler is replaced (a restart on the same store).
func TestThreeSitesThreeDays(t *testing.T) {
	for _, restart := range []struct {
		name   string
		resign bool // a clean stop; otherwise a crash, restarted under the same instance name
	}{{"clean restart", true}, {"crash restart", false}} {
		t.Run(restart.name, func(t *testing.T) {
			e := newEnv(t)
			sites := siteUUIDs(3)
			e.addSites(t, sites...)
			s := e.scheduler(t, "sched-1", daily)
			var queued int
			for now := start; now.Before(start.Add(3 * day)); now = now.Add(10 * time.Minute) {
				if now.Equal(start.Add(36 * time.Hour)) {
					if restart.resign {
						s.Resign()
					}
					s = e.scheduler(t, "sched-1", daily)
				}
				res := mustTick(t, s, now)
				if !res.Leader || res.Failed > 0 || res.Lost > 0 || res.Resumed > 0 || res.Adopted > 0 {
					t.Fatalf("tick at %s: %+v", now, res)
				}
				queued += res.Total()
				e.finishAll(t, now)
			}
			jobs := e.allJobs(t)
			reqs := e.published(t)
			want := wantDaily(sites, 3)
			if got := counts(jobs); !reflect.DeepEqual(got, want) {
				t.Errorf("jobs = %v\nwant %v", got, want)
			}
			if got := countRequests(reqs); !reflect.DeepEqual(got, want) {
				t.Errorf("published = %v\nwant %v", got, want)
			}
			if queued != len(jobs) {
				t.Errorf("ticks reported %d queued, %d stored", queued, len(jobs))
			}
			checkOnce(t, reqs, jobs)

			// Spread: each site's backups at its own time of day, 24 h
			// apart; each retention on the first tick after its backup.
			backups := map[string][]time.Time{}
			retentions := map[string][]time.Time{}
			for _, j := range jobs {
				switch j.Type {
				case domain.JobBackup:
					backups[j.SiteUUID] = append(backups[j.SiteUUID], j.CreatedAt)
				case domain.JobRetention:
					retentions[j.SiteUUID] = append(retentions[j.SiteUUID], j.CreatedAt)
				}
			}
			hours := map[int]bool{}
			for _, site := range sites {
				b, r := sortTimes(backups[site]), sortTimes(retentions[site])
				slot := plan.NextSlot(start, day, plan.Offset(site, day))
				for d := range 3 {
					due := slot.Add(time.Duration(d) * day)
					if b[d].Before(due) || b[d].Sub(due) >= 10*time.Minute {
						t.Errorf("site %s day %d: backup at %s, due %s", site, d, b[d], due)
					}
					if r[d].Sub(b[d]) != 10*time.Minute {
						t.Errorf("site %s day %d: retention at %s, backup at %s", site, d, r[d], b[d])
					}
				}
				hours[b[0].Hour()] = true
			}
			if len(hours) != 3 {
				t.Errorf("sites not spread over the day: %v", backups)
			}
		})
	}
}

func sortTimes(ts []time.Time) []time.Time {
	out := append([]time.Time(nil), ts...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Before(out[i]) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// A job left running holds the site's next backup back (whatever its
// type); when it ends, the due backup runs once on the next tick.
func TestRunningJobBlocksTheNextRun(t *testing.T) {
	e := newEnv(t)
	sites := siteUUIDs(2)
	a, b := sites[0], sites[1]
	e.addSites(t, sites...)
	set := Settings{ScanInterval: day} // no retention, no sync: backups only
	s := e.scheduler(t, "sched-1", set)
	slotA := plan.NextSlot(start, day, plan.Offset(a, day))

	var firstA string
	releaseAt := slotA.Add(day + 3*time.Hour) // the day-2 backup of a is due at slotA+24h
	var waited int
	for now := start; now.Before(start.Add(2 * day)); now = now.Add(10 * time.Minute) {
		res := mustTick(t, s, now)
		waited += res.Waiting
		if firstA == "" {
			for _, j := range e.allJobs(t) {
				if j.SiteUUID == a {
					firstA = j.ID
				}
			}
		}
		if firstA != "" && now.Before(releaseAt) {
			e.finishAll(t, now, firstA) // a's first backup keeps running
		} else {
			e.finishAll(t, now)
		}
	}
	jobs := e.allJobs(t)
	if got, want := counts(jobs), map[string]int{"backup:" + a: 2, "backup:" + b: 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("jobs = %v, want %v", got, want)
	}
	var second domain.Job
	for _, j := range jobs {
		if j.SiteUUID == a && j.ID != firstA {
			second = j
		}
	}
	// The day-2 run was due at slotA+24h, held back until the first
	// ended (at releaseAt's tick), and queued on the next tick.
	released := start.Add((releaseAt.Sub(start) + 10*time.Minute - 1) / (10 * time.Minute) * (10 * time.Minute)) // first tick at or after releaseAt
	if want := released.Add(10 * time.Minute); !second.CreatedAt.Equal(want) {
		t.Errorf("second backup of a queued at %s, want %s", second.CreatedAt, want)
	}
	if waited == 0 {
		t.Error("no tick reported a waiting run")
	}
	checkOnce(t, e.published(t), jobs)

	// Any job type holds a site: a running preflight holds a due backup.
	ctx := ctxT(t)
	now := plan.NextSlot(start.Add(2*day), day, plan.Offset(b, day))
	if err := e.st.InsertJob(ctx, domain.Job{ID: "manual-preflight", SiteUUID: b, Type: domain.JobPreflight, Status: domain.StatusRunning, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	res := mustTick(t, s, now)
	for _, id := range res.JobIDs {
		if id == plan.JobID(store.ScheduleBackup, b, now) {
			t.Errorf("backup of %s queued beside its running preflight: %+v", b, res)
		}
	}
	if res.Waiting != 1 {
		t.Errorf("tick with a running preflight: %+v", res)
	}
}

// Two schedulers on one NATS and one store, ticking the same clock.
func TestTwoSchedulers(t *testing.T) {
	t.Run("the leader lease lets one fire", func(t *testing.T) {
		e := newEnv(t)
		sites := siteUUIDs(3)
		e.addSites(t, sites...)
		sa := e.scheduler(t, "sched-a", daily)
		sb := e.scheduler(t, "sched-b", daily)
		for now := start; now.Before(start.Add(2 * day)); now = now.Add(10 * time.Minute) {
			ra, rb := mustTick(t, sa, now), mustTick(t, sb, now)
			if !ra.Leader || rb.Leader || rb.Total() > 0 {
				t.Fatalf("at %s: a %+v, b %+v", now, ra, rb)
			}
			e.finishAll(t, now)
			if now.Equal(start.Add(day)) {
				// a steps down; b takes over on its next tick.
				sa.Resign()
				sa, sb = sb, sa
			}
		}
		jobs := e.allJobs(t)
		if got, want := counts(jobs), wantDaily(sites, 2); !reflect.DeepEqual(got, want) {
			t.Errorf("jobs = %v\nwant %v", got, want)
		}
		checkOnce(t, e.published(t), jobs)
	})

	t.Run("without the lease, the store guards hold", func(t *testing.T) {
		e := newEnv(t)
		sites := siteUUIDs(3)
		e.addSites(t, sites...)
		sa := e.scheduler(t, "sched-a", daily)
		sb := e.scheduler(t, "sched-b", daily)
		ctx := ctxT(t)
		var lost int
		for now := start; now.Before(start.Add(2 * day)); now = now.Add(10 * time.Minute) {
			// Both tick at once, as two leaders in a split brain would.
			var wg sync.WaitGroup
			var ra, rb TickResult
			var ea, eb error
			wg.Add(2)
			go func() { defer wg.Done(); ra, ea = sa.work(ctx, now) }()
			go func() { defer wg.Done(); rb, eb = sb.work(ctx, now) }()
			wg.Wait()
			if ea != nil || eb != nil {
				t.Fatalf("at %s: %v / %v", now, ea, eb)
			}
			lost += ra.Lost + rb.Lost
			e.finishAll(t, now)
		}
		jobs := e.allJobs(t)
		if got, want := counts(jobs), wantDaily(sites, 2); !reflect.DeepEqual(got, want) {
			t.Errorf("jobs = %v\nwant %v", got, want)
		}
		checkOnce(t, e.published(t), jobs)
		t.Logf("runs the guards caught: %d", lost)
	})

	t.Run("a stale second scheduler queues nothing again", func(t *testing.T) {
		e := newEnv(t)
		sites := siteUUIDs(3)
		e.addSites(t, sites...)
		sa := e.scheduler(t, "sched-a", daily)
		sb := e.scheduler(t, "sched-b", daily)
		ctx := ctxT(t)
		for _, s := range []*Scheduler{sa, sb, sb} { // b ends up with a valid cache of the schedules
			if _, err := s.work(ctx, start); err != nil {
				t.Fatal(err)
			}
		}
		due := start.Add(day)
		ra, err := sa.work(ctx, due)
		if err != nil || ra.Total() != 3+1 { // a backup per site and the sync
			t.Fatalf("a: %+v, %v", ra, err)
		}
		rb, err := sb.work(ctx, due) // plans the same runs from its stale cache
		if err != nil || rb.Total() != 0 || rb.Lost != 4 {
			t.Fatalf("b: %+v, %v", rb, err)
		}
		jobs := e.allJobs(t)
		checkOnce(t, e.published(t), jobs)
		if len(jobs) != 4 {
			t.Errorf("%d jobs, want 4", len(jobs))
		}
	})
}

// A tick that wrote a job and stopped before publishing it, or before
// moving the schedule on: the next tick publishes it (once) instead of
// queuing another.
func TestResumeAfterAHalfTick(t *testing.T) {
	for _, tc := range []struct {
		name          string
		publishedOnce bool
	}{{"written, not published", false}, {"written and published, schedule not moved", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			site := siteUUIDs(1)[0]
			e.addSites(t, site)
			set := Settings{ScanInterval: day}
			s := e.scheduler(t, "sched-1", set)
			mustTick(t, s, start) // makes the schedule
			due := plan.NextSlot(start, day, plan.Offset(site, day))
			id := plan.JobID(store.ScheduleBackup, site, due)
			ctx := ctxT(t)
			if err := e.st.InsertJob(ctx, domain.Job{ID: id, SiteUUID: site, Type: domain.JobBackup, Status: domain.StatusQueued, CreatedAt: due}); err != nil {
				t.Fatal(err)
			}
			if tc.publishedOnce {
				if err := e.in.Publish(ctx, events.JobRequest{V: events.JobRequestV1, JobID: id, SiteUUID: site, Type: "backup"}); err != nil {
					t.Fatal(err)
				}
			}
			res := mustTick(t, s, due.Add(time.Minute))
			if res.Resumed != 1 || res.Total() != 0 || res.Republished != map[bool]int{false: 1, true: 0}[tc.publishedOnce] {
				t.Fatalf("tick: %+v", res)
			}
			if res := mustTick(t, s, due.Add(2*time.Minute)); res.Resumed+res.Total() != 0 {
				t.Fatalf("schedule not moved on: %+v", res)
			}
			reqs := e.published(t)
			if len(reqs) != 1 || reqs[0].JobID != id {
				t.Fatalf("published %+v", reqs)
			}
			checkOnce(t, reqs, e.allJobs(t))
		})
	}

	t.Run("written and finished, schedule not moved", func(t *testing.T) {
		e := newEnv(t)
		site := siteUUIDs(1)[0]
		e.addSites(t, site)
		s := e.scheduler(t, "sched-1", Settings{ScanInterval: day})
		mustTick(t, s, start)
		due := plan.NextSlot(start, day, plan.Offset(site, day))
		id := plan.JobID(store.ScheduleBackup, site, due)
		ctx := ctxT(t)
		if err := e.st.InsertJob(ctx, domain.Job{ID: id, SiteUUID: site, Type: domain.JobBackup, Status: domain.StatusQueued, CreatedAt: due}); err != nil {
			t.Fatal(err)
		}
		e.finishAll(t, due)
		res := mustTick(t, s, due.Add(time.Minute))
		if res.Total() != 0 || res.Lost != 1 {
			t.Fatalf("tick: %+v", res)
		}
		if res := mustTick(t, s, due.Add(2*time.Minute)); res.Total()+res.Lost != 0 {
			t.Fatalf("schedule not moved on: %+v", res)
		}
		if reqs := e.published(t); len(reqs) != 0 {
			t.Fatalf("published %+v", reqs)
		}
	})
}

// Runs missed while no scheduler ran fire once, then the slots go on.
func TestMissedRunsFireOnce(t *testing.T) {
	e := newEnv(t)
	sites := siteUUIDs(3)
	e.addSites(t, sites...)
	s := e.scheduler(t, "sched-1", daily)
	mustTick(t, s, start)
	s.Resign()

	back := start.Add(3*day + 23*time.Hour + 30*time.Minute) // three slots of each site missed
	s = e.scheduler(t, "sched-2", daily)
	res := mustTick(t, s, back)
	if res.Queued[domain.JobBackup] != 3 || res.Queued[domain.JobResticSync] != 1 {
		t.Fatalf("after the gap: %+v", res)
	}
	e.finishAll(t, back)
	res = mustTick(t, s, back.Add(10*time.Minute))
	if res.Queued[domain.JobRetention] != 3 || res.Total() != 3 {
		t.Fatalf("retentions after the gap: %+v", res)
	}
	e.finishAll(t, back)
	schedules, err := e.st.ListSchedules(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range schedules {
		if sc.Kind == store.ScheduleRetention {
			continue
		}
		key := sc.SiteUUID
		if sc.Kind == store.ScheduleSync {
			key = plan.SyncKey
		}
		if want := plan.NextSlot(back, day, plan.Offset(key, day)); !sc.NextRunAt.Equal(want) {
			t.Errorf("%s next at %s, want %s", sc.ID, sc.NextRunAt, want)
		}
	}
	if res := mustTick(t, s, back.Add(20*time.Minute)); res.Total() != 0 {
		t.Fatalf("queued again: %+v", res)
	}
}

func TestSiteRemovedAndSettingsChanged(t *testing.T) {
	e := newEnv(t)
	sites := siteUUIDs(2)
	e.addSites(t, sites...)
	s := e.scheduler(t, "sched-1", daily)
	res := mustTick(t, s, start)
	if res.Created != 2*2+1 {
		t.Fatalf("created %d schedules: %+v", res.Created, res)
	}
	ctx := ctxT(t)
	if err := e.st.DeleteSite(ctx, sites[0]); err != nil {
		t.Fatal(err)
	}
	if res := mustTick(t, s, start.Add(time.Minute)); res.Deleted != 2 {
		t.Fatalf("after removing a site: %+v", res)
	}
	// Retention and sync off, a shorter scan interval: a new scheduler
	// with the new settings (a restart after a config change).
	s.Resign()
	s = e.scheduler(t, "sched-1", Settings{ScanInterval: 6 * time.Hour})
	res = mustTick(t, s, start.Add(2*time.Minute))
	if res.Deleted != 2 || res.Rescheduled != 1 {
		t.Fatalf("after the config change: %+v", res)
	}
	all, err := e.st.ListSchedules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := plan.NextSlot(start.Add(2*time.Minute), 6*time.Hour, plan.Offset(sites[1], 6*time.Hour))
	if len(all) != 1 || all[0].IntervalSeconds != 6*3600 || !all[0].NextRunAt.Equal(want) {
		t.Fatalf("schedules = %+v, want one at %s", all, want)
	}
}

func TestFollowerAndLeaseLoss(t *testing.T) {
	e := newEnv(t)
	e.addSites(t, siteUUIDs(1)...)
	sa := e.scheduler(t, "sched-a", daily)
	sb := e.scheduler(t, "sched-b", daily)
	if !mustTick(t, sa, start).Leader || mustTick(t, sb, start).Leader {
		t.Fatal("want a to lead and b to follow")
	}
	// The lease disappears under a (expired, or deleted by an operator):
	// b takes it, a notices on its next renewal and follows.
	ctx := ctxT(t)
	if err := e.in.Leases.Delete(ctx, LeaderKey); err != nil {
		t.Fatal(err)
	}
	if !mustTick(t, sb, start.Add(time.Minute)).Leader {
		t.Fatal("b did not take the free lease")
	}
	if mustTick(t, sa, start.Add(time.Minute)).Leader {
		t.Fatal("a still leads after losing its lease")
	}
	h, ok, err := e.in.LeaseHolderOf(ctx, LeaderKey)
	if err != nil || !ok || h.Worker != "sched-b" {
		t.Fatalf("holder = %+v %v %v", h, ok, err)
	}
}

func TestRunTicksAndResigns(t *testing.T) {
	e := newEnv(t)
	site := siteUUIDs(1)[0]
	e.addSites(t, site)
	reg := prometheus.NewRegistry()
	// The clock starts just before the site's slot and moves a minute
	// per reading.
	var mu sync.Mutex
	clock := plan.NextSlot(start, day, plan.Offset(site, day)).Add(-2 * time.Minute)
	now := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		clock = clock.Add(time.Minute)
		return clock
	}
	ctx, cancel := context.WithCancel(ctxT(t))
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{Settings: Settings{Instance: "run-1", Tick: 20 * time.Millisecond, ScanInterval: day},
			Store: e.st, Infra: e.in, Registry: reg, Now: now})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for len(e.allJobs(t)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run queued nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, ok, _ := e.in.LeaseHolderOf(ctxT(t), LeaderKey); ok {
		t.Error("Run left the leader lease behind")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
	}
	for _, name := range []string{"satoru_scheduler_jobs_queued_total", "satoru_scheduler_tick_duration_seconds", "satoru_scheduler_leader"} {
		if !found[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
}

func TestNewNeedsDeps(t *testing.T) {
	if _, err := New(Deps{}); err == nil {
		t.Error("New without Store and Infra succeeded")
	}
	if _, err := New(Deps{Store: &store.Store{}, Infra: &bus.Infra{}}); err == nil {
		t.Error("New without an instance name succeeded")
	}
}
