package node

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

// TestEmbeddedServersByDefaultHaveNoListener: `satoru up` as configured
// by default opens no port for NATS or the store; the store's socket is
// in a folder only Satoru's user may enter.
func TestEmbeddedServersByDefaultHaveNoListener(t *testing.T) {
	n, _ := startNode(t, loadConfig(t, testEnv(t.TempDir())), All)
	if n.NATS.Addr() != "" || n.NATSURL != "" {
		t.Errorf("embedded NATS listens on %q (%q)", n.NATS.Addr(), n.NATSURL)
	}
	if n.StoreSrv.Addr() != "" {
		t.Errorf("embedded store listens on %q", n.StoreSrv.Addr())
	}
	sock := StoreSocket(n.Config)
	if n.StoreSrv.Socket() != sock {
		t.Errorf("store socket %q, want %q", n.StoreSrv.Socket(), sock)
	}
	if fi, err := os.Stat(filepath.Dir(sock)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket folder: %v %v, want 0700", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v %v, want 0600", fi.Mode().Perm(), err)
	}
	if _, err := os.Stat(JoinDir(n.Config)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("join files written without listeners: %v", err)
	}
	// The services work: a job goes through the in-process NATS and the socket.
	c := newClient(t, n)
	if code := c.do("GET", "/api/v1/sites", nil, nil); code != 200 {
		t.Errorf("GET /sites: %d", code)
	}
}

// TestEmbeddedListenersRequireCredentials: with the listeners on (for
// extra workers), NATS takes only the generated password and the store
// only the generated client certificate; both come from join files that
// are Satoru's alone, and a restart keeps them.
func TestEmbeddedListenersRequireCredentials(t *testing.T) {
	dir := t.TempDir()
	hub, stop := startNode(t, loadConfig(t, hubEnv(dir)), All)
	join := JoinDir(hub.Config)
	if fi, err := os.Stat(join); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("join folder: %v %v, want 0700", fi, err)
	}
	for _, name := range []string{"nats-url", "mongo-uri", "store-ca.pem", "store-client.pem"} {
		if fi, err := os.Stat(filepath.Join(join, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("join file %s: %v %v, want 0600", name, fi, err)
		}
	}
	natsURL := readFile(t, filepath.Join(join, "nats-url"))
	u, err := url.Parse(natsURL)
	if err != nil || u.User == nil {
		t.Fatalf("nats-url %v carries no credentials", err)
	}
	pass, _ := u.User.Password()
	if strings.Contains(hub.NATSURL, pass) {
		t.Errorf("the node's NATS URL %q shows the password", hub.NATSURL)
	}

	// Refused without credentials, or with a wrong password.
	for name, target := range map[string]string{"no credentials": hub.NATSURL, "a wrong password": "nats://satoru:guess@" + hub.NATS.Addr()} {
		if nc, err := nats.Connect(target, nats.Timeout(2*time.Second), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Errorf("NATS with %s: connected", name)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("NATS with %s: %v, want an authorization error", name, err)
		}
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("NATS with the join URL: %v", err)
	}
	nc.Close()

	storeAddr := hub.StoreSrv.Addr()
	ca := filepath.Join(join, "store-ca.pem")
	for name, uri := range map[string]string{
		"plain":                            "mongodb://" + storeAddr + "/",
		"TLS without a client certificate": "mongodb://" + storeAddr + "/?tls=true&tlsCAFile=" + url.QueryEscape(ca),
	} {
		if err := storeWrite(context.Background(), uri); err == nil {
			t.Errorf("store %s: a write went through", name)
		}
	}
	cfgWorker := loadConfig(t, testEnv(filepath.Join(dir, "w"), joinEnv(hub)...))
	if err := storeWrite(context.Background(), cfgWorker.MongoURI); err != nil {
		t.Errorf("store with the join files: %v", err)
	}

	// A restart keeps the password and the client certificate, so joined
	// workers go on.
	cert := readFile(t, filepath.Join(join, "store-client.pem"))
	stop()
	hub2, _ := startNode(t, loadConfig(t, hubEnv(dir)), All)
	u2, _ := url.Parse(readFile(t, filepath.Join(join, "nats-url")))
	if p2, _ := u2.User.Password(); p2 != pass {
		t.Error("a restart changed the NATS password")
	}
	if readFile(t, filepath.Join(join, "store-client.pem")) != cert {
		t.Error("a restart changed the client certificate")
	}
	if hub2.NATS.Addr() == "" {
		t.Fatal("hub2 has no NATS listener")
	}
}

