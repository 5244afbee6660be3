package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/store"
)

// Defaults of the stale-job recovery.
const (
	DefaultRecoverEvery = time.Minute
	DefaultMaxAttempts  = 5
)

// Recovery is what one recovery pass did with the running jobs whose
// heartbeat_at is older than Settings.StaleAfter.
type Recovery struct {
	// Ran: the pass read the active jobs this tick.
	Ran bool
	// Stale running jobs found.
	Stale int
	// Failed: stale jobs that had used job_max_attempts, marked failed
	// ("worker lost").
	Failed int
	// Republished: stale jobs with attempts left whose request was gone
	// from the stream, published again.
	Republished int
	// Pending: stale jobs with attempts left whose request is still in
	// the stream; it is redelivered after AckWait, nothing to do.
	Pending int
	// Busy: stale jobs left alone because their site lease is held (the
	// worker still renews it, or another job runs on the site) or the job
	// changed meanwhile; looked at again on the next pass.
	Busy int
	// Errors: jobs whose recovery failed (store or bus); retried on the
	// next pass.
	Errors int
}

// recoverStale runs the recovery pass if it is due (at most once per
// RecoverEvery): it finds the running jobs whose heartbeat is older than
// StaleAfter and, holding the job's site lease so that no worker writes
// the job meanwhile (one writer per document), fails those that used all
// their attempts and publishes again the others whose request the stream
// lost. active, when the tick read them already, are the active jobs.
func (s *Scheduler) recoverStale(ctx context.Context, now time.Time, active []domain.Job, activeKnown bool) (Recovery, error) {
	var rec Recovery
	if s.set.StaleAfter <= 0 || (!s.recoveredAt.IsZero() && now.Sub(s.recoveredAt) < s.set.RecoverEvery) {
		return rec, nil
	}
	if !activeKnown {
		var err error
		if active, err = s.store.ActiveJobs(ctx, ""); err != nil {
			return rec, fmt.Errorf("scheduler: recovery: %w", err)
		}
	}
	s.recoveredAt = now
	rec.Ran = true
	limit := now.Add(-s.set.StaleAfter)
	for _, j := range active {
		seen, ok := lastSign(j)
		if j.Status != domain.StatusRunning || !ok || !seen.Before(limit) {
			continue
		}
		rec.Stale++
		outcome, err := s.recoverJob(ctx, j, seen, now)
		if err != nil {
			if ctx.Err() != nil {
				return rec, ctx.Err()
			}
			rec.Errors++
			s.log.Error("scheduler: recover stale job", "job_id", j.ID, "site_uuid", j.SiteUUID, "err", err)
			continue
		}
		switch outcome {
		case recFailed:
			rec.Failed++
		case recRepublished:
			rec.Republished++
		case recPending:
			rec.Pending++
		case recBusy:
			rec.Busy++
		}
	}
	return rec, nil
}

type recOutcome int

const (
	recBusy recOutcome = iota
	recPending
	recRepublished
	recFailed
)

// lastSign is the last time a worker showed it works on j.
func lastSign(j domain.Job) (time.Time, bool) {
	switch {
	case j.HeartbeatAt != nil:
		return *j.HeartbeatAt, true
	case j.StartedAt != nil:
		return *j.StartedAt, true
	}
	return time.Time{}, false
}

// recoverJob recovers one stale running job under its site lease.
func (s *Scheduler) recoverJob(ctx context.Context, j domain.Job, seen, now time.Time) (recOutcome, error) {
	// Only a free lease is taken: a lease still held means its holder
	// renews it. The holder is not the job itself, so a worker that gets
	// the job redelivered meanwhile waits (ErrLeaseHeld) instead of taking
	// the lease over while the scheduler writes the job.
	lease, err := s.infra.AcquireKey(ctx, events.LeaseKey(j.SiteUUID),
		bus.LeaseHolder{JobID: "recover:" + j.ID, Worker: "scheduler:" + s.set.Instance})
	if errors.Is(err, bus.ErrLeaseHeld) {
		s.log.Debug("scheduler: stale job's site lease is held; leaving it", "job_id", j.ID, "err", err)
		return recBusy, nil
	}
	if err != nil {
		return recBusy, err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := lease.Release(rctx); err != nil {
			s.log.Warn("scheduler: release site lease after recovery; it expires by TTL", "job_id", j.ID, "err", err)
		}
	}()

	// Read the job again under the lease: it may have moved on since the
	// active jobs were read.
	cur, err := s.store.GetJob(ctx, j.ID)
	if errors.Is(err, store.ErrNotFound) {
		return recBusy, nil
	}
	if err != nil {
		return recBusy, err
	}
	if last, ok := lastSign(cur); cur.Status != domain.StatusRunning || !ok || !last.Equal(seen) || cur.Attempts != j.Attempts {
		return recBusy, nil
	}

	log := s.log.With("site_uuid", cur.SiteUUID, "job_id", cur.ID)
	if cur.Attempts >= s.set.MaxAttempts {
		msg := "worker lost: no heartbeat since " + seen.UTC().Format(time.RFC3339)
		if err := jobrun.FailLost(ctx, s.store, s.infra, cur, msg, now, log); err != nil {
			return recBusy, err
		}
		log.Warn("scheduler: stale job failed", "step", "recover", "type", cur.Type, "attempts", cur.Attempts, "worker", cur.Worker, "heartbeat_at", seen)
		return recFailed, nil
	}

	req := jobrun.PendingRequest(cur)
	got, err := s.infra.Requeue(ctx, req)
	if err != nil {
		return recBusy, err
	}
	switch got {
	case bus.RequeueHeld:
		return recPending, nil
	case bus.RequeueDuplicate:
		// Published within the stream's duplicate window: NATS dropped it.
		// The next pass publishes again once the window has passed.
		log.Info("scheduler: stale job's request dropped as a duplicate; retrying next pass", "step", "recover")
		return recBusy, nil
	}
	log.Warn("scheduler: stale job published again", "step", "recover", "type", req.Type, "attempts", cur.Attempts, "worker", cur.Worker, "heartbeat_at", seen)
	return recRepublished, nil
}
