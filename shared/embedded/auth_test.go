package embedded

import (
	"context"
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
)

func TestNATSWithoutListenerOpensNoPort(t *testing.T) {
	n, err := StartNATS(NATSOptions{Dir: t.TempDir(), NoListener: true, Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if n.Addr() != "" || n.ClientURL() != "" {
		t.Fatalf("a server without a listener reports %q / %q", n.Addr(), n.ClientURL())
	}
	nc, err := nats.Connect("", n.InProcessOption())
	if err != nil {
		t.Fatalf("in-process connection: %v", err)
	}
	nc.Close()
}

func TestNATSRequiresCredentials(t *testing.T) {
	const user, pass = "satoru", "p4ssw0rd-long-enough"
	n, err := StartNATS(NATSOptions{Dir: t.TempDir(), Port: -1, Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	plain := n.ClientURL()
	if strings.Contains(plain, pass) {
		t.Fatalf("ClientURL %q carries the password", plain)
	}
	withCreds := "nats://" + url.UserPassword(user, pass).String() + "@" + n.Addr()
	wrong := "nats://" + url.UserPassword(user, "guess").String() + "@" + n.Addr()
	for name, u := range map[string]string{"no credentials": plain, "a wrong password": wrong} {
		nc, err := nats.Connect(u, nats.Timeout(2*time.Second), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization error", name, err)
		}
	}
	for name, connect := range map[string]func() (*nats.Conn, error){
		"credentials in the URL": func() (*nats.Conn, error) { return nats.Connect(withCreds) },
		"in-process":             func() (*nats.Conn, error) { return nats.Connect("", n.InProcessOption()) },
	} {
		nc, err := connect()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		nc.Close()
	}
	if _, err := StartNATS(NATSOptions{Dir: t.TempDir(), Port: -1, Username: user}); err == nil {
		t.Error("a user without a password was accepted")
	}
}

func TestStoreOnASocketOnly(t *testing.T) {
	ctx := testCtx(t)
	base := t.TempDir()
	sock := filepath.Join(base, "run", "store.sock")
	// A socket file left by a store that died is replaced.
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sock, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := StartStore(ctx, StoreOptions{Dir: filepath.Join(base, "store"), Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.Addr() != "" {
		t.Errorf("a socket-only store listens on %s", st.Addr())
	}
	if got := dirMode(t, filepath.Dir(sock)); got != 0o700 {
		t.Errorf("socket folder mode %o, want 700", got)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %v (%v), want a 0600 socket", fi, err)
	}
	insertOne(t, ctx, options.Client().ApplyURI(st.URI()))
	if _, err := StartStore(ctx, StoreOptions{Dir: filepath.Join(base, "store2"), Socket: sock}); err == nil || !strings.Contains(err.Error(), "another store is running") {
		t.Errorf("a second store on the socket: %v", err)
	}
	if _, err := StartStore(ctx, StoreOptions{Dir: t.TempDir(), Socket: "/" + strings.Repeat("s", 120)}); err == nil || !strings.Contains(err.Error(), "use a shorter data_dir") {
		t.Errorf("an over-long socket path: %v", err)
	}
}

func TestStoreTLSRequiresAClientCertificate(t *testing.T) {
	ctx := testCtx(t)
	base := t.TempDir()
	pki, err := EnsureStorePKI(filepath.Join(base, "pki"), []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{pki.CA, pki.ServerCert, pki.ServerKey, pki.Client, filepath.Join(pki.Dir, "ca-key.pem")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v (%v), want 0600", f, fi.Mode().Perm(), err)
		}
	}
	st, err := StartStore(ctx, StoreOptions{Dir: filepath.Join(base, "store"), Socket: filepath.Join(base, "run", "s.sock"),
		Listen: "127.0.0.1:0", TLS: &StoreTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CAFile: pki.CA}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tcp := "mongodb://" + st.Addr() + "/"
	withCert := tcp + "?tls=true&tlsCAFile=" + url.QueryEscape(pki.CA) + "&tlsCertificateKeyFile=" + url.QueryEscape(pki.Client)
	insertOne(t, ctx, options.Client().ApplyURI(withCert))
	insertOne(t, ctx, options.Client().ApplyURI(st.URI())) // Satoru's own services: the socket

	// A second installation's authority: its client certificate is not ours.
	other, err := EnsureStorePKI(filepath.Join(base, "other"), []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	for name, uri := range map[string]string{
		"plain TCP":                        tcp,
		"TLS without a client certificate": tcp + "?tls=true&tlsCAFile=" + url.QueryEscape(pki.CA),
		"a certificate another CA signed":  tcp + "?tls=true&tlsCAFile=" + url.QueryEscape(pki.CA) + "&tlsCertificateKeyFile=" + url.QueryEscape(other.Client),
		"TLS trusting anything, no cert":   tcp + "?tls=true&tlsInsecure=true",
	} {
		if err := tryInsert(ctx, options.Client().ApplyURI(uri)); err == nil {
			t.Errorf("%s: the store accepted a write", name)
		}
	}

	// Issued again (a restart), the authority and the client certificate stay.
	again, err := EnsureStorePKI(pki.Dir, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(pki.Client)
	b, _ := os.ReadFile(again.Client)
	if string(a) != string(b) {
		t.Error("a restart issued a new client certificate; joined workers would be locked out")
	}
}

func insertOne(t *testing.T, ctx context.Context, o *options.ClientOptions) {
	t.Helper()
	if err := tryInsert(ctx, o); err != nil {
		t.Fatal(err)
	}
}

func tryInsert(ctx context.Context, o *options.ClientOptions) error {
	c, err := mongo.Connect(o.SetServerSelectionTimeout(3 * time.Second).SetTimeout(3 * time.Second))
	if err != nil {
		return err
	}
	defer c.Disconnect(ctx)
	_, err = c.Database("auth_test").Collection("x").InsertOne(ctx, bson.D{{Key: "v", Value: 1}})
	return err
}
