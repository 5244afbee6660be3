// Package jobrun runs a job's life around a service's work: it takes the
// site lease, marks the job running, heartbeats, watches for cancel,
// records step events and writes the outcome. Services supply only the
// work itself.
package jobrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/tick"
)

// ErrCanceled is the cause of a job context canceled by request.
var ErrCanceled = errors.New("canceled by request")

// Store is the part of the store a job's life writes.
type Store interface {
	GetJob(ctx context.Context, id string) (domain.Job, error)
	StartJob(ctx context.Context, id, worker string, attempts int, at time.Time) error
	HeartbeatJob(ctx context.Context, id string, at time.Time) error
	RetryJob(ctx context.Context, id, errMsg string, next, at time.Time) error
	// FinishJobTargets writes the final outcome, with the per-target
	// results when not nil, in one write.
	FinishJobTargets(ctx context.Context, id string, status domain.JobStatus, errMsg string, summary map[string]any, targets []domain.TargetRun, at time.Time) error
	AppendEvents(ctx context.Context, jobID string, evs ...domain.JobEvent) error
	ListEvents(ctx context.Context, jobID string) ([]domain.JobEvent, error)
	HandOffJob(ctx context.Context, id string, summary map[string]any, targets []domain.TargetRun, h domain.HandOff, at time.Time) error
	ContinueJob(ctx context.Context, id, worker, step string, attempts int, at time.Time) error
}

// Bus is the part of the message bus a job's life uses.
type Bus interface {
	AcquireSite(ctx context.Context, siteUUID string, h bus.LeaseHolder) (*bus.Lease, error)
	CancelRequested(ctx context.Context, jobID string) (bool, error)
	WatchCancel(ctx context.Context, jobID string, fn func()) error
	PublishEvent(ctx context.Context, e events.StepEvent) error
	Publish(ctx context.Context, r events.JobRequest) error
	// JobEvents reads the step events of a job the event stream holds.
	JobEvents(ctx context.Context, siteUUID, jobID string) ([]events.StepEvent, error)
}

// Outcome is how a job's work ended.
type Outcome struct {
	Status  domain.JobStatus
	Error   string
	Summary map[string]any
	// Targets are per-target results, saved with a hand-off.
	Targets []domain.TargetRun
	// Retry marks a failure that may pass (site unreachable, repository
	// locked): the job gets another attempt after a backoff while it has
	// attempts left.
	Retry bool
	// Next, when set, hands the still running job to the service that
	// takes this step type (e.g. "snapshot"): the summary is saved, the
	// site lease stays held under the job's id, and the next step
	// continues the job: in this process when Executor.Local serves it,
	// else by a request to the service that takes it.
	Next string
}

// Work does a job's work, recording its steps through rec.
type Work func(ctx context.Context, job domain.Job, rec *Recorder) Outcome

// Executor runs jobs for one service instance.
type Executor struct {
	Store  Store
	Bus    Bus
	Worker string
	// Heartbeat is how often the lease and heartbeat_at are refreshed and
	// the recorded events written to the store, so a crash loses at most
	// one heartbeat of events from the store (they are in the event
	// stream, whence the next attempt recovers them).
	Heartbeat time.Duration
	// MaxAttempts bounds how often a job is attempted: every start of its
	// first step, and every start again of a continuation step whose
	// worker died, counts (see docs/architecture.md).
	MaxAttempts int
	// LeaseRetry is how long to wait before retrying a busy site.
	LeaseRetry time.Duration
	// RetryBase is the first backoff after a transient failure; it
	// doubles with every attempt, with jitter, up to MaxBackoff.
	RetryBase time.Duration
	// IsNotFound tells the store's not-found error.
	IsNotFound func(error) bool
	Metrics    *observe.JobMetrics
	Now        func() time.Time
	Log        *slog.Logger
	// Notify, when set, is told every job's final outcome after it is
	// written (e.g. a webhook). It must not block for long and its
	// errors are its own: a notification never fails a job.
	Notify func(ctx context.Context, job domain.Job, out Outcome)
	// Staging is the id of this worker's staging folder (shared/staging),
	// "" for a service that keeps no local data. A hand-off records it
	// and its request carries it, so the next step can refuse to read a
	// folder that is not the one this step wrote.
	Staging string
	// Local picks the work of the continuation steps this process runs
	// itself (a worker node's snapshot after its pull): such a step runs
	// right after the one before it, on the same delivery and under the
	// same site lease, and the request is acked only when the job has
	// finished. A crash in between leaves the request unacked: it is
	// delivered again and the job starts over from its first step.
	Local map[string]func(domain.Job) (Work, error)
	// Hold, when set, may keep a queued job from starting until a time
	// (a maintenance window of its site, shared/policy.HoldFor): the
	// request is handed back and the job stays queued. Steps a job has
	// already started go on.
	Hold func(ctx context.Context, job domain.Job) (until time.Time, why string, err error)
	// HoldRecheck is how long a held job waits before Hold is asked
	// again, at most (a window may be shortened or removed); 0 means a
	// minute.
	HoldRecheck time.Duration
}

