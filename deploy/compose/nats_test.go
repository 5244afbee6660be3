package compose

import (
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestNATSClusterConfig loads nats/cluster.conf with the NATS server's own
// config code, as each node does, and has the server validate it.
func TestNATSClusterConfig(t *testing.T) {
	conf := filepath.Join(composeDir(t), "nats", "cluster.conf")
	for _, node := range natsNodes {
		t.Run(node, func(t *testing.T) {
			t.Setenv("NATS_SERVER_NAME", node)
			opts, err := server.ProcessConfigFile(conf)
			if err != nil {
				t.Fatalf("%s: %v", conf, err)
			}
			if opts.ServerName != node {
				t.Errorf("server_name %q, want %q", opts.ServerName, node)
			}
			if !opts.JetStream || opts.StoreDir != "/data/jetstream" {
				t.Errorf("jetstream %v store_dir %q, want JetStream on in /data/jetstream (the node's volume)", opts.JetStream, opts.StoreDir)
			}
			if opts.Port != 4222 || opts.HTTPPort != 8222 || opts.Cluster.Port != 6222 {
				t.Errorf("ports client %d, monitoring %d, cluster %d; want 4222, 8222, 6222 (compose.yaml uses them)", opts.Port, opts.HTTPPort, opts.Cluster.Port)
			}
			if opts.Cluster.Name == "" {
				t.Error("cluster has no name")
			}
			var routes []string
			for _, r := range opts.Routes {
				if r.Port() != "6222" {
					t.Errorf("route %s: want port 6222", r)
				}
				routes = append(routes, r.Hostname())
			}
			sort.Strings(routes)
			if !slices.Equal(routes, natsNodes) {
				t.Errorf("routes to %v, want every node %v", routes, natsNodes)
			}
			// The server's own validation, with the store somewhere writable.
			opts.StoreDir = t.TempDir()
			if _, err := server.NewServer(opts); err != nil {
				t.Errorf("nats server rejects the config: %v", err)
			}
		})
	}
}
