package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/events"
)

func jobRequest(id, site, typ string) events.JobRequest {
	return events.JobRequest{V: events.JobRequestV1, JobID: id, SiteUUID: site, Type: typ}
}

// takeRequests acks every job request waiting in the stream, as the
// workers would, and returns them by message id, failing on a message
// whose subject does not match what it carries.
func takeRequests(t *testing.T, in *bus.Infra) map[string]events.JobRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := in.JS.CreateOrUpdateConsumer(ctx, events.StreamJobs, jetstream.ConsumerConfig{
		Durable: "test-workers", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]events.JobRequest{}
	for {
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var r events.JobRequest
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				t.Fatal(err)
			}
			id := m.Headers().Get(jetstream.MsgIDHeader)
			// Stored under its site's partition, as JobPartition computes it.
			if m.Subject() != events.StoredJobSubject(r.SiteUUID, r.Type) {
				t.Fatalf("message %s on %s carries %+v", id, m.Subject(), r)
			}
			if _, dup := out[id]; dup {
				t.Fatalf("message id %s twice in the stream", id)
			}
			out[id] = r
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if batch.Error() != nil {
			t.Fatal(batch.Error())
		}
		if n == 0 {
			return out
		}
	}
}

// TestPublishAll: more requests than one window, a hand-off among them
// and one invalid request; each valid one arrives once under its message
// id (the hand-off's is the job id and the step), a second PublishAll of
// the same requests is dropped by the stream, and the invalid one fails
// alone.
func TestPublishAll(t *testing.T) {
	in := startInfra(t, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 600
	reqs := make([]events.JobRequest, 0, n+2)
	for i := range n {
		reqs = append(reqs, jobRequest(fmt.Sprintf("job-%03d", i), fmt.Sprintf("site-%03d", i), "backup"))
	}
	reqs = append(reqs, jobRequest("job-000", "site-000", events.StepSnapshot)) // the hand-off of job-000
	reqs = append(reqs, jobRequest("", "site-x", "backup"))                     // no job id
	for round := range 2 {
		errs := in.PublishAll(ctx, reqs)
		if len(errs) != len(reqs) {
			t.Fatalf("%d errors for %d requests", len(errs), len(reqs))
		}
		for i, err := range errs[:n+1] {
			if err != nil {
				t.Fatalf("round %d: request %d: %v", round, i, err)
			}
		}
		if err := errs[n+1]; !errors.Is(err, events.ErrInvalid) {
			t.Fatalf("round %d: invalid request: err = %v, want ErrInvalid", round, err)
		}
	}
	got := takeRequests(t, in)
	if len(got) != n+1 {
		t.Fatalf("%d requests in the stream, want %d", len(got), n+1)
	}
	if r := got["job-000.snapshot"]; r.Type != events.StepSnapshot || r.JobID != "job-000" {
		t.Errorf("hand-off = %+v", r)
	}
	if r := got["job-599"]; r.Type != "backup" || r.SiteUUID != "site-599" {
		t.Errorf("job-599 = %+v", r)
	}
}

// TestRequeue: a request the stream still holds is not sent again; one a
// worker took is published again, and dropped as a duplicate when that
// happens within the stream's duplicate window. A hand-off is told apart
// from its job's first request by its message id.
func TestRequeue(t *testing.T) {
	in := startInfra(t, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	first := jobRequest("job-1", "site-a", "backup")
	requeue := func(r events.JobRequest, want bus.Requeued) {
		t.Helper()
		got, err := in.Requeue(ctx, r)
		if err != nil {
			t.Fatalf("requeue %s: %v", r.MsgID(), err)
		}
		if got != want {
			t.Fatalf("requeue %s = %d, want %d", r.MsgID(), got, want)
		}
	}

	requeue(first, bus.RequeuePublished) // never published
	requeue(first, bus.RequeueHeld)      // still waiting for a worker
	// Another job's request on the same subject, queued after it, does not
	// hide it.
	if err := in.Publish(ctx, jobRequest("job-2", "site-a", "backup")); err != nil {
		t.Fatal(err)
	}
	requeue(first, bus.RequeueHeld)
	if got := takeRequests(t, in); len(got) != 2 {
		t.Fatalf("stream held %v, want job-1 and job-2", got)
	}
	// Taken by a worker (and lost): published again, but within the
	// duplicate window NATS drops it.
	requeue(first, bus.RequeueDuplicate)
	if got := takeRequests(t, in); len(got) != 0 {
		t.Fatalf("duplicate reached the stream: %v", got)
	}
	// The snapshot hand-off of the same job is a request of its own.
	handOff := jobRequest("job-1", "site-a", events.StepSnapshot)
	requeue(handOff, bus.RequeuePublished)
	requeue(handOff, bus.RequeueHeld)
	if got := takeRequests(t, in); len(got) != 1 || got["job-1.snapshot"].Type != events.StepSnapshot {
		t.Fatalf("stream held %v, want the hand-off", got)
	}

	if _, err := in.Requeue(ctx, jobRequest("job-3", "site.a", "backup")); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("requeue of an invalid request: err = %v, want ErrInvalid", err)
	}
}

// Publishing 1,000 job requests: one at a time as the API does (Publish,
// each waiting for its ack) against PublishAll, which the scheduler uses
// (all sent, then the acks awaited).
func BenchmarkPublish1000(b *testing.B) {
	const n = 1000
	reqs := func(round int) []events.JobRequest {
		out := make([]events.JobRequest, n)
		for i := range out {
			out[i] = jobRequest(fmt.Sprintf("r%d-%04d", round, i), fmt.Sprintf("site-%04d", i), "backup")
		}
		return out
	}
	b.Run("sync", func(b *testing.B) {
		in := startBus(b, bus.Settings{LeaseTTL: time.Minute, AckWait: time.Second})
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for _, r := range reqs(i) {
				if err := in.Publish(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("async", func(b *testing.B) {
		in := startBus(b, bus.Settings{LeaseTTL: time.Minute, AckWait: time.Second})
		ctx := context.Background()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for _, err := range in.PublishAll(ctx, reqs(i)) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