func (x *Executor) now() time.Time {
	if x.Now != nil {
		return x.Now().UTC()
	}
	return time.Now().UTC()
}

// Handle runs the job named by a delivered JobRequest with work chosen by
// pick. It returns bus errors: nil to ack, RetryError to come back later,
// PermanentError for a message that can never run.
func (x *Executor) Handle(ctx context.Context, d bus.Delivery, pick func(domain.Job) (Work, error)) error {
	var req events.JobRequest
	if err := json.Unmarshal(d.Data, &req); err != nil {
		return bus.Permanent(fmt.Errorf("decode job request on %s: %w", d.Subject, err))
	}
	if err := req.Validate(); err != nil {
		return bus.Permanent(err)
	}
	log := x.Log.With("site_uuid", req.SiteUUID, "job_id", req.JobID, "job_type", req.Type)
	job, err := x.Store.GetJob(ctx, req.JobID)
	if err != nil {
		if x.IsNotFound != nil && x.IsNotFound(err) {
			return bus.Permanent(fmt.Errorf("job %s: %w", req.JobID, err))
		}
		return bus.RetryAfter(2*time.Second, err)
	}
	if job.Status.Terminal() {
		log.Info("job already finished; dropping duplicate delivery", "status", job.Status)
		return nil
	}
	if req.Staging != "" && req.Type != string(job.Type) {
		// The request names the staging its step was handed from; it is
		// what the continuation checks its own against.
		h := domain.HandOff{}
		if job.HandOff != nil {
			h = *job.HandOff
		}
		h.Staging = req.Staging
		job.HandOff = &h
	}
	r := x.newStepRun(job, req.Type, log)
	if err := x.takeOver(ctx, r); err != nil {
		return err
	}
	work, ended, err := x.gate(ctx, r, pick)
	if ended {
		return err
	}
	if err := x.start(ctx, r, d.NumDelivered); err != nil {
		return err
	}
	if x.Metrics != nil {
		x.Metrics.Running.WithLabelValues(string(r.job.Type)).Inc()
		defer x.Metrics.Running.WithLabelValues(string(r.job.Type)).Dec()
	}
	out, cause := x.runWork(ctx, r, work)
	return x.conclude(ctx, r, out, cause)
}

// stepRun is one delivery of a job step as Handle's steps fill it in.
type stepRun struct {
	job  domain.Job
	step string // the request's type: the job's own, or a continuation
	rec  *Recorder
	log  *slog.Logger

	// A continuation step (the snapshot of a backup) carries on the
	// attempt the job's first step started, unless the job shows this
	// step was started before (again): its worker died, so this is a new
	// attempt. resumed: an earlier start of this step never ended; it may
	// have published events it never stored.
	continuation, again, resumed, newAttempt bool

	lease            *bus.Lease
	started, workEnd time.Time
}

