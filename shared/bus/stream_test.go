package bus_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

func stepEvent(site, job string, seq int) events.StepEvent {
	return events.StepEvent{V: events.StepEventV1, JobID: job, SiteUUID: site, JobType: "preflight", Status: "running",
		Event: domain.JobEvent{Seq: seq, TS: time.Now().UTC(), Step: "step", Level: domain.LevelInfo, Message: "m"}}
}

func publishEvents(t *testing.T, in *bus.Infra, site, job string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := in.PublishEvent(context.Background(), stepEvent(site, job, i)); err != nil {
			t.Fatal(err)
		}
	}
}

func follow(t *testing.T, ctx context.Context, in *bus.Infra, f bus.EventFilter) bus.EventFeed {
	t.Helper()
	fd, err := in.FollowEvents(ctx, f)
	if err != nil {
		t.Fatalf("follow %+v: %v", f, err)
	}
	t.Cleanup(fd.Close)
	return fd
}

// next reads one event, failing after a few seconds.
func next(t *testing.T, fd bus.EventFeed) bus.StreamedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := fd.Next(ctx)
	if err != nil {
		t.Fatalf("next event: %v", err)
	}
	return ev
}

// nothing asserts no event arrives within a short wait.
func nothing(t *testing.T, fd bus.EventFeed) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ev, err := fd.Next(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want no event, got %+v (err %v)", ev, err)
	}
}

// syncBuffer is a log sink the feed writes from its own goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFollowEventsReplaysAJobAndSkipsBadPayloads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := startInfra(t, time.Minute)

	publishEvents(t, in, "s1", "jobA", 1, 2)
	// A payload that is not JSON and one of an unknown version, on the
	// job's subject: both are skipped.
	if _, err := in.JS.Publish(ctx, events.EventSubject("s1", "jobA"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := in.JS.Publish(ctx, events.EventSubject("s1", "jobA"), []byte(`{"v":9,"job_id":"jobA","event":{"step":"x"}}`)); err != nil {
		t.Fatal(err)
	}
	publishEvents(t, in, "s1", "jobB", 1, 1)
	publishEvents(t, in, "s1", "jobA", 3, 3)

	var logs syncBuffer
	fd := follow(t, ctx, in, bus.EventFilter{JobID: "jobA", Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	var last uint64
	for want := 1; want <= 3; want++ {
		ev := next(t, fd)
		if ev.Event.JobID != "jobA" || ev.Event.Event.Seq != want {
			t.Fatalf("event %d: got job %s seq %d", want, ev.Event.JobID, ev.Event.Event.Seq)
		}
		if ev.Seq <= last {
			t.Fatalf("stream sequence %d after %d", ev.Seq, last)
		}
		last = ev.Seq
	}
	// Then live.
	publishEvents(t, in, "s1", "jobA", 4, 4)
	if ev := next(t, fd); ev.Event.Event.Seq != 4 || ev.Seq <= last {
		t.Fatalf("live event: %+v", ev)
	}
	nothing(t, fd)
	for _, want := range []string{"skip undecodable step event", "skip invalid step event"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log does not say %q:\n%s", want, logs.String())
		}
	}
}

func TestFollowEventsBySiteFromNow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := startInfra(t, time.Minute)
	publishEvents(t, in, "s2", "old", 1, 2)

	fd := follow(t, ctx, in, bus.EventFilter{SiteUUID: "s2"})
	nothing(t, fd) // events from before the follow are not replayed
	publishEvents(t, in, "s1", "other", 1, 1)
	publishEvents(t, in, "s2", "new", 1, 1)
	if ev := next(t, fd); ev.Event.JobID != "new" || ev.Event.SiteUUID != "s2" {
		t.Fatalf("got %+v, want the new job of site s2", ev.Event)
	}
	nothing(t, fd)

	// Repository-level jobs are followed under _repo.
	repo := follow(t, ctx, in, bus.EventFilter{SiteUUID: events.RepoSite})
	publishEvents(t, in, "", "sync1", 1, 1)
	if ev := next(t, repo); ev.Event.JobID != "sync1" {
		t.Fatalf("repo job event: %+v", ev.Event)
	}
}

func TestFollowEventsResumesAfterASequence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := startInfra(t, time.Minute)
	publishEvents(t, in, "s1", "jobA", 1, 3)
	all := follow(t, ctx, in, bus.EventFilter{SiteUUID: "s1", JobID: "jobA"})
	next(t, all)
	second := next(t, all)

	fd := follow(t, ctx, in, bus.EventFilter{SiteUUID: "s1", JobID: "jobA", AfterSeq: second.Seq})
	if ev := next(t, fd); ev.Event.Event.Seq != 3 {
		t.Fatalf("resumed at event %d, want 3", ev.Event.Event.Seq)
	}
	// Without a job, a resume sequence still replays what came after it.
	site := follow(t, ctx, in, bus.EventFilter{SiteUUID: "s1", AfterSeq: second.Seq})
	if ev := next(t, site); ev.Event.Event.Seq != 3 {
		t.Fatalf("site resume at event %d, want 3", ev.Event.Event.Seq)
	}
}

func TestFollowEventsSlowReaderLosesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	in := startInfra(t, time.Minute)
	fd := follow(t, ctx, in, bus.EventFilter{JobID: "big"})
	const n = 300 // several pull batches
	publishEvents(t, in, "s1", "big", 1, n)
	var last uint64
	for want := 1; want <= n; want++ {
		if want%50 == 0 {
			time.Sleep(50 * time.Millisecond) // a reader that lags behind
		}
		ev := next(t, fd)
		if ev.Event.Event.Seq != want || ev.Seq <= last {
			t.Fatalf("event %d: got seq %d, stream seq %d after %d", want, ev.Event.Event.Seq, ev.Seq, last)
		}
		last = ev.Seq
	}
}

func TestFollowEventsRefusesBadFilters(t *testing.T) {
	in := startInfra(t, time.Minute)
	for _, tc := range []struct {
		name  string
		f     bus.EventFilter
		field string
	}{
		{"dot in site", bus.EventFilter{SiteUUID: "a.b"}, "site_uuid"},
		{"wildcard job", bus.EventFilter{JobID: "*"}, "job_id"},
		{"tail wildcard", bus.EventFilter{JobID: "a>"}, "job_id"},
		{"space", bus.EventFilter{SiteUUID: "a b"}, "site_uuid"},
		{"too long", bus.EventFilter{JobID: strings.Repeat("x", bus.MaxTokenLen+1)}, "job_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := in.FollowEvents(context.Background(), tc.f)
			if !errors.Is(err, events.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want ErrInvalid naming %s", err, tc.field)
			}
		})
	}
}

func TestFollowEventsEndsWithItsContextAndCleansUp(t *testing.T) {
	in := startInfra(t, time.Minute)
	consumers := func() int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := in.JS.Stream(ctx, events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	ctx, cancel := context.WithCancel(context.Background())
	fd, err := in.FollowEvents(ctx, bus.EventFilter{SiteUUID: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if n := consumers(); n != 1 {
		t.Fatalf("%d consumers while following, want 1", n)
	}
	done := make(chan error, 1)
	go func() { _, err := fd.Next(context.Background()); done <- err }()
	time.Sleep(100 * time.Millisecond) // let Next block
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, bus.ErrFeedClosed) {
			t.Errorf("Next after the feed's context ended: %v, want ErrFeedClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked 5s after the feed's context ended")
	}
	fd.Close()
	fd.Close() // idempotent
	if n := consumers(); n != 0 {
		t.Fatalf("%d consumers after Close, want 0", n)
	}
}
