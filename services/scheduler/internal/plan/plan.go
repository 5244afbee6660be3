package plan

import (
	"fmt"
	"sort"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/policy"
	"github.com/satoru/satoru/shared/store"
)

// Settings are the intervals the plan follows.
type Settings struct {
	// ScanInterval is how often each site is backed up (> 0).
	ScanInterval time.Duration
	// RetentionInterval is the least time between two retention runs of
	// a site, counted between the backups they follow; 0 = no retention.
	RetentionInterval time.Duration
	// SyncInterval is how often the repository is copied offsite, when
	// SyncEnabled.
	SyncInterval time.Duration
	SyncEnabled  bool
	// CheckInterval is how often the repository is checked (restic
	// check); 0 = never.
	CheckInterval time.Duration
	// VerifyInterval is how often each site's latest snapshot is restore
	// tested (a verify job); 0 = never.
	VerifyInterval time.Duration
}

// SyncKey is the key the sync schedule's offset is hashed from.
const SyncKey = store.ScheduleSync

// CheckKey is the key the check schedule's offset is hashed from.
const CheckKey = store.ScheduleCheck

// VerifyKey is the key a site's verify schedule's offset is hashed from.
func VerifyKey(site string) string { return store.ScheduleVerify + ":" + site }

// Input is everything a plan depends on.
type Input struct {
	Now      time.Time
	Settings Settings
	// Sites are the uuids of the registered sites.
	Sites []string
	// Schedules are the stored schedules.
	Schedules []store.Schedule
	// Active are the queued and running jobs, when ActiveKnown. Plan asks
	// for them (Output.NeedActive) only when some run is due, so a tick
	// with nothing due reads no jobs.
	Active      []domain.Job
	ActiveKnown bool
	// Policies are the sites' own policies by site uuid (policy.go);
	// a site without one follows Settings.
	Policies map[string]policy.Compiled
}

// Run is one run of a schedule to carry out.
type Run struct {
	Kind     string
	SiteUUID string
	// Due is when the run was due: the slot of a backup or sync, the
	// backup a retention follows.
	Due time.Time
	// Job is the run's job: new (Fire) or the existing one (Resume,
	// Adopt). Its id is JobID(Kind, SiteUUID, Due).
	Job domain.Job
	// Swap moves the schedule past this run; it applies only if the
	// schedule still holds the value this plan read.
	Swap store.ScheduleSwap
}

// Wait is a due run held back because its site (or, for the sync, the
// repository) has a job queued or running.
type Wait struct {
	Kind     string
	SiteUUID string
	Due      time.Time
	// BlockedBy is the active job that holds the run back.
	BlockedBy domain.Job
	// Held says why the site's policy holds the run back (paused, a
	// maintenance window), when it does; Until is when the window ends.
	Held  string
	Until time.Time
}

// Reason says why the run waits, for logs.
func (w Wait) Reason() string {
	if w.Held != "" {
		return w.Held
	}
	return fmt.Sprintf("job %s (%s) is %s", w.BlockedBy.ID, w.BlockedBy.Type, w.BlockedBy.Status)
}

// Output is what the tick does: first the schedule changes (Create,
// Delete, Reschedule), then the runs.
type Output struct {
	// Create are schedules for new sites (or a kind just turned on).
	Create []store.Schedule
	// Delete are ids of schedules whose site is gone (or whose kind was
	// turned off).
	Delete []string
	// Reschedule are schedules whose interval changed in the config.
	Reschedule []store.ScheduleSwap
	// Fire are new jobs: insert, publish, then Swap.
	Fire []Run
	// Resume are runs whose job exists and is still queued (a tick that
	// wrote it stopped before advancing the schedule): publish it unless
	// the stream holds it, then Swap.
	Resume []Run
	// Adopt are runs whose job exists and runs already: Swap only.
	Adopt []Run
	// Waiting are due runs held back by an active job.
	Waiting []Wait
	// NeedActive: some run is due and Input.ActiveKnown is false. Call
	// Plan again with the active jobs; the runs are decided then.
	NeedActive bool
}

