package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/embedded"
)

// The embedded servers are reachable by Satoru only. By default neither
// opens a TCP port: the services of this process reach NATS in-process
// and the store on a Unix socket in a 0700 folder under data_dir. With
// embedded_nats_listen / embedded_store_listen set, for workers on other
// hosts, the listeners require credentials generated once into
// <data_dir>/embedded (0700): a NATS password, and a private CA whose
// client certificate the store's TLS listener requires. What a worker
// needs is written into <data_dir>/join (0700, files 0600) on every start:
// nats-url (with the password), mongo-uri (naming store-ca.pem and
// store-client.pem beside it), read with nats_url_file / mongo_uri_file.

// natsUser is the user of the embedded NATS server's listener.
const natsUser = "satoru"

// Paths under data_dir.
func embeddedDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "embedded") }

// JoinDir is where `satoru up` writes what extra workers need to join.
func JoinDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "join") }

// StoreSocket is the embedded store's Unix socket.
func StoreSocket(cfg config.Config) string { return filepath.Join(cfg.DataDir, "run", "store.sock") }

// startEmbeddedNATS starts the in-process NATS server and returns the
// option this process's clients connect with.
func (n *Node) startEmbeddedNATS() (nats.Option, error) {
	cfg := n.Config
	if cfg.NATSReplicas > 1 {
		return nil, fmt.Errorf("nats_replicas is %d, but the embedded NATS server is one node and keeps one copy: set nats_replicas to 1, or nats_url to a cluster", cfg.NATSReplicas)
	}
	o := embedded.NATSOptions{Dir: filepath.Join(cfg.DataDir, "nats"), NoListener: true}
	var pass string
	if cfg.EmbeddedNATSListen != "" {
		host, port, err := splitListen("embedded_nats_listen", cfg.EmbeddedNATSListen)
		if err != nil {
			return nil, err
		}
		pass, err = generatedSecret(filepath.Join(embeddedDir(cfg), "nats-password"))
		if err != nil {
			return nil, fmt.Errorf("embedded NATS credentials: %w", err)
		}
		o = embedded.NATSOptions{Dir: o.Dir, Host: host, Port: port, Username: natsUser, Password: pass}
	}
	var err error
	n.NATS, err = embedded.StartNATS(o)
	if err != nil {
		if cfg.EmbeddedNATSListen != "" {
			return nil, fmt.Errorf("start embedded NATS on %s: %w", cfg.EmbeddedNATSListen, err)
		}
		return nil, fmt.Errorf("start embedded NATS: %w", err)
	}
	if addr := n.NATS.Addr(); addr != "" {
		n.NATSURL = n.NATS.ClientURL()
		_, port, _ := net.SplitHostPort(addr)
		join := "nats://" + url.UserPassword(natsUser, pass).String() + "@" + net.JoinHostPort(advertiseHost(cfg.EmbeddedNATSListen), port)
		if err := writeJoin(cfg, "nats-url", []byte(join+"\n")); err != nil {
			return nil, err
		}
	}
	return n.NATS.InProcessOption(), nil
}

// startEmbeddedStore starts the embedded store and returns the URI this
// process's clients use (its socket).
func (n *Node) startEmbeddedStore(ctx context.Context) (string, error) {
	cfg := n.Config
	o := embedded.StoreOptions{Dir: filepath.Join(cfg.DataDir, "store"), Socket: StoreSocket(cfg)}
	var pki embedded.StorePKI
	if cfg.EmbeddedStoreListen != "" {
		host, _, err := net.SplitHostPort(cfg.EmbeddedStoreListen)
		if err != nil {
			return "", fmt.Errorf("config: embedded_store_listen: %w", err)
		}
		pki, err = embedded.EnsureStorePKI(filepath.Join(embeddedDir(cfg), "store-pki"), storeHosts(host))
		if err != nil {
			return "", err
		}
		o.Listen = cfg.EmbeddedStoreListen
		o.TLS = &embedded.StoreTLS{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CAFile: pki.CA}
	}
	var err error
	n.StoreSrv, err = embedded.StartStore(ctx, o)
	if err != nil {
		if cfg.EmbeddedStoreListen != "" {
			return "", fmt.Errorf("start embedded store on %s: %w", cfg.EmbeddedStoreListen, err)
		}
		return "", fmt.Errorf("start embedded store: %w", err)
	}
	if addr := n.StoreSrv.Addr(); addr != "" {
		_, port, _ := net.SplitHostPort(addr)
		for name, from := range map[string]string{"store-ca.pem": pki.CA, "store-client.pem": pki.Client} {
			b, err := os.ReadFile(from)
			if err != nil {
				return "", fmt.Errorf("embedded store credentials: %w", err)
			}
			if err := writeJoin(cfg, name, b); err != nil {
				return "", err
			}
		}
		// Relative file names: nats_url_file / mongo_uri_file resolve them
		// beside the URI's file, so the join folder works wherever it is copied.
		uri := "mongodb://" + net.JoinHostPort(advertiseHost(cfg.EmbeddedStoreListen), port) +
			"/?tls=true&tlsCAFile=store-ca.pem&tlsCertificateKeyFile=store-client.pem"
		if err := writeJoin(cfg, "mongo-uri", []byte(uri+"\n")); err != nil {
			return "", err
		}
	}
	return n.StoreSrv.URI(), nil
}

// generatedSecret reads the secret in path, or makes one (0600) the first
// time. A file open to others is refused, as every secret file is.
func generatedSecret(path string) (string, error) {
	if err := checkGenerated(path); err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	s := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}

// writeJoin writes one file for joining workers into JoinDir (0700), 0600.
func writeJoin(cfg config.Config, name string, data []byte) error {
	dir := JoinDir(cfg)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("join files: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("join files: %w", err)
	}
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("join files: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("join files: %w", err)
	}
	return nil
}

// advertiseHost is the host workers reach a listener on: its own host,
// or this machine's name when it listens on every address.
func advertiseHost(listen string) string {
	host, _, err := net.SplitHostPort(listen)
	if err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			return host
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "127.0.0.1"
}

// storeHosts are the names and addresses the store's certificate is
// issued for: the listen host, loopback, this machine's name, and, when
// it listens on every address, each of this machine's addresses.
func storeHosts(listenHost string) []string {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	if h, err := os.Hostname(); err == nil && h != "" {
		hosts = append(hosts, h)
	}
	ip := net.ParseIP(listenHost)
	switch {
	case listenHost == "" || ip != nil && ip.IsUnspecified():
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					hosts = append(hosts, n.IP.String())
				}
			}
		}
	default:
		hosts = append(hosts, listenHost)
	}
	return hosts
}

func splitListen(key, hostport string) (string, int, error) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, fmt.Errorf("config: %s: %w", key, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("config: %s: port %q is not a number", key, p)
	}
	if port == 0 {
		port = -1 // NATS: random
	}
	return host, port, nil
}