func (x *Executor) newStepRun(job domain.Job, step string, log *slog.Logger) *stepRun {
	r := &stepRun{job: job, step: step, rec: x.recorder(job, step, log), log: log}
	r.continuation = step != string(job.Type)
	r.again = r.continuation && job.Step == step
	r.resumed = r.again || (!r.continuation && job.Status == domain.StatusRunning)
	r.newAttempt = !r.continuation || r.again
	return r
}

// takeOver: a job some worker had (a continuation, or a resumed job) is
// only written under its lease, whose holder is then gone: one writer.
// A resumed job's events the dead worker published but never stored are
// recovered first.
func (x *Executor) takeOver(ctx context.Context, r *stepRun) error {
	if !r.continuation && !r.resumed {
		return nil
	}
	lease, err := x.acquire(ctx, r.job, r.step, r.log)
	if err != nil {
		return err
	}
	r.lease = lease
	if !r.resumed {
		return nil
	}
	n, err := r.rec.Resume(ctx)
	if err != nil {
		x.release(r.lease, r.log)
		return bus.RetryAfter(2*time.Second, err)
	}
	if n > 0 {
		r.log.Info("events of the interrupted attempt recovered from the event stream", "events", n)
	}
	return nil
}

// gate ends the job before any work when a cancel was requested, its
// attempts are used up, or no work fits it (ended is then true and err
// is Handle's answer); otherwise it returns the work, with the lease held.
func (x *Executor) gate(ctx context.Context, r *stepRun, pick func(domain.Job) (Work, error)) (work Work, ended bool, err error) {
	fail := func(msg string) error {
		r.rec.Add(ctx, domain.JobEvent{Step: "job", Level: domain.LevelError, Message: msg})
		return x.finish(ctx, r.job, r.rec, r.lease, Outcome{Status: domain.StatusFailed, Error: msg}, time.Time{}, time.Time{})
	}
	if canceled, err := x.Bus.CancelRequested(ctx, r.job.ID); err != nil {
		x.release(r.lease, r.log)
		return nil, true, bus.RetryAfter(2*time.Second, err)
	} else if canceled {
		return nil, true, x.finish(ctx, r.job, r.rec, r.lease, Outcome{Status: domain.StatusCanceled, Error: ErrCanceled.Error()}, time.Time{}, time.Time{})
	}
	if r.newAttempt && x.MaxAttempts > 0 && r.job.Attempts >= x.MaxAttempts {
		return nil, true, fail(fmt.Sprintf("worker lost: %d attempts did not finish", r.job.Attempts))
	}
	if held, err := x.held(ctx, r); held || err != nil {
		return nil, true, err
	}
	if work, err = pick(r.job); err != nil {
		return nil, true, fail(err.Error())
	}
	if r.lease == nil {
		if r.lease, err = x.acquire(ctx, r.job, r.step, r.log); err != nil {
			return nil, true, err
		}
	}
	return work, false, nil
}

// held asks Hold about a job that has not started yet; a held job's
// request comes back when the hold ends, or at the latest after
// HoldRecheck.
func (x *Executor) held(ctx context.Context, r *stepRun) (bool, error) {
	if x.Hold == nil || r.continuation || r.job.Status != domain.StatusQueued {
		return false, nil
	}
	until, why, err := x.Hold(ctx, r.job)
	if err != nil {
		x.release(r.lease, r.log)
		return true, bus.RetryAfter(2*time.Second, err)
	}
	if until.IsZero() {
		return false, nil
	}
	recheck := x.HoldRecheck
	if recheck <= 0 {
		recheck = time.Minute
	}
	delay := max(min(until.Sub(x.now()), recheck), time.Second)
	x.release(r.lease, r.log)
	r.log.Info("job held: it stays queued", "why", why, "recheck_in", delay)
	return true, bus.RetryAfter(delay, errors.New(why))
}

