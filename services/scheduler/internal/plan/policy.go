package plan

import (
	"fmt"
	"time"

	"github.com/satoru/satoru/shared/policy"
	"github.com/satoru/satoru/shared/store"
)

// Per-site policy in the plan (domain.SitePolicy, compiled by package
// policy):
//
//   - A site's schedule replaces ScanInterval for its backups: an interval
//     keeps the slot rule (slots at the site's offset), a cron expression
//     gives the runs CronNext says. A changed schedule moves next_run_at
//     to the earlier of the old one and the new schedule's first run.
//   - Paused: the site's due runs (backup, retention) wait; nothing is
//     queued for it. Its schedules stay due, so when it is resumed one
//     backup runs on the next tick and the schedule goes on from there.
//   - A maintenance window: a due run of the site waits until the window
//     ends, then runs once (the schedule is not moved meanwhile).

// BackupInterval is the interval a site's backups follow: its own, else
// the global one. (With a cron schedule it is not used.)
func BackupInterval(pol policy.Compiled, st Settings) time.Duration {
	if pol.Interval > 0 {
		return pol.Interval
	}
	return st.ScanInterval
}

// cronFallback is how far a cron that matches no more runs is put off;
// validation refuses such expressions, this only keeps the plan total.
const cronFallback = 366 * 24 * time.Hour

// CronNext is the run after the one due at last (zero: none yet) and
// after now: like Next for slots, runs missed while down or busy give one
// run, not one each.
func CronNext(cr *policy.Cron, now, last time.Time) time.Time {
	after := now
	if last.After(after) {
		after = last
	}
	n := cr.Next(after)
	if n.IsZero() {
		return after.Add(cronFallback)
	}
	return n
}

// cronSchedule makes, or reschedules, the backup schedule id of a site
// with a cron policy.
func (out *Output) cronSchedule(cur map[string]store.Schedule, id, site string, cr *policy.Cron, now time.Time) {
	spec := cr.String()
	sc, ok := cur[id]
	switch {
	case !ok:
		sc = store.Schedule{ID: id, Kind: store.ScheduleBackup, SiteUUID: site, Spec: spec,
			NextRunAt: CronNext(cr, now, time.Time{}), UpdatedAt: now}
		out.Create = append(out.Create, sc)
	case sc.Spec != spec || sc.IntervalSeconds != 0:
		next := sc
		next.Spec, next.IntervalSeconds = spec, 0
		if first := CronNext(cr, now, time.Time{}); first.Before(next.NextRunAt) {
			next.NextRunAt = first
		}
		next.UpdatedAt = now
		out.Reschedule = append(out.Reschedule, store.ScheduleSwap{Expect: sc.NextRunAt, Schedule: next})
		sc = next
	}
	cur[id] = sc
}

// holdBy reports whether the site's policy holds a due run back.
func holdBy(pol policy.Compiled, kind, site string, due, now time.Time) (Wait, bool) {
	w := Wait{Kind: kind, SiteUUID: site, Due: due}
	if pol.Paused {
		w.Held = "site is paused"
		return w, true
	}
	if win, end, in := pol.Windows.At(now); in {
		w.Held = fmt.Sprintf("maintenance window %s until %s", win.Label(), end.UTC().Format(time.RFC3339))
		w.Until = end
		return w, true
	}
	return w, false
}
