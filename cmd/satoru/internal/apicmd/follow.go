package apicmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// afterTerminalPoll is the GET /jobs/{id} interval once the terminal
// event was seen: the job document is written just after it.
const afterTerminalPoll = 250 * time.Millisecond

// follower hands a job's events to emit, each sequence number once and in
// order, until the job has ended, and returns the ended job. It takes the
// events from the live stream (GET /events/stream?job_id=) and falls back
// to polling GET /jobs/{id} and its stored events when the stream is not
// available or breaks.
type follower struct {
	api   *client.Client
	poll  time.Duration // polling interval without the stream
	check time.Duration // job document check while streaming
	note  io.Writer     // where the fallback is reported
	emit  func(domain.JobEvent)

	lastSeq int
}

func (f *follower) follow(ctx context.Context, id string) (client.Job, error) {
	// The stored events first: the stream replays only what JetStream
	// still holds; what both give is emitted once (by seq).
	job, err := f.refresh(ctx, id)
	if err != nil {
		return client.Job{}, err
	}
	if job.Status.Terminal() {
		return job, nil
	}
	ended, err := f.stream(ctx, id)
	if ctx.Err() != nil {
		return client.Job{}, ctx.Err()
	}
	interval := f.poll
	switch {
	case err != nil:
		fmt.Fprintf(f.note, "note: live events unavailable (%s); polling every %s\n", clean(err.Error()), f.poll)
	case ended:
		interval = min(f.poll, afterTerminalPoll)
	}
	return f.pollUntilDone(ctx, id, interval)
}

// refresh reads the job, then emits its stored events not yet emitted:
// read after the job, so a terminal job's last events are in.
func (f *follower) refresh(ctx context.Context, id string) (client.Job, error) {
	job, err := f.api.GetJob(ctx, id)
	if err != nil {
		return client.Job{}, fmt.Errorf("get job %s: %w", clean(id), err)
	}
	if err := f.stored(ctx, id); err != nil {
		return client.Job{}, err
	}
	return job, nil
}

// stored emits the stored events not yet emitted.
func (f *follower) stored(ctx context.Context, id string) error {
	evs, err := f.api.JobEvents(ctx, id)
	if err != nil {
		return fmt.Errorf("get events of job %s: %w", clean(id), err)
	}
	for _, ev := range evs.Events {
		f.push(ev)
	}
	return nil
}

func (f *follower) push(ev domain.JobEvent) {
	if ev.Seq <= f.lastSeq {
		return
	}
	f.lastSeq = ev.Seq
	f.emit(ev)
}

// pollUntilDone reads the job and its new events every interval until
// the job is terminal.
func (f *follower) pollUntilDone(ctx context.Context, id string, interval time.Duration) (client.Job, error) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return client.Job{}, ctx.Err()
		case <-t.C:
		}
		job, err := f.refresh(ctx, id)
		if err != nil {
			return client.Job{}, err
		}
		if job.Status.Terminal() {
			return job, nil
		}
		t.Reset(interval)
	}
}

// stream emits the job's events from the live stream until one carries
// a terminal status, or the job document says it ended (ended true). An
// error means the stream could not be opened or broke off.
func (f *follower) stream(ctx context.Context, id string) (ended bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := f.api.OpenStream(sctx, client.StreamFilter{JobID: id}, "")
	if err != nil {
		return false, err
	}
	type item struct {
		ev  events.StepEvent
		err error
	}
	items := make(chan item)
	done := make(chan struct{})
	// The reader is owned here: cancel ends its blocked read, and the
	// deferred wait makes sure it is gone before we return.
	go func() {
		defer close(done)
		for {
			ev, _, err := st.Next()
			select {
			case items <- item{ev, err}:
			case <-sctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	defer func() {
		cancel()
		st.Close()
		<-done
	}()

	tick := time.NewTicker(f.check)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case it := <-items:
			if it.err != nil {
				if errors.Is(it.err, io.EOF) {
					return false, errors.New("the event stream ended before the job")
				}
				return false, fmt.Errorf("event stream: %w", it.err)
			}
			if it.ev.JobID != id {
				continue
			}
			f.push(it.ev.Event)
			if domain.JobStatus(it.ev.Status).Terminal() {
				return true, nil
			}
		case <-tick.C:
			// A job can end without an event (failed before any worker
			// took it); errors here are left to the polling that follows.
			if job, err := f.api.GetJob(ctx, id); err == nil && job.Status.Terminal() {
				return true, nil
			}
		}
	}
}