// start marks the job running under this worker: a first step starts
// the job (timing its queue), a continuation takes it over (timing the
// hand-off) and keeps the job's started_at.
func (x *Executor) start(ctx context.Context, r *stepRun, delivery uint64) error {
	job := &r.job
	r.started = x.now()
	attempts := job.Attempts
	if r.newAttempt {
		attempts++
	}
	if r.continuation {
		if err := x.Store.ContinueJob(ctx, job.ID, x.Worker, r.step, attempts, r.started); err != nil {
			x.release(r.lease, r.log)
			return bus.RetryAfter(2*time.Second, err)
		}
		if job.HandedOffAt != nil && !r.again {
			r.rec.Time("handoff", r.started.Sub(*job.HandedOffAt))
		}
		if job.StartedAt != nil {
			r.started = *job.StartedAt
		}
		msg := fmt.Sprintf("%s step taken over by %s", r.step, x.Worker)
		if r.again {
			msg = fmt.Sprintf("%s step started again by %s (attempt %d)", r.step, x.Worker, attempts)
		}
		job.Status, job.Attempts, job.Step = domain.StatusRunning, attempts, r.step
		r.rec.status = domain.StatusRunning
		r.rec.Add(ctx, domain.JobEvent{Step: r.step, Level: domain.LevelInfo, Message: msg})
	} else {
		if err := x.Store.StartJob(ctx, job.ID, x.Worker, attempts, r.started); err != nil {
			x.release(r.lease, r.log)
			return bus.RetryAfter(2*time.Second, err)
		}
		if attempts == 1 && !job.CreatedAt.IsZero() {
			// Later attempts waited for a backoff, not for a worker.
			r.rec.Time("queue", r.started.Sub(job.CreatedAt))
		}
		started := r.started
		job.Status, job.Attempts, job.StartedAt, job.Step = domain.StatusRunning, attempts, &started, ""
		// As StartJob: the last attempt's hand-off is not this one's.
		job.Targets, job.HandOff, job.HandedOffAt = nil, nil, nil
		r.rec.status = domain.StatusRunning
		r.rec.Add(ctx, domain.JobEvent{Step: "job", Level: domain.LevelInfo,
			Message: fmt.Sprintf("started by %s (attempt %d)", x.Worker, attempts)})
	}
	r.log.Info("job step started", "step", r.step, "attempt", attempts, "delivery", delivery)
	if r.newAttempt && attempts > 1 && x.Metrics != nil {
		x.Metrics.Retries.WithLabelValues(string(job.Type)).Inc()
	}
	return nil
}