// Plan decides one tick. The rules:
//
//   - Backup: every site has a schedule "backup:<site>" with slots every
//     ScanInterval at the site's Offset. A new site's first backup is its
//     first slot from now. When a slot is due the backup is queued and the
//     schedule moves to the first slot after now (Next), so slots missed
//     while down or busy give one run, not one per slot.
//   - Retention (RetentionInterval > 0): "retention:<site>" is due when a
//     backup was queued after the site's last retention, that backup has
//     finished (the site has no active job), and its next_run_at has
//     come. After a retention queued for the backup due at B, the next
//     one is not due before B + RetentionInterval: measured on the backup
//     slots, so with equal intervals every backup is followed by one
//     retention and the time of day does not drift.
//   - Verify (VerifyInterval > 0): "verify:<site>" has slots every
//     VerifyInterval at the offset of VerifyKey(site), like a backup; it
//     queues the site's restore test (after the site's backup and
//     retention when they are due at once).
//   - Sync (SyncEnabled): "sync" has slots every SyncInterval at the
//     offset of SyncKey; it is a repository job (site "").
//   - Check (CheckInterval > 0): "check" has slots every CheckInterval
//     at the offset of CheckKey; a repository job (site ""), so it waits
//     behind the sync and the sync behind it.
//   - One job at a time per site: a due run of a site (or, for the sync,
//     the repository) that has a job queued or running waits, whatever
//     the type of that job, and runs on the first tick after it ended. A
//     site's backup comes before its retention.
//   - A due run whose job already exists (same JobID) is not queued again:
//     it is resumed (queued) or adopted (running), and its schedule moves
//     on.
func Plan(in Input) Output {
	now := in.Now.UTC()
	st := in.Settings
	var out Output

	cur := make(map[string]store.Schedule, len(in.Schedules))
	for _, sc := range in.Schedules {
		cur[sc.ID] = sc
	}
	sites := uniqueSorted(in.Sites)
	want := make(map[string]bool, 2*len(sites)+1)

	// The schedules follow the sites and the settings.
	periodic := func(kind, site, key string, every time.Duration) {
		id := store.ScheduleID(kind, site)
		want[id] = true
		if cr := in.Policies[site].Cron; kind == store.ScheduleBackup && cr != nil {
			out.cronSchedule(cur, id, site, cr, now)
			return
		}
		off := Offset(key, every)
		sc, ok := cur[id]
		switch {
		case !ok:
			sc = store.Schedule{ID: id, Kind: kind, SiteUUID: site, IntervalSeconds: seconds(every),
				NextRunAt: Next(now, time.Time{}, every, off), UpdatedAt: now}
			out.Create = append(out.Create, sc)
		case sc.IntervalSeconds != seconds(every) || sc.Spec != "":
			next := sc
			next.IntervalSeconds = seconds(every)
			next.Spec = ""
			if first := NextSlot(now, every, off); first.Before(next.NextRunAt) {
				next.NextRunAt = first
			}
			next.UpdatedAt = now
			out.Reschedule = append(out.Reschedule, store.ScheduleSwap{Expect: sc.NextRunAt, Schedule: next})
			sc = next
		}
		cur[id] = sc
	}
	for _, site := range sites {
		periodic(store.ScheduleBackup, site, site, BackupInterval(in.Policies[site], st))
		if st.RetentionInterval <= 0 {
			continue
		}
		id := store.ScheduleID(store.ScheduleRetention, site)
		want[id] = true
		r, ok := cur[id]
		switch {
		case !ok:
			r = store.Schedule{ID: id, Kind: store.ScheduleRetention, SiteUUID: site,
				IntervalSeconds: seconds(st.RetentionInterval),
				NextRunAt:       cur[store.ScheduleID(store.ScheduleBackup, site)].NextRunAt, UpdatedAt: now}
			out.Create = append(out.Create, r)
		case r.IntervalSeconds != seconds(st.RetentionInterval):
			next := r
			next.IntervalSeconds = seconds(st.RetentionInterval)
			if r.LastDueAt != nil {
				next.NextRunAt = r.LastDueAt.Add(st.RetentionInterval)
			}
			next.UpdatedAt = now
			out.Reschedule = append(out.Reschedule, store.ScheduleSwap{Expect: r.NextRunAt, Schedule: next})
			r = next
		}
		cur[id] = r
	}
	if st.VerifyInterval > 0 {
		for _, site := range sites {
			// Its own offset key, so a site's verify does not fall on
			// its backup's slot.
			periodic(store.ScheduleVerify, site, VerifyKey(site), st.VerifyInterval)
		}
	}
	if st.SyncEnabled {
		periodic(store.ScheduleSync, "", SyncKey, st.SyncInterval)
	}
	if st.CheckInterval > 0 {
		periodic(store.ScheduleCheck, "", CheckKey, st.CheckInterval)
	}
	for _, id := range sortedKeys(cur) {
		if !want[id] {
			out.Delete = append(out.Delete, id)
			delete(cur, id)
		}
	}

	// The due runs, in order: per site its backup, then its retention;
	// the sync last.
	type cand struct {
		kind, site string
		due        time.Time
		sc         store.Schedule
	}
	var cands []cand
	for _, site := range sites {
		b := cur[store.ScheduleID(store.ScheduleBackup, site)]
		if !b.NextRunAt.After(now) {
			cands = append(cands, cand{store.ScheduleBackup, site, b.NextRunAt, b})
		}
		if st.RetentionInterval > 0 {
			r := cur[store.ScheduleID(store.ScheduleRetention, site)]
			if RetentionDue(now, r, b) {
				cands = append(cands, cand{store.ScheduleRetention, site, *b.LastDueAt, r})
			}
		}
		if st.VerifyInterval > 0 {
			if v := cur[store.ScheduleID(store.ScheduleVerify, site)]; !v.NextRunAt.After(now) {
				cands = append(cands, cand{store.ScheduleVerify, site, v.NextRunAt, v})
			}
		}
	}
	if st.SyncEnabled {
		if s := cur[store.ScheduleSync]; !s.NextRunAt.After(now) {
			cands = append(cands, cand{store.ScheduleSync, "", s.NextRunAt, s})
		}
	}
	if st.CheckInterval > 0 {
		if c := cur[store.ScheduleCheck]; !c.NextRunAt.After(now) {
			cands = append(cands, cand{store.ScheduleCheck, "", c.NextRunAt, c})
		}
	}
	// A site's policy holds its due runs back: nothing is queued while
	// it is paused or inside a maintenance window, and its schedule stays
	// due, so one run follows on the first tick after (however many
	// slots passed meanwhile).
	kept := cands[:0]
	for _, c := range cands {
		if w, held := holdBy(in.Policies[c.site], c.kind, c.site, c.due, now); held {
			out.Waiting = append(out.Waiting, w)
			continue
		}
		kept = append(kept, c)
	}
	cands = kept
	if len(cands) == 0 {
		return out
	}
	if !in.ActiveKnown {
		out.NeedActive = true
		return out
	}

	active := map[string][]domain.Job{}
	for _, j := range in.Active {
		active[j.SiteUUID] = append(active[j.SiteUUID], j)
	}
	for _, c := range cands {
		id := JobID(c.kind, c.site, c.due)
		jobs := active[c.site]
		if j, ok := findJob(jobs, id); ok {
			run := makeRun(c.kind, c.site, c.due, c.sc, j, now, st, in.Policies[c.site])
			if j.Status == domain.StatusQueued {
				out.Resume = append(out.Resume, run)
			} else {
				out.Adopt = append(out.Adopt, run)
			}
			continue
		}
		if len(jobs) > 0 {
			out.Waiting = append(out.Waiting, Wait{Kind: c.kind, SiteUUID: c.site, Due: c.due, BlockedBy: jobs[0]})
			continue
		}
		job := domain.Job{ID: id, SiteUUID: c.site, Type: JobType(c.kind), Status: domain.StatusQueued, CreatedAt: now,
			Trigger: domain.TriggerSchedule}
		out.Fire = append(out.Fire, makeRun(c.kind, c.site, c.due, c.sc, job, now, st, in.Policies[c.site]))
		active[c.site] = append(jobs, job)
	}
	return out
}

