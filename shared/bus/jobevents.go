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

// jobEventsBatch is how many events one fetch of JobEvents asks for.
const jobEventsBatch = 256

// JobEvents reads the step events of one job that stream SATORU_EVENTS
// still holds (up to events.EventsMaxAge old), in stream order, and
// returns once it has read as many as the stream held when it began.
// Payloads that do not decode, do not validate or name another job are
// skipped. A worker resuming a job whose previous worker died reads them
// to store the events that worker published but never stored.
func (in *Infra) JobEvents(ctx context.Context, siteUUID, jobID string) ([]events.StepEvent, error) {
	f := EventFilter{SiteUUID: siteUUID, JobID: jobID}
	if f.SiteUUID == "" {
		f.SiteUUID = events.RepoSite
	}
	if jobID == "" {
		return nil, fmt.Errorf("%w: job events: empty job_id", events.ErrInvalid)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	subject := f.Subject()
	// An ephemeral consumer without acks, in memory: the server forgets it
	// after InactiveThreshold should the delete below not reach it.
	cons, err := in.JS.CreateConsumer(ctx, events.StreamEvents, jetstream.ConsumerConfig{
		FilterSubject:     subject,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MemoryStorage:     true,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: read events on %s: %w", subject, err)
	}
	info := cons.CachedInfo()
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
		defer cancel()
		_ = in.JS.DeleteConsumer(dctx, events.StreamEvents, info.Name) // else it expires by InactiveThreshold
	}()

	want := info.NumPending
	out := make([]events.StepEvent, 0, want)
	for read := uint64(0); read < want; {
		n, err := fetchEvents(ctx, cons, int(min(want-read, jobEventsBatch)), jobID, &out)
		if err != nil {
			return nil, fmt.Errorf("bus: read events on %s: %w", subject, err)
		}
		if n == 0 {
			break // the stream dropped the rest meanwhile (max age)
		}
		read += uint64(n)
	}
	return out, nil
}

// fetchWait bounds one fetch of JobEvents; the messages are there already.
const fetchWait = 5 * time.Second

// fetchEvents fetches up to n messages of cons, appends the valid step
// events of jobID to out and says how many messages came.
func fetchEvents(ctx context.Context, cons jetstream.Consumer, n int, jobID string, out *[]events.StepEvent) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	got := 0
	for msg := range batch.Messages() {
		got++
		var e events.StepEvent
		if json.Unmarshal(msg.Data(), &e) != nil || e.Validate() != nil || e.JobID != jobID {
			continue
		}
		*out = append(*out, e)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		return got, err
	}
	if got == 0 && ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return got, nil
}