// runWork runs the work under a context that a cancel request or a lost
// lease ends (cause says which), while two loops renew the lease and
// write heartbeats and events, so a slow store write never delays a
// renewal. Work that timed none of its parts is timed as one.
func (x *Executor) runWork(ctx context.Context, r *stepRun, work Work) (Outcome, error) {
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if err := x.Bus.WatchCancel(jctx, r.job.ID, func() { cancel(ErrCanceled) }); err != nil {
		r.log.Warn("cannot watch for cancel requests", "err", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		x.renew(jctx, r.lease, cancel, r.log)
	}()
	go func() {
		defer wg.Done()
		x.heartbeat(jctx, r.job.ID, r.rec, r.log)
	}()
	workStart, timedBefore := x.now(), r.rec.timedCount()
	out := work(jctx, r.job, r.rec)
	r.workEnd = x.now()
	if r.rec.timedCount() == timedBefore {
		r.rec.Time(r.step, r.workEnd.Sub(workStart))
	}
	cause := context.Cause(jctx)
	cancel(nil)
	wg.Wait()
	return out, cause
}

// conclude acts on how the work ended: shutdown leaves the job running
// for its redelivery; otherwise it is handed on, retried or finished.
func (x *Executor) conclude(ctx context.Context, r *stepRun, out Outcome, cause error) error {
	if ctx.Err() != nil {
		// Shutdown or crash: leave the job running; its message comes back.
		_ = r.rec.Flush(context.WithoutCancel(ctx))
		x.release(r.lease, r.log)
		return ctx.Err()
	}
	if out.Next != "" && cause == nil && !out.Status.Terminal() {
		if pick, ok := x.Local[out.Next]; ok {
			return x.continueLocal(ctx, r, out, pick)
		}
		return x.handOff(ctx, r.job, r.rec, r.lease, out, r.workEnd)
	}
	if errors.Is(cause, bus.ErrLeaseLost) {
		// A renewal that came too late (a starved host, a NATS hiccup) is
		// not a failed backup: try again under a fresh lease, like any
		// transient failure, until the attempts run out.
		out = Outcome{Status: domain.StatusFailed, Retry: true, Error: "site lease lost while running: " + cause.Error(), Summary: out.Summary}
		cause = nil
	}
	if out.Retry && cause == nil && out.Status == domain.StatusFailed && x.MaxAttempts > 0 && r.job.Attempts < x.MaxAttempts {
		return x.retry(ctx, r.job, r.rec, r.lease, out)
	}
	switch {
	case errors.Is(cause, ErrCanceled):
		out = Outcome{Status: domain.StatusCanceled, Error: ErrCanceled.Error(), Summary: out.Summary}
	}
	return x.finish(ctx, r.job, r.rec, r.lease, out, r.started, r.workEnd)
}

// finish writes a job's final outcome. started and workEnd are when the
// job started and its last step's work ended (zero when no work ran).
func (x *Executor) finish(ctx context.Context, job domain.Job, rec *Recorder, lease *bus.Lease, out Outcome, started, workEnd time.Time) error {
	defer x.release(lease, rec.log)
	if !out.Status.Terminal() {
		out.Status = domain.StatusFailed
	}
	rec.status = out.Status
	rec.Add(ctx, finalEvent(out.Status, out.Error))
	if err := rec.Flush(ctx); err != nil {
		return bus.RetryAfter(2*time.Second, err)
	}
	// finished_at is stamped after the events are written, so the finish
	// step covers everything after the work up to the final write.
	at := x.now()
	if !workEnd.IsZero() {
		rec.Time("finish", at.Sub(workEnd))
	}
	out.Summary = x.stepSummary(job.Type, rec, out.Summary)
	if err := x.Store.FinishJobTargets(ctx, job.ID, out.Status, out.Error, out.Summary, out.Targets, at); err != nil {
		return bus.RetryAfter(2*time.Second, err)
	}
	if x.Metrics != nil {
		x.Metrics.Finished.WithLabelValues(string(job.Type), string(out.Status)).Inc()
		if !started.IsZero() {
			x.Metrics.Duration.WithLabelValues(string(job.Type)).Observe(at.Sub(started).Seconds())
		}
		if job.Type == domain.JobBackup { // every way a backup ends, worker lost included
			x.Metrics.Sites.Finished(job.SiteUUID, string(out.Status), at)
		}
	}
	rec.log.Info("job finished", "status", out.Status, "error", out.Error)
	if x.Notify != nil {
		x.Notify(context.WithoutCancel(ctx), job, out)
	}
	return nil
}

// stepSummary adds the parts rec timed to summary as <step>_seconds
// fields (a part timed twice adds up) and to the step histogram.
func (x *Executor) stepSummary(jobType domain.JobType, rec *Recorder, summary map[string]any) map[string]any {
	times := rec.stepTimes()
	if len(times) == 0 {
		return summary
	}
	if summary == nil {
		summary = map[string]any{}
	}
	sums := map[string]time.Duration{}
	var order []string
	for _, st := range times {
		if _, seen := sums[st.name]; !seen {
			order = append(order, st.name)
		}
		sums[st.name] += st.d
	}
	for _, name := range order {
		summary[StepSummaryKey(name)] = math.Round(sums[name].Seconds()*1000) / 1000
		if x.Metrics != nil && x.Metrics.Steps != nil {
			x.Metrics.Steps.WithLabelValues(string(jobType), name).Observe(sums[name].Seconds())
		}
	}
	return summary
}

// finalEvent is the last event of a job that ended with status.
func finalEvent(status domain.JobStatus, errMsg string) domain.JobEvent {
	level := domain.LevelInfo
	switch status {
	case domain.StatusFailed:
		level = domain.LevelError
	case domain.StatusWarning, domain.StatusCanceled:
		level = domain.LevelWarn
	}
	msg := "finished: " + string(status)
	if errMsg != "" {
		msg += ": " + errMsg
	}
	return domain.JobEvent{Step: "job", Level: level, Message: msg}
}

// LostStore is the part of the store FailLost writes.
type LostStore interface {
	EventStore
	FinishJob(ctx context.Context, id string, status domain.JobStatus, errMsg string, summary map[string]any, at time.Time) error
}

// FailLost ends a running job whose worker is lost as failed with msg,
// for a caller that does not run the job (the scheduler's stale-job
// recovery): the events the dead worker published but never stored are
// stored first, then the final event is recorded after them, as a worker
// that finishes would, and the job document is finished with the summary
// it has. The caller must hold the job's lease (one writer per job).
func FailLost(ctx context.Context, st LostStore, b EventBus, job domain.Job, msg string, at time.Time, log *slog.Logger) error {
	at = at.UTC()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec := &Recorder{job: job, jobType: string(job.Type), store: st, bus: b, now: func() time.Time { return at },
		log: log, status: domain.StatusFailed, seq: -1}
	if _, err := rec.Resume(ctx); err != nil {
		return err
	}
	rec.Add(ctx, finalEvent(domain.StatusFailed, msg))
	if err := rec.Flush(ctx); err != nil {
		return err
	}
	if err := st.FinishJob(ctx, job.ID, domain.StatusFailed, msg, job.Summary, at); err != nil {
		return fmt.Errorf("finish job %s: %w", job.ID, err)
	}
	return nil
}

// PendingRequest is the request a running job waits on: after a hand-off
// over the bus (the job holds its pulled targets) the snapshot step's,
// carrying the staging the pull wrote; else, and after a hand-off in
// process (whose request is still unacked), its own first step's.
// Whoever requeues a job whose worker was lost sends it.
func PendingRequest(job domain.Job) events.JobRequest {
	local := job.HandOff != nil && job.HandOff.Local
	if job.Type == domain.JobBackup && job.Targets != nil && !local {
		return events.StepRequest(job, events.StepSnapshot)
	}
	return events.RequestFor(job)
}

// MaxBackoff caps the wait between attempts.
const MaxBackoff = 10 * time.Minute

// Backoff is the wait before the attempt after attempt n (1-based): base
// doubled per attempt, capped, with ±25% jitter so failed jobs of many
// sites do not come back in step. rnd returns a number in [0, 1).
func Backoff(base time.Duration, n int, rnd func() float64) time.Duration {
	if base <= 0 {
		base = 10 * time.Second
	}
	d := base
	for i := 1; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, MaxBackoff)
	return time.Duration(float64(d) * (0.75 + rnd()/2))
}

