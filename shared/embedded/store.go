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
)

// DefaultStoreListen is where the embedded store listens by default.
const DefaultStoreListen = "127.0.0.1:27017"

// StoreOptions configures the in-process MongoDB-wire store.
type StoreOptions struct {
	// Dir holds the SQLite files (created 0700). Required.
	Dir string
	// Listen is host:port; default 127.0.0.1:27017, "127.0.0.1:0" picks a
	// random free port.
	Listen string
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

// Store is a running FerretDB v1 with its SQLite backend.
type Store struct {
	uri    string
	addr   string
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
	if o.Listen == "" {
		o.Listen = DefaultStoreListen
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	} else {
		logger = logger.With("component", "ferretdb")
	}
	sqliteURL := (&url.URL{Scheme: "file", Path: dir + "/"}).String()

	// FerretDB leaks its backend when its listener cannot bind (a later
	// GC then panics in its resource tracker), so a busy address is
	// refused here first.
	if probe, err := net.Listen("tcp", o.Listen); err != nil {
		return nil, fmt.Errorf("embedded: store: start on %s: %w", o.Listen, err)
	} else if err := probe.Close(); err != nil {
		return nil, fmt.Errorf("embedded: store: start on %s: %w", o.Listen, err)
	}
	// ferretdb.New binds the listener, so the real port is known here.
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: o.Listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: store: start on %s: %w", o.Listen, err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	s := &Store{
		uri:    f.MongoDBURI(),
		dir:    dir,
		logger: logger,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	u, err := url.Parse(s.uri)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("embedded: store: uri %q: %w", s.uri, err)
	}
	s.addr = u.Host

	// loops is the index loop, started below; it is added before
	// StartStore returns, so before anything can cancel runCtx.
	var loops sync.WaitGroup
	go func() {
		_ = f.Run(runCtx) // always nil; it returns when runCtx is canceled
		loops.Wait()
		close(s.done)
	}()

	if err := waitDial(ctx, s.addr, 10*time.Second); err != nil {
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
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.IndexIDs(ctx); err != nil && ctx.Err() == nil {
				s.logger.Warn("indexing _id lookups failed", "error", err)
			} else if n > 0 {
				s.logger.Debug("indexed _id lookups", "tables", n)
			}
		}
	}
}

// URI is the MongoDB connection string, e.g. mongodb://127.0.0.1:27017/.
func (s *Store) URI() string { return s.uri }

// Addr is the host:port the store listens on.
func (s *Store) Addr() string { return s.addr }

// Close stops the store and waits until it has stopped. Clients that are
// still connected are given up to 3 seconds to disconnect, so close them
// first. Close is safe to call more than once.
func (s *Store) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
	})
}

// waitDial waits until addr accepts a TCP connection.
func waitDial(ctx context.Context, addr string, max time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
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