// TestLocalUserCannotReachTheEmbeddedServers is the attack of issue 11:
// an unprivileged local user (uid 65534) tries to reach the embedded NATS
// and store of a running `satoru up`, to read sites and queue a restore of
// its choosing. It runs as that uid in a child process and must be refused
// everywhere: NATS without the password, the store's TLS listener without
// the client certificate, the store's socket, and the join files.
func TestLocalUserCannotReachTheEmbeddedServers(t *testing.T) {
	if testkit.AsNobody() {
		attackAsNobody(t)
		return
	}
	// The data folders of both nodes in a folder the attacker may enter,
	// as /var/lib would be: only Satoru's own modes keep it out.
	open, err := os.MkdirTemp("", "satoru-attack-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(open) })
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	plain, _ := startNode(t, loadConfig(t, testEnv(filepath.Join(open, "plain"))), All)
	hub, _ := startNode(t, loadConfig(t, hubEnv(filepath.Join(open, "hub"))), All)
	for _, d := range []string{plain.Config.DataDir, hub.Config.DataDir} {
		// A data_dir readable by others must still keep the secrets in.
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, err := testkit.RunAsNobody(t, "TestLocalUserCannotReachTheEmbeddedServers",
		"ATTACK_NATS="+hub.NATSURL,
		"ATTACK_STORE="+hub.StoreSrv.Addr(),
		"ATTACK_SOCKETS="+StoreSocket(plain.Config)+","+StoreSocket(hub.Config),
		"ATTACK_JOIN="+JoinDir(hub.Config),
		"ATTACK_PLAIN_DATA="+plain.Config.DataDir)
	t.Logf("as uid %d:\n%s", testkit.NobodyUID, out)
	if err != nil {
		t.Fatalf("the attack got somewhere (or could not run): %v", err)
	}
	if !strings.Contains(out, "ATTACK REFUSED") {
		t.Fatal("the child did not run the attack")
	}
	// The embedded servers saw no job of the attacker.
	jobs, err := hub.Store.ListJobs(context.Background(), store.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 0 {
		t.Errorf("jobs appeared: %+v", jobs)
	}
}

// attackAsNobody runs in the child as uid 65534: every attempt must fail.
func attackAsNobody(t *testing.T) {
	if os.Getuid() != testkit.NobodyUID {
		t.Fatalf("running as uid %d, not %d", os.Getuid(), testkit.NobodyUID)
	}
	ctx := context.Background()
	natsURL := os.Getenv("ATTACK_NATS")
	if nc, err := nats.Connect(natsURL, nats.Timeout(3*time.Second), nats.MaxReconnects(0)); err == nil {
		js, _ := nc.JetStream()
		_, perr := js.Publish(events.JobSubject("site", "restore"), []byte(`{"job_id":"evil"}`))
		nc.Close()
		t.Errorf("NATS %s: connected without credentials (publish: %v)", natsURL, perr)
	} else {
		t.Logf("NATS %s: %v", natsURL, err)
	}
	// Guessing at the usual ports: nothing there by default.
	for _, p := range []string{"4222", "27017"} {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+p, time.Second); err == nil {
			c.Close()
			t.Logf("note: something listens on 127.0.0.1:%s (not this test's nodes)", p)
		}
	}
	store := os.Getenv("ATTACK_STORE")
	for name, uri := range map[string]string{
		"plain TCP":            "mongodb://" + store + "/",
		"TLS, no certificate":  "mongodb://" + store + "/?tls=true&tlsInsecure=true",
		"TLS, self-made trust": "mongodb://" + store + "/?tls=true&tlsAllowInvalidCertificates=true",
	} {
		if err := storeWrite(ctx, uri); err == nil {
			t.Errorf("store %s: a restore job was written", name)
		} else {
			t.Logf("store %s: refused: %v", name, oneLine(err))
		}
	}
	for _, sock := range strings.Split(os.Getenv("ATTACK_SOCKETS"), ",") {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			t.Errorf("store socket %s: connected", sock)
		} else {
			t.Logf("store socket %s: %v", sock, err)
		}
		uri := "mongodb://" + url.PathEscape(sock) + "/"
		if err := storeWrite(ctx, uri); err == nil {
			t.Errorf("store socket %s: a restore job was written", sock)
		}
	}
	join := os.Getenv("ATTACK_JOIN")
	for _, name := range []string{"nats-url", "mongo-uri", "store-client.pem"} {
		if b, err := os.ReadFile(filepath.Join(join, name)); err == nil {
			t.Errorf("read the join file %s (%d bytes)", name, len(b))
		}
	}
	for _, name := range []string{"api-token", "restic-password", "embedded/nats-password"} {
		p := filepath.Join(os.Getenv("ATTACK_PLAIN_DATA"), name)
		if _, err := os.ReadFile(p); err == nil {
			t.Errorf("read %s", p)
		}
	}
	if !t.Failed() {
		t.Log("ATTACK REFUSED")
	}
}

// storeWrite tries what the attacker wanted: insert a restore job.
func storeWrite(ctx context.Context, uri string) error {
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(3 * time.Second).SetTimeout(3 * time.Second))
	if err != nil {
		return err
	}
	defer c.Disconnect(ctx)
	_, err = c.Database("satoru").Collection("jobs").InsertOne(ctx, bson.D{{Key: "_id", Value: "evil-" + time.Now().Format("150405.000000")},
		{Key: "type", Value: "restore"}, {Key: "restore", Value: bson.D{{Key: "destination", Value: bson.D{{Key: "local_path", Value: "/root/.ssh"}}}}}})
	if err == nil {
		// Not the attacker: clean up what a legitimate check wrote.
		_, _ = c.Database("satoru").Collection("jobs").DeleteMany(ctx, bson.D{{Key: "type", Value: "restore"}, {Key: "restore.destination.local_path", Value: "/root/.ssh"}})
	}
	return err
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func oneLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