// retry records a failed attempt and queues the next one after a backoff.
func (x *Executor) retry(ctx context.Context, job domain.Job, rec *Recorder, lease *bus.Lease, out Outcome) error {
	defer x.release(lease, rec.log)
	delay := Backoff(x.RetryBase, job.Attempts, rand.Float64)
	next := x.now().Add(delay)
	rec.status = domain.StatusQueued
	rec.Add(ctx, domain.JobEvent{Step: "retry", Level: domain.LevelWarn,
		Message: fmt.Sprintf("attempt %d of %d failed: %s; next attempt at %s", job.Attempts, x.MaxAttempts, out.Error, next.Format(time.RFC3339)),
		Data:    map[string]any{"attempt": job.Attempts, "next_attempt_at": next, "error": out.Error}})
	if err := rec.Flush(ctx); err != nil {
		return bus.RetryAfter(2*time.Second, err)
	}
	if err := x.Store.RetryJob(ctx, job.ID, out.Error, next, x.now()); err != nil {
		return bus.RetryAfter(2*time.Second, err)
	}
	rec.log.Warn("job attempt failed; retrying", "attempt", job.Attempts, "next_attempt_at", next, "error", out.Error)
	return bus.RetryAfter(delay, errors.New(out.Error))
}

// handOff saves the step's summary and passes the job on, keeping the
// site lease for the next step, which takes it over under the same job id.
// recordHandOff writes what a step hands on: its events, its step times
// (into out.Summary) and the job's summary, targets and hand-off record,
// stamped workEnd, when the step's work ended.
func (x *Executor) recordHandOff(ctx context.Context, job domain.Job, rec *Recorder, out *Outcome, h domain.HandOff, workEnd time.Time) error {
	if err := rec.Flush(ctx); err != nil {
		return err
	}
	out.Summary = x.stepSummary(job.Type, rec, out.Summary)
	return x.Store.HandOffJob(ctx, job.ID, out.Summary, out.Targets, h, workEnd)
}

