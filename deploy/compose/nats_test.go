package compose

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestNATSClusterConfig loads nats/cluster.conf with the NATS server's own
// config code, as each node does, and has the server validate it.
func TestNATSClusterConfig(t *testing.T) {
	// As in the container: cluster.conf with the secret nats_auth beside
	// it as auth.conf.
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(composeDir(t), "nats", "cluster.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "cluster.conf")
	if err := os.WriteFile(conf, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(exampleSecret("nats_auth")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
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
			if opts.Username != "satoru" || opts.Password != "pw-nats" {
				t.Errorf("clients' user %q (password set: %v), want the secret's satoru and its password", opts.Username, opts.Password != "")
			}
			// The server's own validation, with the store somewhere writable.
			opts.StoreDir = t.TempDir()
			if _, err := server.NewServer(opts); err != nil {
				t.Errorf("nats server rejects the config: %v", err)
			}
		})
	}
	// One node run alone (no cluster, a free port): a client without the
	// password is refused, one with the secret nats_url's gets in.
	t.Setenv("NATS_SERVER_NAME", "nats-1")
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.StoreDir, opts.Port, opts.HTTPPort, opts.Cluster, opts.Routes, opts.NoLog, opts.NoSigs = t.TempDir(), -1, 0, server.ClusterOpts{}, nil, true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	addr := ns.Addr().String()
	if nc, err := nats.Connect("nats://"+addr, nats.Timeout(2*time.Second), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Error("a client without credentials connected")
	}
	nc, err := nats.Connect("nats://satoru:pw-nats@"+addr, nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatalf("a client with the secret's credentials: %v", err)
	}
	nc.Close()
	for _, node := range natsNodes {
		t.Run("url lists "+node, func(t *testing.T) {
			if !strings.Contains(exampleSecret("nats_url"), "@"+node+":4222") {
				t.Errorf("nats_url does not list %s", node)
			}
		})
	}
}
