package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/events"
)

func TestJobEventsReadsOneJobsEventsAndReturns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := startInfra(t, time.Minute)

	// More than one fetch's worth, mixed with another job's events, a
	// payload that is not JSON and a repository-level job's events.
	publishEvents(t, in, "s1", "jobA", 1, 200)
	publishEvents(t, in, "s1", "jobB", 1, 5)
	if _, err := in.JS.Publish(ctx, events.EventSubject("s1", "jobA"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	publishEvents(t, in, "s1", "jobA", 201, 300)
	publishEvents(t, in, events.RepoSite, "jobR", 1, 2)

	for _, tc := range []struct {
		name, site, job string
		want            int
	}{
		{"many events", "s1", "jobA", 300},
		{"other job", "s1", "jobB", 5},
		{"repository job", "", "jobR", 2},
		{"unknown job", "s1", "jobX", 0},
		{"wrong site", "s2", "jobA", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got, err := in.JobEvents(ctx, tc.site, tc.job)
			if err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %s; it should return once the held events are read", took)
			}
			if len(got) != tc.want {
				t.Fatalf("%d events, want %d", len(got), tc.want)
			}
			for i, e := range got {
				if e.JobID != tc.job || e.Event.Seq != i+1 {
					t.Fatalf("event %d: job %s seq %d", i, e.JobID, e.Event.Seq)
				}
			}
		})
	}
	// Each read deletes its consumer.
	str, err := in.JS.Stream(ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range str.ListConsumers(ctx).Info() {
		n++
	}
	if n != 0 {
		t.Errorf("%d consumers left on %s", n, events.StreamEvents)
	}
	if _, err := in.JobEvents(ctx, "s.1", "jobA"); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("site with a dot: %v, want ErrInvalid", err)
	}
	if _, err := in.JobEvents(ctx, "s1", ""); !errors.Is(err, events.ErrInvalid) {
		t.Errorf("empty job: %v, want ErrInvalid", err)
	}
}

func TestAcquireSiteTakesOverOnlyAHandedOffLease(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := startInfra(t, time.Second)
	pull := bus.LeaseHolder{JobID: "j1", Worker: "puller-a", Step: "backup"}
	held := func(h bus.LeaseHolder, why string) {
		t.Helper()
		if _, err := in.AcquireSite(ctx, "site-1", h); !errors.Is(err, bus.ErrLeaseHeld) {
			t.Fatalf("%s: %+v got the lease (%v), want ErrLeaseHeld", why, h, err)
		}
	}

	lp, err := in.AcquireSite(ctx, "site-1", pull)
	if err != nil {
		t.Fatal(err)
	}
	// The same job redelivered elsewhere while its worker may live: it
	// waits, whichever step it is.
	held(bus.LeaseHolder{JobID: "j1", Worker: "puller-b", Step: "backup"}, "same job and step")
	held(bus.LeaseHolder{JobID: "j1", Worker: "snap-a", Step: events.StepSnapshot}, "next step before the hand-off")

	if err := lp.HandOff(ctx, events.StepSnapshot); err != nil {
		t.Fatal(err)
	}
	if h, ok, err := in.LeaseHolderOf(ctx, events.LeaseKey("site-1")); err != nil || !ok || h.Next != events.StepSnapshot || h.Worker != "puller-a" {
		t.Fatalf("holder after hand-off = %+v %v %v", h, ok, err)
	}
	held(bus.LeaseHolder{JobID: "j2", Worker: "snap-a", Step: events.StepSnapshot}, "another job")
	held(bus.LeaseHolder{JobID: "j1", Worker: "puller-b", Step: "backup"}, "the handed-off step again")

	snap := bus.LeaseHolder{JobID: "j1", Worker: "snap-a", Step: events.StepSnapshot}
	ls, err := in.AcquireSite(ctx, "site-1", snap)
	if err != nil {
		t.Fatalf("snapshot step after the hand-off: %v", err)
	}
	if err := lp.Renew(ctx); !errors.Is(err, bus.ErrLeaseLost) {
		t.Errorf("puller renews after handing off: %v, want ErrLeaseLost", err)
	}
	// The snapshot step's worker dies: its job, redelivered, waits for the
	// lease to expire, then takes it.
	held(bus.LeaseHolder{JobID: "j1", Worker: "snap-b", Step: events.StepSnapshot}, "dead snapshotter's lease before expiry")
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := in.AcquireSite(ctx, "site-1", bus.LeaseHolder{JobID: "j1", Worker: "snap-b", Step: events.StepSnapshot})
		if err == nil {
			break
		}
		if !errors.Is(err, bus.ErrLeaseHeld) || time.Now().After(deadline) {
			t.Fatalf("after the TTL: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := ls.Renew(ctx); !errors.Is(err, bus.ErrLeaseLost) {
		t.Errorf("dead snapshotter's lease renews: %v, want ErrLeaseLost", err)
	}
}