// workEnd, when the step's work ended, is the hand-off's start.
func (x *Executor) handOff(ctx context.Context, job domain.Job, rec *Recorder, lease *bus.Lease, out Outcome, workEnd time.Time) error {
	h := domain.HandOff{Staging: x.Staging, Worker: x.Worker}
	if err := x.recordHandOff(ctx, job, rec, &out, h, workEnd); err != nil {
		return bus.RetryAfter(2*time.Second, err)
	}
	job.HandOff = &h
	if lease != nil {
		// Renew once more, marked for the next step, which alone may take
		// it over; the renewal makes it outlive the hop.
		if err := lease.HandOff(ctx, out.Next); err != nil {
			rec.log.Warn("lease hand-off failed; the next step waits for it to expire", "err", err)
		}
	}
	next := events.StepRequest(job, out.Next)
	if err := x.Bus.Publish(ctx, next); err != nil {
		// Nothing will continue the job: end it rather than leave it running.
		msg := fmt.Sprintf("hand-off to %s failed: %v", out.Next, err)
		return x.finish(ctx, job, rec, lease, Outcome{Status: domain.StatusFailed, Error: msg, Summary: out.Summary}, time.Time{}, time.Time{})
	}
	rec.log.Info("job handed off", "next", out.Next)
	return nil
}

// continueLocal runs the next step of r's job in this process, right
// after r's work, on the same delivery and under the same lease: the
// hand-off is recorded as one over the bus would be (summary, targets,
// handed_off_at, "taken over" event), then the next step's work runs and
// its outcome is concluded. The request is acked only after that.
func (x *Executor) continueLocal(ctx context.Context, r *stepRun, out Outcome, pick func(domain.Job) (Work, error)) error {
	job, rec := r.job, r.rec
	h := domain.HandOff{Staging: x.Staging, Worker: x.Worker, Local: true}
	if err := x.recordHandOff(ctx, job, rec, &out, h, r.workEnd); err != nil {
		// The pull's data stays in staging; the redelivery pulls again.
		x.release(r.lease, r.log)
		return bus.RetryAfter(2*time.Second, err)
	}
	handed := r.workEnd
	job.Summary, job.Targets, job.HandOff, job.HandedOffAt = out.Summary, out.Targets, &h, &handed
	next := &stepRun{job: job, step: out.Next, rec: x.recorder(job, out.Next, r.log), log: r.log,
		continuation: true, lease: r.lease}
	// The numbering goes on from this step's events, all written above.
	next.rec.seq = rec.lastSeq()
	fail := func(msg string) error {
		next.rec.Add(ctx, domain.JobEvent{Step: "job", Level: domain.LevelError, Message: msg})
		return x.finish(ctx, next.job, next.rec, next.lease, Outcome{Status: domain.StatusFailed, Error: msg, Summary: out.Summary}, time.Time{}, time.Time{})
	}
	if next.lease != nil {
		// The renewal loop stopped with the step's work; renew before the
		// next one starts its own.
		if err := next.lease.Renew(ctx); err != nil {
			msg := "site lease lost at the hand-off to " + out.Next + ": " + err.Error()
			if x.MaxAttempts > 0 && job.Attempts < x.MaxAttempts {
				// As for a lease lost while running: the redelivery
				// pulls again (staging keeps this pull) under a new lease.
				return x.retry(ctx, next.job, next.rec, next.lease, Outcome{Status: domain.StatusFailed, Retry: true, Error: msg, Summary: out.Summary})
			}
			return fail(msg)
		}
	}
	if canceled, err := x.Bus.CancelRequested(ctx, job.ID); err != nil {
		x.release(next.lease, r.log)
		return bus.RetryAfter(2*time.Second, err)
	} else if canceled {
		return x.finish(ctx, next.job, next.rec, next.lease, Outcome{Status: domain.StatusCanceled, Error: ErrCanceled.Error(), Summary: out.Summary}, time.Time{}, time.Time{})
	}
	work, err := pick(next.job)
	if err != nil {
		return fail(err.Error())
	}
	r.log.Info("job handed off in process", "next", out.Next)
	if err := x.start(ctx, next, 0); err != nil {
		return err
	}
	out2, cause := x.runWork(ctx, next, work)
	return x.conclude(ctx, next, out2, cause)
}

