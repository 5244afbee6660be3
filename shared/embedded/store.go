package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/satoru/satoru/shared/tick"
)

// StoreOptions configures the in-process MongoDB-wire store. It serves a
// Unix socket (Socket), a TCP address (Listen), or both. Satoru's own
// services use the socket, whose folder is Satoru's alone; the TCP
// address is for workers on other hosts and then requires a client
// certificate (TLS).
type StoreOptions struct {
	// Dir holds the SQLite files (created 0700). Required.
	Dir string
	// Socket is the Unix socket path; its folder is created 0700 and the
	// socket made 0600, so only Satoru's user can connect. A socket file
	// left by a store that died is replaced; one a running store answers
	// on is refused.
	Socket string
	// Listen is a TCP host:port ("127.0.0.1:0" picks a free port); ""
	// means no TCP listener.
	Listen string
	// TLS, when set, makes Listen serve TLS and require a client
	// certificate signed by TLS.CAFile. Without it Listen is open to every
	// local user: tests only.
	TLS *StoreTLS
	// Logger receives FerretDB's log lines. Nil keeps it silent. FerretDB
	// logs every failed command at Warn, a duplicate key too, so a filter
	// at Error suits most uses.
	Logger *slog.Logger
	// IndexEvery is how often the running store indexes the _id lookups
	// of collections created since the last pass (see IndexIDs); 0 means
	// DefaultIndexEvery, negative turns the repeat off (StartStore still
	// indexes the collections that exist when it starts).
	IndexEvery time.Duration
}

// StoreTLS is the TLS of the store's TCP listener (see StorePKI).
type StoreTLS struct {
	CertFile, KeyFile string
	// CAFile is the authority whose client certificates are required.
	CAFile string
}

// maxSocketPath is the longest Unix socket path Linux accepts.
const maxSocketPath = 107

// Store is a running FerretDB v1 with its SQLite backend.
type Store struct {
	uri    string
	addr   string
	socket string
	dir    string
	logger *slog.Logger
	cancel context.CancelFunc
	done   chan struct{} // closed when FerretDB and the index loop stopped

	indexMu   sync.Mutex
	closeOnce sync.Once
}

