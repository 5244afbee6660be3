package bus_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/embedded"
)

// startInfra runs an in-process NATS server and declares the bus objects
// with the given lease TTL.
func startInfra(t *testing.T, ttl time.Duration) *bus.Infra {
	return startBus(t, bus.Settings{LeaseTTL: ttl, AckWait: time.Second})
}

// startBus runs an in-process NATS server and declares the bus objects
// with settings s.
func startBus(t testing.TB, s bus.Settings) *bus.Infra {
	t.Helper()
	n, err := embedded.StartNATS(embedded.NATSOptions{Dir: filepath.Join(t.TempDir(), "nats"), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	js := connectJS(t, "", n.InProcessOption())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in, err := bus.Ensure(ctx, js, s)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// connectJS connects to NATS at url (closed when the test ends) and
// returns its JetStream context.
func connectJS(t testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestAcquireKey(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := startInfra(t, time.Minute)
	const key = "scheduler.leader"
	a := bus.LeaseHolder{Worker: "sched-a"}
	b := bus.LeaseHolder{Worker: "sched-b"}

	if _, ok, err := in.LeaseHolderOf(ctx, key); err != nil || ok {
		t.Fatalf("holder before acquire: ok=%v err=%v", ok, err)
	}
	la, err := in.AcquireKey(ctx, key, a)
	if err != nil {
		t.Fatal(err)
	}
	if la.Key() != key || la.Holder != a {
		t.Fatalf("lease = %s %+v", la.Key(), la.Holder)
	}
	if h, ok, err := in.LeaseHolderOf(ctx, key); err != nil || !ok || h != a {
		t.Fatalf("holder = %+v %v %v", h, ok, err)
	}

	_, err = in.AcquireKey(ctx, key, b)
	if !errors.Is(err, bus.ErrLeaseHeld) {
		t.Fatalf("second holder: err = %v, want ErrLeaseHeld", err)
	}
	if want := "held by sched-a"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}

	// The same holder takes its own lease over; the old handle is stale.
	la2, err := in.AcquireKey(ctx, key, a)
	if err != nil {
		t.Fatalf("take over: %v", err)
	}
	if err := la.Renew(ctx); !errors.Is(err, bus.ErrLeaseLost) {
		t.Fatalf("renew of the stale handle: %v, want ErrLeaseLost", err)
	}
	if err := la2.Renew(ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if err := la2.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	lb, err := in.AcquireKey(ctx, key, b)
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	if err := la2.Renew(ctx); !errors.Is(err, bus.ErrLeaseLost) {
		t.Fatalf("renew after release and takeover: %v, want ErrLeaseLost", err)
	}
	// A site lease and the key lease live side by side in the bucket.
	if _, err := in.AcquireSite(ctx, "site-1", bus.LeaseHolder{JobID: "j1", Worker: "w"}); err != nil {
		t.Fatal(err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := in.AcquireKey(ctx, "", a); err == nil {
		t.Error("empty key accepted")
	}
}

func TestAcquireKeyAfterExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := startInfra(t, time.Second)
	const key = "scheduler.leader"
	la, err := in.AcquireKey(ctx, key, bus.LeaseHolder{Worker: "a"})
	if err != nil {
		t.Fatal(err)
	}
	// Renewing keeps it past the TTL.
	for range 3 {
		time.Sleep(400 * time.Millisecond)
		if err := la.Renew(ctx); err != nil {
			t.Fatalf("renew: %v", err)
		}
		if _, err := in.AcquireKey(ctx, key, bus.LeaseHolder{Worker: "b"}); !errors.Is(err, bus.ErrLeaseHeld) {
			t.Fatalf("b acquired a renewed lease: %v", err)
		}
	}
	// Not renewed, it expires and another holder gets it.
	deadline := time.Now().Add(5 * time.Second)
	var lb *bus.Lease
	for lb == nil {
		if time.Now().After(deadline) {
			t.Fatal("lease did not expire")
		}
		time.Sleep(100 * time.Millisecond)
		lb, err = in.AcquireKey(ctx, key, bus.LeaseHolder{Worker: "b"})
		if err != nil && !errors.Is(err, bus.ErrLeaseHeld) {
			t.Fatal(err)
		}
	}
	if err := la.Renew(ctx); !errors.Is(err, bus.ErrLeaseLost) {
		t.Fatalf("renew of the expired lease: %v, want ErrLeaseLost", err)
	}
}