// acquire takes the site lease for step of job, as bus errors: a busy
// site comes back after LeaseRetry.
func (x *Executor) acquire(ctx context.Context, job domain.Job, step string, log *slog.Logger) (*bus.Lease, error) {
	// Site jobs hold their site's lease; repository-level jobs (offsite
	// sync) share one (events.LeaseKey), so two never run at once.
	lease, err := x.Bus.AcquireSite(ctx, job.SiteUUID, bus.LeaseHolder{JobID: job.ID, Worker: x.Worker, Step: step})
	if errors.Is(err, bus.ErrLeaseHeld) {
		log.Debug("lease busy; retrying later", "err", err)
		return nil, bus.RetryAfter(x.LeaseRetry, err)
	}
	if err != nil {
		return nil, bus.RetryAfter(2*time.Second, err)
	}
	return lease, nil
}

// renew keeps the site lease every Heartbeat; a lost lease stops the job.
func (x *Executor) renew(ctx context.Context, lease *bus.Lease, cancel context.CancelCauseFunc, log *slog.Logger) {
	if lease == nil {
		return
	}
	tick.Every(ctx, x.Heartbeat, func() bool {
		if err := lease.Renew(ctx); err != nil && ctx.Err() == nil {
			log.Error("site lease lost; stopping job", "err", err)
			cancel(err)
			return false
		}
		return true
	})
}

// heartbeatWrite bounds one heartbeat's store writes.
const heartbeatWrite = 30 * time.Second

// heartbeat refreshes heartbeat_at and writes the events recorded since
// the last tick in one batch, every Heartbeat.
func (x *Executor) heartbeat(ctx context.Context, jobID string, rec *Recorder, log *slog.Logger) {
	tick.Every(ctx, x.Heartbeat, func() bool {
		if err := x.Store.HeartbeatJob(ctx, jobID, x.now()); err != nil && ctx.Err() == nil {
			log.Warn("heartbeat write failed", "err", err)
		}
		// Not canceled with the job: a write cut off half-way might be
		// applied and then written again from the kept batch.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), heartbeatWrite)
		defer cancel()
		if err := rec.Flush(wctx); err != nil {
			log.Warn("events not written at heartbeat; kept for the next", "err", err)
		}
		return true
	})
}

func (x *Executor) release(lease *bus.Lease, log *slog.Logger) {
	if lease == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := lease.Release(ctx); err != nil {
		log.Warn("lease release failed; it expires by TTL", "err", err)
	}
}

func (x *Executor) recorder(job domain.Job, jobType string, log *slog.Logger) *Recorder {
	return &Recorder{job: job, jobType: jobType, store: x.Store, bus: x.Bus, now: x.now, log: log, status: job.Status, seq: -1}
}