// StartStore starts FerretDB on o.Dir and returns once it accepts
// connections. ctx bounds the start only; the store runs until Close.
// FerretDB's telemetry is disabled (the embedded package never reports).
func StartStore(ctx context.Context, o StoreOptions) (*Store, error) {
	if o.Dir == "" {
		return nil, errors.New("embedded: store: Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedded: store: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded: store: %w", err)
	}
	if o.Socket == "" && o.Listen == "" {
		return nil, errors.New("embedded: store: give a Socket, a Listen address, or both")
	}
	if o.TLS != nil && o.Listen == "" {
		return nil, errors.New("embedded: store: TLS needs a Listen address")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	} else {
		logger = logger.With("component", "ferretdb")
	}
	sqliteURL := (&url.URL{Scheme: "file", Path: dir + "/"}).String()

	lc := ferretdb.ListenerConfig{}
	var socketURI string
	if o.Socket != "" {
		sock, err := prepareSocket(o.Socket)
		if err != nil {
			return nil, fmt.Errorf("embedded: store: %w", err)
		}
		lc.Unix = sock
		// The driver takes a socket path, escaped, as the host.
		socketURI = "mongodb://" + url.PathEscape(sock) + "/"
	}
	if o.Listen != "" {
		// FerretDB leaks its backend when its listener cannot bind (a later
		// GC then panics in its resource tracker), so a busy address is
		// refused here first.
		if probe, err := net.Listen("tcp", o.Listen); err != nil {
			return nil, fmt.Errorf("embedded: store: start on %s: %w", o.Listen, err)
		} else if err := probe.Close(); err != nil {
			return nil, fmt.Errorf("embedded: store: start on %s: %w", o.Listen, err)
		}
		if o.TLS != nil {
			lc.TLS, lc.TLSCertFile, lc.TLSKeyFile, lc.TLSCAFile = o.Listen, o.TLS.CertFile, o.TLS.KeyFile, o.TLS.CAFile
		} else {
			lc.TCP = o.Listen
		}
	}
	// ferretdb.New binds the listeners, so the real port is known here.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  lc,
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: store: start: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s := &Store{
		uri:    socketURI,
		socket: lc.Unix,
		dir:    dir,
		logger: logger,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	if o.Listen != "" {
		// With TLS or TCP set, FerretDB's URI names that listener.
		u, err := url.Parse(f.MongoDBURI())
		if err != nil {
			cancel()
			return nil, fmt.Errorf("embedded: store: uri: %w", err)
		}
		s.addr = u.Host
		if s.uri == "" {
			s.uri = "mongodb://" + s.addr + "/"
		}
	}

	// loops is the index loop, started below; it is added before
	// StartStore returns, so before anything can cancel runCtx.
	var loops sync.WaitGroup
	go func() {
		_ = f.Run(runCtx) // always nil; it returns when runCtx is canceled
		loops.Wait()
		close(s.done)
	}()

	network, addr := "tcp", s.addr
	if s.socket != "" {
		network, addr = "unix", s.socket
		// Its folder is 0700 already; the socket itself is made the owner's too.
		if err := os.Chmod(s.socket, 0o600); err != nil {
			s.Close()
			return nil, fmt.Errorf("embedded: store: %w", err)
		}
	}
	if err := waitDial(ctx, network, addr, 10*time.Second); err != nil {
		s.Close()
		return nil, fmt.Errorf("embedded: store: %w", err)
	}
	// The index is an optimisation: without it lookups are slower, not
	// wrong, so a failure does not stop the start.
	if _, err := s.IndexIDs(ctx); err != nil {
		logger.Warn("indexing _id lookups failed", "error", err)
	}
	if o.IndexEvery == 0 {
		o.IndexEvery = DefaultIndexEvery
	}
	if o.IndexEvery > 0 {
		loops.Add(1)
		go func() {
			defer loops.Done()
			s.indexLoop(runCtx, o.IndexEvery)
		}()
	}
	return s, nil
}

// indexLoop indexes new collections every interval until ctx ends.
func (s *Store) indexLoop(ctx context.Context, every time.Duration) {
	tick.Every(ctx, every, func() bool {
		if n, err := s.IndexIDs(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("indexing _id lookups failed", "error", err)
		} else if n > 0 {
			s.logger.Debug("indexed _id lookups", "tables", n)
		}
		return true
	})
}

// URI is the MongoDB connection string of the socket when there is one
// (mongodb://%2Fpath%2Fstore.sock/), else of the TCP listener
// (mongodb://127.0.0.1:27017/; with TLS a client adds its certificate).
func (s *Store) URI() string { return s.uri }

// Addr is the host:port the store listens on, "" without a TCP listener.
func (s *Store) Addr() string { return s.addr }

// Socket is the Unix socket path, "" without one.
func (s *Store) Socket() string { return s.socket }

// Close stops the store and waits until it has stopped. Clients that are
// still connected are given up to 3 seconds to disconnect, so close them
// first. Close is safe to call more than once.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
	})
}

// prepareSocket makes the socket's folder Satoru's alone (0700) and
// clears a socket file that no store answers on any more (one left by a
// crash); it returns the absolute path.
func prepareSocket(path string) (string, error) {
	sock, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if len(sock) > maxSocketPath {
		return "", fmt.Errorf("socket path %s is %d bytes, over the %d a Unix socket allows: use a shorter data_dir", sock, len(sock), maxSocketPath)
	}
	dir := filepath.Dir(sock)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	if _, err := os.Lstat(sock); err == nil {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			return "", fmt.Errorf("socket %s: another store is running on it", sock)
		}
		if err := os.Remove(sock); err != nil {
			return "", fmt.Errorf("remove stale socket %s: %w", sock, err)
		}
	}
	return sock, nil
}

// waitDial waits until addr accepts a connection.
func waitDial(ctx context.Context, network, addr string, max time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not accepting connections: %w", addr, err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
