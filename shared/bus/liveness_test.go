package bus_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/events"
)

// startLiveness runs an in-process NATS server and declares the bus
// objects with the given liveness TTL.
func startLiveness(t *testing.T, ttl time.Duration) *bus.Infra {
	return startBus(t, bus.Settings{LeaseTTL: time.Minute, AckWait: time.Second, ServiceTTL: ttl})
}

// waitServices polls Services until ok accepts the list or the deadline.
func waitServices(t *testing.T, in *bus.Infra, within time.Duration, ok func([]bus.Instance) bool) []bus.Instance {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		got, err := in.Services(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("services after %s: %+v", within, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAnnounce(t *testing.T) {
	// Renewal every TTL/3 must beat the TTL on a loaded 2-core CI machine
	// too (a build beside the tests): 3 s leaves it 2 s of slack.
	const ttl = 3 * time.Second
	in := startLiveness(t, ttl)
	if in.ServiceTTL != ttl {
		t.Fatalf("ServiceTTL = %s", in.ServiceTTL)
	}
	if got := waitServices(t, in, 0, func([]bus.Instance) bool { return true }); len(got) != 0 {
		t.Fatalf("empty bucket lists %+v", got)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- in.Announce(ctx, "puller", "node-a", nil) }()
	go func() { done <- in.Announce(ctx, "api", "node-a", nil) }()

	first := waitServices(t, in, 5*time.Second, func(l []bus.Instance) bool { return len(l) == 2 })
	if first[0].Service != "api" || first[1].Service != "puller" || first[1].Instance != "node-a" ||
		first[1].Version == "" || first[1].StartedAt.IsZero() || first[1].HeartbeatAt.Before(first[1].StartedAt) {
		t.Fatalf("services = %+v", first)
	}
	// Renewed every TTL/3: alive past the TTL, with a newer heartbeat.
	time.Sleep(2 * ttl)
	later := waitServices(t, in, 0, func(l []bus.Instance) bool { return len(l) == 2 })
	if !later[1].HeartbeatAt.After(first[1].HeartbeatAt) || !later[1].StartedAt.Equal(first[1].StartedAt) {
		t.Errorf("heartbeat not renewed: %+v then %+v", first[1], later[1])
	}

	// A clean stop deletes the entries at once.
	cancel()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Announce = %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Announce did not return")
		}
	}
	waitServices(t, in, ttl/2, func(l []bus.Instance) bool { return len(l) == 0 })
}

func TestAnnounceExpires(t *testing.T) {
	const ttl = time.Second
	in := startLiveness(t, ttl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A process that died without deleting its entry.
	now := time.Now().UTC()
	val, _ := json.Marshal(bus.Instance{Service: "syncer", Instance: "gone", StartedAt: now, HeartbeatAt: now, Version: "v1"})
	if _, err := in.Liveness.Put(ctx, events.ServiceKey("syncer", "gone"), val); err != nil {
		t.Fatal(err)
	}
	waitServices(t, in, 0, func(l []bus.Instance) bool { return len(l) == 1 && l[0].Instance == "gone" })
	start := time.Now()
	waitServices(t, in, 5*ttl, func(l []bus.Instance) bool { return len(l) == 0 })
	if took := time.Since(start); took < ttl/2 {
		t.Errorf("entry gone after %s, before its TTL", took)
	}
	if err := in.Announce(ctx, "", "x", nil); err == nil {
		t.Error("Announce without a service succeeded")
	}
}

// A worker node's instances leave a record that outlives their liveness
// entries: after a clean stop the instance is no longer live, but its
// record says which node it ran on and when it was last seen. Old
// entries without a node still parse.
func TestAnnounceNodeRecord(t *testing.T) {
	const ttl = 2 * time.Second
	in := startLiveness(t, ttl)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 2)
	const node = "0123456789abcdef0123456789abcdef"
	go func() { done <- in.AnnounceNode(ctx, "puller", "w1", node, nil) }()
	go func() { done <- in.Announce(ctx, "api", "w1", nil) }()
	live := waitServices(t, in, 5*time.Second, func(l []bus.Instance) bool { return len(l) == 2 })
	if live[0].Node != "" || live[1].Node != node {
		t.Fatalf("liveness entries = %+v", live)
	}
	// An entry as written before nodes existed.
	old := []byte(`{"service":"snapshotter","instance":"old","started_at":"2026-01-01T00:00:00Z","heartbeat_at":"2026-01-01T00:00:00Z","version":"v0"}`)
	if _, err := in.Liveness.Put(ctx, events.ServiceKey("snapshotter", "old"), old); err != nil {
		t.Fatal(err)
	}
	waitServices(t, in, 5*time.Second, func(l []bus.Instance) bool {
		return len(l) == 3 && l[2].Instance == "old" && l[2].Node == "" && l[2].Version == "v0"
	})

	recs, err := in.NodeRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Service != "puller" || recs[0].Instance != "w1" || recs[0].Node != node {
		t.Fatalf("node records = %+v (only the instance with a node has one)", recs)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	stopped := time.Now()
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	recs, err = in.NodeRecords(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Node != node {
		t.Fatalf("node records after stop = %+v", recs)
	}
	// The last put is the stop: last seen is about now, not a renewal ago.
	if d := stopped.Sub(recs[0].HeartbeatAt); d < 0 || d > time.Second {
		t.Errorf("record heartbeat %s, stopped %s", recs[0].HeartbeatAt, stopped)
	}
	waitServices(t, in, 0, func(l []bus.Instance) bool { return len(l) == 1 && l[0].Instance == "old" })
}
