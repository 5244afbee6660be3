package bus_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/testkit"
)

// startCluster runs three JetStream servers routed into one cluster, as
// the compose deployment does, and returns their client URLs.
func startCluster(t *testing.T) ([]*server.Server, []string) {
	t.Helper()
	ports := []int{testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var servers []*server.Server
	var urls []string
	for i, p := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   filepath.Join(t.TempDir(), "js"),
			Cluster:    server.ClusterOpts{Name: "satoru", Host: "127.0.0.1", Port: p},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
			NoSigs:     true,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats server %d: %v", i+1, err)
		}
		go s.Start()
		t.Cleanup(s.Shutdown)
		servers = append(servers, s)
	}
	for i, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("nats server %d not ready", i+1)
		}
		urls = append(urls, s.ClientURL())
	}
	return servers, urls
}

// On a 3-node cluster with Replicas 3 every stream and bucket keeps three
// copies, and the jobs stream takes requests with a node down.
func TestEnsureKeepsReplicasOnACluster(t *testing.T) {
	servers, urls := startCluster(t)
	js := connectJS(t, strings.Join(urls, ","))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var in *bus.Infra
	var err error
	// The cluster elects its JetStream meta leader in the first seconds.
	for {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		in, err = bus.Ensure(actx, js, bus.Settings{LeaseTTL: 30 * time.Second, AckWait: 30 * time.Second, Replicas: 3})
		acancel()
		if err == nil {
			break
		}
		t.Logf("ensure: %v", err)
		if ctx.Err() != nil {
			t.Fatalf("ensure on the cluster: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, name := range []string{events.StreamJobs, events.StreamEvents,
		"KV_" + events.BucketLeases, "KV_" + events.BucketCancel, "KV_" + events.BucketServices} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s keeps %d copies, want 3", name, info.Config.Replicas)
		}
	}

	// Down one node the others keep a quorum: a job request is still taken.
	servers[2].Shutdown()
	req := events.JobRequest{V: events.JobRequestV1, JobID: "job-r3", SiteUUID: "site-r3", Type: "backup"}
	for {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		err = in.Publish(pctx, req)
		pcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("publish with one node down: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
