package testkit

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/store"
)

// Stack is the embedded infrastructure of one test: a NATS server with
// JetStream and a FerretDB store, each on a random 127.0.0.1 port, both
// persisting under Dir (a t.TempDir()).
type Stack struct {
	NATS     *embedded.NATS
	Store    *embedded.Store
	StoreURI string
	NATSURL  string
	Dir      string
}

// StartStack starts NATS and the store and stops them when the test ends.
func StartStack(t testing.TB) *Stack {
	t.Helper()
	dir := t.TempDir()
	n, err := embedded.StartNATS(embedded.NATSOptions{Dir: filepath.Join(dir, "nats"), Port: -1})
	if err != nil {
		t.Fatalf("testkit: start nats: %v", err)
	}
	t.Cleanup(n.Shutdown)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := embedded.StartStore(ctx, embedded.StoreOptions{Dir: filepath.Join(dir, "store"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("testkit: start store: %v", err)
	}
	t.Cleanup(st.Close)

	return &Stack{NATS: n, Store: st, StoreURI: st.URI(), NATSURL: n.ClientURL(), Dir: dir}
}

// OpenStore opens a store client on the stack (one connection, database
// "satoru" unless opts say otherwise), indexes the _id lookups of the
// collections it created (embedded.Store.IndexIDs) and closes the client
// when the test ends, before the stack stops.
func (s *Stack) OpenStore(t testing.TB, opts ...store.Option) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, s.StoreURI, opts...)
	if err != nil {
		t.Fatalf("testkit: open store: %v", err)
	}
	// Index the collections Open created, as `satoru up` does.
	if _, err := s.Store.IndexIDs(ctx); err != nil {
		t.Fatalf("testkit: index store: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := st.Close(ctx); err != nil {
			t.Errorf("testkit: close store: %v", err)
		}
	})
	return st
}