// RetentionDue reports whether a site's retention r is due at now, given
// the site's backup schedule b: a backup was queued after the last
// retention, and r's next_run_at has come. (That the backup has finished
// is the site's busy check, made with the active jobs.)
func RetentionDue(now time.Time, r, b store.Schedule) bool {
	if r.ID == "" || r.NextRunAt.After(now) || b.LastRunAt == nil || b.LastDueAt == nil {
		return false
	}
	return r.LastRunAt == nil || b.LastRunAt.After(*r.LastRunAt)
}

// JobType is the job a schedule kind queues.
func JobType(kind string) domain.JobType {
	switch kind {
	case store.ScheduleRetention:
		return domain.JobRetention
	case store.ScheduleSync:
		return domain.JobResticSync
	case store.ScheduleCheck:
		return domain.JobCheck
	case store.ScheduleVerify:
		return domain.JobVerify
	}
	return domain.JobBackup
}

// makeRun builds the run of schedule sc for job j, with the swap that
// moves sc past it.
func makeRun(kind, site string, due time.Time, sc store.Schedule, j domain.Job, now time.Time, st Settings, pol policy.Compiled) Run {
	next := sc
	queued := j.CreatedAt.UTC()
	if queued.IsZero() {
		queued = now
	}
	switch kind {
	case store.ScheduleRetention:
		next.NextRunAt = due.Add(st.RetentionInterval)
	case store.ScheduleSync:
		next.NextRunAt = Next(now, due, st.SyncInterval, Offset(SyncKey, st.SyncInterval))
	case store.ScheduleCheck:
		next.NextRunAt = Next(now, due, st.CheckInterval, Offset(CheckKey, st.CheckInterval))
	case store.ScheduleVerify:
		next.NextRunAt = Next(now, due, st.VerifyInterval, Offset(VerifyKey(site), st.VerifyInterval))
	default:
		if pol.Cron != nil {
			next.NextRunAt = CronNext(pol.Cron, now, due)
			break
		}
		every := BackupInterval(pol, st)
		next.NextRunAt = Next(now, due, every, Offset(site, every))
	}
	d := due
	next.LastDueAt = &d
	next.LastRunAt = &queued
	next.LastJobID = j.ID
	next.UpdatedAt = now
	return Run{Kind: kind, SiteUUID: site, Due: due, Job: j,
		Swap: store.ScheduleSwap{Expect: sc.NextRunAt, Schedule: next}}
}

func findJob(jobs []domain.Job, id string) (domain.Job, bool) {
	for _, j := range jobs {
		if j.ID == id {
			return j, true
		}
	}
	return domain.Job{}, false
}

func seconds(d time.Duration) int64 { return int64(d / time.Second) }

func uniqueSorted(in []string) []string {
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, s := range in {
		if s != "" && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func sortedKeys(m map[string]store.Schedule) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
