package jobrun

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// Recorder numbers a job's step events, publishes each at once for live
// followers, and writes them to the store in batches (the embedded store
// is slow per operation, so one write per step, not per event).
type Recorder struct {
	job     domain.Job
	jobType string
	store   Store
	bus     Bus
	now     func() time.Time
	log     *slog.Logger

	mu      sync.Mutex
	seq     int // last used; -1 until loaded from the store
	pending []domain.JobEvent
	status  domain.JobStatus
}

// Add records one event: Seq and TS are set here.
func (r *Recorder) Add(ctx context.Context, ev domain.JobEvent) {
	r.mu.Lock()
	if r.seq < 0 {
		r.seq = 0
		if prev, err := r.store.ListEvents(ctx, r.job.ID); err == nil && len(prev) > 0 {
			r.seq = prev[len(prev)-1].Seq // a redelivered job continues its numbering
		}
	}
	r.seq++
	ev.Seq = r.seq
	if ev.TS.IsZero() {
		ev.TS = r.now().Truncate(time.Millisecond)
	}
	if ev.Level == "" {
		ev.Level = domain.LevelInfo
	}
	r.pending = append(r.pending, ev)
	status := r.status
	r.mu.Unlock()

	r.log.Log(ctx, levelOf(ev.Level), ev.Message, "step", ev.Step, "target_hash", ev.TargetHash)
	se := events.StepEvent{V: events.StepEventV1, JobID: r.job.ID, SiteUUID: r.job.SiteUUID, JobType: r.jobType, Status: string(status), Event: ev}
	if err := r.bus.PublishEvent(context.WithoutCancel(ctx), se); err != nil {
		r.log.Warn("step event not published", "step", ev.Step, "err", err)
	}
}

// Flush writes pending events to the store in one write.
func (r *Recorder) Flush(ctx context.Context) error {
	r.mu.Lock()
	batch := r.pending
	r.pending = nil
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := r.store.AppendEvents(ctx, r.job.ID, batch...); err != nil {
		r.mu.Lock()
		r.pending = append(batch, r.pending...)
		r.mu.Unlock()
		return fmt.Errorf("record events of job %s: %w", r.job.ID, err)
	}
	return nil
}

func levelOf(l string) slog.Level {
	switch l {
	case domain.LevelError:
		return slog.LevelError
	case domain.LevelWarn:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}
