package affinity

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/events"
)

// startBus: an ack wait far longer than the test, so a job reaches a
// second consumer only because its first consumer is gone.
func startBus(t *testing.T) *bus.Infra {
	t.Helper()
	n, err := embedded.StartNATS(embedded.NATSOptions{Dir: filepath.Join(t.TempDir(), "nats"), Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	nc, err := nats.Connect("", n.InProcessOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	in, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: time.Second, AckWait: time.Minute, ServiceTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// node is a live puller node: its liveness entry and its keeper.
type node struct {
	id   string
	k    *Keeper
	stop context.CancelFunc
	wait func()
}

func startNode(t *testing.T, in *bus.Infra, id string) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	announced := make(chan struct{})
	go func() {
		defer close(announced)
		_ = in.AnnounceNode(ctx, domain.ServicePuller, "inst-"+id, id, nil)
	}()
	k := &Keeper{Infra: in, Node: id, Consumer: events.ConsumerPuller, Every: 100 * time.Millisecond,
		Grace: 200 * time.Millisecond, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
	wait := k.Start(ctx)
	n := &node{id: id, k: k, stop: cancel, wait: func() { wait(); <-announced }}
	t.Cleanup(func() { n.stop(); n.wait() })
	return n
}

// settled waits until the nodes' consumers hold exactly the partitions
// Owned gives them among ids.
func settled(t *testing.T, ids []string, nodes ...*node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok := true
		for _, n := range nodes {
			if !slices.Equal(n.k.Partitions(), Owned(n.id, ids)) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for _, n := range nodes {
				t.Logf("%s holds %v, owns %v", n.id, n.k.Partitions(), Owned(n.id, ids))
			}
			t.Fatal("partitions did not settle")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func publishSites(t *testing.T, in *bus.Infra, n int, tag string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sites := map[string]string{}
	for i := range n {
		site := fmt.Sprintf("site-%02d", i)
		r := events.JobRequest{V: events.JobRequestV1, JobID: tag + "-" + site, SiteUUID: site, Type: string(domain.JobBackup)}
		if err := in.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
		sites[r.JobID] = site
	}
	return sites
}

// take fetches what the node is given, without acking, for a while.
func take(t *testing.T, n *node, within time.Duration) []jetstream.Msg {
	t.Helper()
	var out []jetstream.Msg
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		msg, err := n.k.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
		if err != nil {
			continue
		}
		out = append(out, msg)
	}
	return out
}

func jobOf(t *testing.T, m jetstream.Msg) events.JobRequest {
	t.Helper()
	var r events.JobRequest
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKeepersSplitTheSitesAndFailOver: two live nodes split the
// partitions as Owned says and each is given only its own sites' jobs;
// the server refuses a consumer that would take a partition another
// holds; when a node goes away, the survivor takes its partitions and
// the job it had taken and never acked.
func TestKeepersSplitTheSitesAndFailOver(t *testing.T) {
	in := startBus(t)
	a := startNode(t, in, "aaaa1111")
	settled(t, []string{a.id}, a)
	b := startNode(t, in, "bbbb2222")
	ids := []string{a.id, b.id}
	settled(t, ids, a, b)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The work queue itself keeps the split exclusive.
	if _, err := in.NodeConsumer(ctx, events.NodeDurable(b.id), events.ConsumerPuller.PartitionFilters(a.k.Partitions()[:1])); err == nil {
		t.Fatal("a consumer overlapping another node's partition was accepted")
	}

	sites := publishSites(t, in, 24, "r1")
	got := map[string]string{}
	var aTook []jetstream.Msg
	for _, n := range []*node{a, b} {
		msgs := take(t, n, 2*time.Second)
		for _, m := range msgs {
			r := jobOf(t, m)
			if other, dup := got[r.JobID]; dup {
				t.Fatalf("job %s given to %s and %s", r.JobID, other, n.id)
			}
			got[r.JobID] = n.id
			if want := Owner(events.JobPartition(r.SiteUUID), ids); want != n.id {
				t.Fatalf("site %s (partition %d) given to %s, owner %s", r.SiteUUID, events.JobPartition(r.SiteUUID), n.id, want)
			}
			if n == a {
				aTook = append(aTook, m) // left unacked: a dies with them
			} else if err := m.Ack(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(got) != len(sites) {
		t.Fatalf("%d of %d jobs given out: %v", len(got), len(sites), got)
	}
	if len(aTook) == 0 {
		t.Fatal("node a was given no site; pick other ids")
	}

	// a dies: its liveness entry goes, b takes every partition and what
	// a had taken.
	a.stop()
	a.wait()
	settled(t, []string{b.id}, b)
	redelivered := map[string]bool{}
	for _, m := range take(t, b, 3*time.Second) {
		redelivered[jobOf(t, m).JobID] = true
		_ = m.Ack()
	}
	for _, m := range aTook {
		if id := jobOf(t, m).JobID; !redelivered[id] {
			t.Errorf("job %s, taken by the dead node, never reached the survivor", id)
		}
	}
	owners, err := in.PartitionOwners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) != events.JobPartitions {
		t.Fatalf("Owners: %d partitions held", len(owners))
	}
	for p, n := range owners {
		if n != b.id {
			t.Fatalf("partition %d held by %s after a died", p, n)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }
