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

// Publish sends a job request. Nats-Msg-Id is the job id, so a retried
// publish of the same job is dropped by the stream.
func (in *Infra) Publish(ctx context.Context, r events.JobRequest) error {
	if err := r.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("bus: encode job request %s: %w", r.JobID, err)
	}
	msgID := r.JobID
	if r.Type == events.StepSnapshot {
		// The snapshot hand-off carries the same job id as the pull.
		msgID = r.JobID + "." + r.Type
	}
	if _, err := in.JS.Publish(ctx, r.Subject(), data, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("bus: publish job %s on %s: %w", r.JobID, r.Subject(), err)
	}
	return nil
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
