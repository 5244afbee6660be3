package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/events"
)

// Publish sends a job request and waits for the stream's ack. Its
// Nats-Msg-Id is r.MsgID(), so a retried publish of the same request is
// dropped by the stream.
func (in *Infra) Publish(ctx context.Context, r events.JobRequest) error {
	_, err := in.publish(ctx, r)
	return err
}

// publish sends r and reports whether the stream dropped it as a
// duplicate of one published within its duplicate window.
func (in *Infra) publish(ctx context.Context, r events.JobRequest) (dup bool, err error) {
	data, err := encodeRequest(r)
	if err != nil {
		return false, err
	}
	ack, err := in.JS.Publish(ctx, r.Subject(), data, jetstream.WithMsgID(r.MsgID()))
	if err != nil {
		return false, fmt.Errorf("bus: publish job %s on %s: %w", r.JobID, r.Subject(), err)
	}
	return ack.Duplicate, nil
}

func encodeRequest(r events.JobRequest) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("bus: encode job request %s: %w", r.JobID, err)
	}
	return data, nil
}

// publishWindow bounds the requests PublishAll has in flight: enough to
// hide the round trip, few enough to stay within the client's pending
// limit.
const publishWindow = 256

// PublishAll sends many job requests as Publish does, asynchronously in
// windows, and waits for every ack (far faster than one Publish after
// another: one round trip per window, not per request). errs[i] is the
// outcome of reqs[i].
func (in *Infra) PublishAll(ctx context.Context, reqs []events.JobRequest) (errs []error) {
	errs = make([]error, len(reqs))
	for start := 0; start < len(reqs); start += publishWindow {
		end := min(start+publishWindow, len(reqs))
		futs := make([]jetstream.PubAckFuture, end-start)
		for i := start; i < end; i++ {
			futs[i-start], errs[i] = in.publishAsync(reqs[i])
		}
		for i, f := range futs {
			if f == nil {
				continue
			}
			r := reqs[start+i]
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs[start+i] = fmt.Errorf("bus: publish job %s on %s: %w", r.JobID, r.Subject(), err)
			case <-ctx.Done():
				errs[start+i] = fmt.Errorf("bus: publish job %s: %w", r.JobID, ctx.Err())
			}
		}
	}
	return errs
}

func (in *Infra) publishAsync(r events.JobRequest) (jetstream.PubAckFuture, error) {
	data, err := encodeRequest(r)
	if err != nil {
		return nil, err
	}
	f, err := in.JS.PublishAsync(r.Subject(), data, jetstream.WithMsgID(r.MsgID()))
	if err != nil {
		return nil, fmt.Errorf("bus: publish job %s on %s: %w", r.JobID, r.Subject(), err)
	}
	return f, nil
}

// Requeued is what Requeue did.
type Requeued int

const (
	// RequeueHeld: the stream still holds the request (a work queue keeps
	// a message until it is acked), so a worker gets it; nothing sent.
	RequeueHeld Requeued = iota
	// RequeuePublished: the request was gone and is published again.
	RequeuePublished
	// RequeueDuplicate: the request was gone, but one with its MsgID was
	// published within the stream's duplicate window, so NATS dropped
	// this one; requeue again once the window has passed.
	RequeueDuplicate
)

// Requeue publishes r again unless the job stream still holds it, for a
// job that was written as queued or running but whose request may be
// lost (a publisher or worker that died half-way).
func (in *Infra) Requeue(ctx context.Context, r events.JobRequest) (Requeued, error) {
	held, err := in.holds(ctx, r)
	if err != nil || held {
		return RequeueHeld, err
	}
	dup, err := in.publish(ctx, r)
	switch {
	case err != nil:
		return RequeueHeld, err
	case dup:
		return RequeueDuplicate, nil
	}
	return RequeuePublished, nil
}

// holds reports whether the job stream holds a message with r's MsgID on
// r's subject. The subject is one site's and one type's, so the scan
// reads the few messages waiting for it.
func (in *Infra) holds(ctx context.Context, r events.JobRequest) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, err
	}
	str, err := in.JS.Stream(ctx, events.StreamJobs)
	if err != nil {
		return false, fmt.Errorf("bus: stream %s: %w", events.StreamJobs, err)
	}
	subject, id := events.StoredJobSubject(r.SiteUUID, r.Type), r.MsgID()
	for seq := uint64(1); ; {
		msg, err := str.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("bus: read %s: %w", subject, err)
		}
		if msg.Header.Get(jetstream.MsgIDHeader) == id {
			return true, nil
		}
		seq = msg.Sequence + 1
	}
}

// PublishEvent sends a step event for live followers.
func (in *Infra) PublishEvent(ctx context.Context, e events.StepEvent) error {
	if err := e.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("bus: encode step event of job %s: %w", e.JobID, err)
	}
	if _, err := in.JS.Publish(ctx, events.EventSubject(e.SiteUUID, e.JobID), data); err != nil {
		return fmt.Errorf("bus: publish step event of job %s: %w", e.JobID, err)
	}
	return nil
}

// RequestCancel records that a job should be canceled. The worker holding
// the job (or the next to pick it up) sees it and marks the job canceled.
func (in *Infra) RequestCancel(ctx context.Context, jobID string) error {
	if _, err := in.Cancels.Put(ctx, events.CancelKey(jobID), []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		return fmt.Errorf("bus: request cancel of job %s: %w", jobID, err)
	}
	return nil
}

// CancelRequested reports whether a cancel was requested for jobID.
func (in *Infra) CancelRequested(ctx context.Context, jobID string) (bool, error) {
	_, err := in.Cancels.Get(ctx, events.CancelKey(jobID))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("bus: read cancel request of job %s: %w", jobID, err)
	}
}

// WatchCancel calls fn once when a cancel for jobID is requested, until
// ctx ends. The watch goroutine is owned by ctx.
func (in *Infra) WatchCancel(ctx context.Context, jobID string, fn func()) error {
	w, err := in.Cancels.Watch(ctx, events.CancelKey(jobID), jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("bus: watch cancel of job %s: %w", jobID, err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil && e.Operation() == jetstream.KeyValuePut {
					fn()
					return
				}
			}
		}
	}()
	return nil
}
