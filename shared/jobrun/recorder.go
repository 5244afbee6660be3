package jobrun

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// Recorder numbers a job's step events, publishes each at once for live
// followers, and writes them to the store in batches (the embedded store
// is slow per operation, so one write per step end or heartbeat, not per
// event).
type Recorder struct {
	job     domain.Job
	jobType string
	store   EventStore
	bus     EventBus
	now     func() time.Time
	log     *slog.Logger

	mu      sync.Mutex
	seq     int // last used; -1 until loaded from the store
	pending []domain.JobEvent
	status  domain.JobStatus

	// flushMu keeps flushes (step ends, heartbeats) one at a time, so
	// batches reach the store in order.
	flushMu sync.Mutex

	// steps are the timed parts of this step's run (Time), in order.
	steps []stepTime
}

type stepTime struct {
	name string
	d    time.Duration
}

// Time records how long a named part of the job took (e.g. "preflight",
// "pull"). The executor adds the parts it sees itself (queue, handoff,
// the step's work when the work timed nothing, finish); all of them
// become the job's <name>_seconds summary fields and observations of
// satoru_job_step_seconds.
func (r *Recorder) Time(name string, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, stepTime{name: name, d: max(d, 0)})
}

// lastSeq is the last number given to an event (-1 before the first).
func (r *Recorder) lastSeq() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seq
}

// timedCount is how many parts were timed so far.
func (r *Recorder) timedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.steps)
}

// StepSummaryKey is the summary field that holds a step's seconds.
func StepSummaryKey(step string) string { return step + "_seconds" }

// stepTimes returns the timed parts, and forgets them (each is reported once).
func (r *Recorder) stepTimes() []stepTime {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.steps
	r.steps = nil
	return s
}

// Resume continues the numbering of a job an earlier attempt worked on
// and died: the events that attempt published but never stored are first
// copied from the event stream into the store (RecoverEvents). Call it
// before the first Add. It returns how many events were recovered.
func (r *Recorder) Resume(ctx context.Context) (int, error) {
	last, n, err := RecoverEvents(ctx, r.store, r.bus, r.job)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.seq = max(r.seq, last)
	r.mu.Unlock()
	return n, nil
}

// EventStore is the part of the store RecoverEvents writes.
type EventStore interface {
	ListEvents(ctx context.Context, jobID string) ([]domain.JobEvent, error)
	AppendEvents(ctx context.Context, jobID string, evs ...domain.JobEvent) error
}

// EventSource reads a job's events from the event stream.
type EventSource interface {
	JobEvents(ctx context.Context, siteUUID, jobID string) ([]events.StepEvent, error)
}

// EventBus is the part of the bus a Recorder uses: it publishes events
// and reads them back to resume.
type EventBus interface {
	EventSource
	PublishEvent(ctx context.Context, e events.StepEvent) error
}

// RecoverEvents stores the events of job that the event stream holds and
// the store does not: those numbered after the last stored one, which a
// worker that died published between two writes to the store. They are
// appended in one write, in seq order. It returns the last seq now stored
// (where numbering continues) and how many events it added. The caller
// must hold the job's lease (one writer per job).
func RecoverEvents(ctx context.Context, st EventStore, src EventSource, job domain.Job) (last, added int, err error) {
	stored, err := st.ListEvents(ctx, job.ID)
	if err != nil {
		return 0, 0, fmt.Errorf("recover events of job %s: %w", job.ID, err)
	}
	for _, ev := range stored {
		last = max(last, ev.Seq)
	}
	streamed, err := src.JobEvents(ctx, job.SiteUUID, job.ID)
	if err != nil {
		return 0, 0, fmt.Errorf("recover events of job %s: %w", job.ID, err)
	}
	// Events are stored in order, so the unstored ones are exactly those
	// after the last stored; one seq published twice is kept once.
	seen := map[int]bool{}
	var missing []domain.JobEvent
	for _, se := range streamed {
		ev := se.Event
		if ev.Seq <= last || seen[ev.Seq] {
			continue
		}
		seen[ev.Seq] = true
		missing = append(missing, ev)
	}
	if len(missing) == 0 {
		return last, 0, nil
	}
	sort.SliceStable(missing, func(i, j int) bool { return missing[i].Seq < missing[j].Seq })
	if err := st.AppendEvents(ctx, job.ID, missing...); err != nil {
		return 0, 0, fmt.Errorf("recover events of job %s: %w", job.ID, err)
	}
	return missing[len(missing)-1].Seq, len(missing), nil
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

// Flush writes pending events to the store in one write. On failure they
// stay pending for the next Flush.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
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
