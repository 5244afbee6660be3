// Package plan decides what the scheduler queues. Everything here is a
// pure function of the clock reading it is given, the registered sites,
// the stored schedules and the active jobs: no store, no NATS, no
// time.Now. The scheduler's tick reads those, calls Plan, and carries the
// result out.
package plan

import (
	"hash/fnv"
	"time"

	"github.com/google/uuid"
)

// Slots: a schedule with interval I and offset O runs at the instants
// Unix epoch + O + k*I (k an integer). The offset spreads sites over the
// interval; it is a stable hash of the site, so a site keeps its time of
// day across restarts and across schedulers.

// Offset is key's stable place in interval: FNV-1a (64 bit) of key modulo
// the interval, in whole seconds. An interval under a second has offset 0.
func Offset(key string, interval time.Duration) time.Duration {
	secs := int64(interval / time.Second)
	if secs <= 0 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	return time.Duration(h.Sum64()%uint64(secs)) * time.Second
}

// NextSlot is the first slot at or after t.
func NextSlot(t time.Time, interval, offset time.Duration) time.Time {
	if interval <= 0 {
		return t
	}
	base := time.Unix(0, 0).UTC().Add(offset % interval)
	d := t.Sub(base)
	k := d / interval
	if d%interval != 0 && d < 0 {
		k-- // floor, not truncation towards zero
	}
	slot := base.Add(k * interval) // the last slot at or before t
	if slot.Before(t) {
		slot = slot.Add(interval)
	}
	return slot
}

// Next is when a schedule runs next. last is when its last run was due
// (zero if it never ran). A schedule that never ran runs at the first slot
// at or after now. One that ran runs at the first slot after both now and
// last: the slots missed while the scheduler was down, or while the site
// was busy, are not made up one by one; the one run that was due has
// already covered them.
func Next(now, last time.Time, interval, offset time.Duration) time.Time {
	if last.IsZero() {
		return NextSlot(now, interval, offset)
	}
	after := now
	if last.After(after) {
		after = last
	}
	return NextSlot(after.Add(time.Nanosecond), interval, offset)
}

// jobNamespace makes the scheduler's job ids (UUID version 5).
var jobNamespace = uuid.MustParse("5a70b0e4-4f1d-4c35-9a55-0c6f3d2a7e19")

// JobID is the id of the job for one run: a name-based UUID (version 5)
// of the schedule kind, the site and the time the run was due. Every
// scheduler computes the same id for the same run, so a run queued twice
// (two schedulers, a retried tick, a restart between writing the job and
// advancing the schedule) is one job: the store refuses the second insert
// and NATS drops the second publish (Nats-Msg-Id = job_id).
func JobID(kind, siteUUID string, due time.Time) string {
	name := kind + "\x00" + siteUUID + "\x00" + due.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano)
	return uuid.NewSHA1(jobNamespace, []byte(name)).String()
}
