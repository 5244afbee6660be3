package scheduler

import (
	"context"
	"time"

	"github.com/satoru/satoru/shared/store"
)

// Defaults of the history pass.
const (
	DefaultHistoryEvery       = time.Hour
	DefaultHistoryDelay       = time.Minute
	DefaultHistoryPerTick     = 500
	DefaultHistoryTimePerTick = time.Second
	// historyStep is the most jobs one store call looks at, so the time
	// bound is checked at least that often.
	historyStep = 100
)

// History is what one tick's share of the history pass did.
type History struct {
	// Ran: the pass ran at this tick; Done: it ended at this tick (nothing
	// more to delete), the next starts HistoryEvery later.
	Ran, Done bool
	// Jobs and EventDocs (job_events documents) deleted; Archived:
	// finished jobs found in the open jobs and moved to the history
	// (see store.PurgeHistory).
	Jobs, EventDocs, Archived int
	// Audit: audit entries deleted when the pass ended (AuditRetention).
	Audit int64
	// Before is the cutoff: jobs that finished before it were deleted.
	Before time.Time
	// Err ends this tick's share; the pass goes on at the next tick.
	Err  error
	Took time.Duration
}

// purgeHistory runs the history pass if one is under way or due: it
// deletes the jobs that finished more than HistoryRetention before now,
// oldest first, in steps of at most historyStep jobs, until the pass is
// done or this tick has spent HistoryPerTick jobs or HistoryTimePerTick.
// The store has no TTL indexes and no transactions (DESIGN.md), so the
// pass is small steps of writes by _id rather than one large delete that
// would hold the embedded store's one connection.
func (s *Scheduler) purgeHistory(ctx context.Context, now time.Time) History {
	var h History
	if s.set.HistoryRetention <= 0 || (!s.historyOn && now.Before(s.historyNext)) {
		return h
	}
	start := time.Now()
	h.Ran, h.Before = true, now.Add(-s.set.HistoryRetention)
	if !s.historyOn {
		s.log.Info("scheduler: history pass started", "before", h.Before, "retention", s.set.HistoryRetention)
	}
	s.historyOn = true
	for left := s.set.HistoryPerTick; left > 0 && ctx.Err() == nil; {
		step := min(left, historyStep)
		left -= step
		res, err := s.store.PurgeHistory(ctx, h.Before, step)
		h.add(res)
		s.m.historyDeleted.WithLabelValues("jobs").Add(float64(res.Jobs))
		s.m.historyDeleted.WithLabelValues("events").Add(float64(res.EventDocs))
		if err != nil {
			h.Err = err
			s.m.historyErrors.Inc()
			if ctx.Err() == nil {
				s.log.Error("scheduler: history pass; going on at the next tick", "before", h.Before, "err", err)
			}
			break
		}
		if !res.More {
			h.Done = true
			h.Audit = s.pruneAudit(ctx, now)
			s.historyOn = false
			s.historyNext = now.Add(s.set.HistoryEvery)
			s.m.historyLastPass.SetToCurrentTime()
			break
		}
		if time.Since(start) >= s.set.HistoryTimePerTick {
			break
		}
	}
	h.Took = time.Since(start)
	if h.Jobs > 0 || h.Archived > 0 || h.Done {
		s.log.Info("scheduler: history pass", "deleted_jobs", h.Jobs, "deleted_event_docs", h.EventDocs, "deleted_audit", h.Audit,
			"archived", h.Archived, "before", h.Before, "done", h.Done, "took", h.Took)
	}
	return h
}

// pruneAudit deletes the audit entries recorded more than AuditRetention
// before now (one delete by time; the audit trail has no TTL index
// either) and returns how many. An error is logged and counted; the next
// pass tries again.
func (s *Scheduler) pruneAudit(ctx context.Context, now time.Time) int64 {
	if s.set.AuditRetention <= 0 {
		return 0
	}
	n, err := s.store.PruneAudit(ctx, now.Add(-s.set.AuditRetention))
	if err != nil {
		s.m.historyErrors.Inc()
		if ctx.Err() == nil {
			s.log.Error("scheduler: audit prune; trying again at the next pass", "retention", s.set.AuditRetention, "err", err)
		}
		return 0
	}
	s.m.historyDeleted.WithLabelValues("audit").Add(float64(n))
	return n
}

func (h *History) add(r store.PurgeResult) {
	h.Jobs += r.Jobs
	h.EventDocs += r.EventDocs
	h.Archived += r.Archived
}
