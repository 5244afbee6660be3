// Package conns opens the clients a Satoru service needs: one NATS
// connection with the declared JetStream objects, and one store client.
package conns

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/store"
)

// Options say where NATS and the store are.
type Options struct {
	Name          string // client name, shown in NATS monitoring
	NATSURL       string // "" with an in-process connection in NATSOptions
	NATSOptions   []nats.Option
	MongoURI      string
	MongoDatabase string
	Bus           bus.Settings
}

// Conns are a process's shared clients.
type Conns struct {
	NC    *nats.Conn
	Store *store.Store
	Bus   *bus.Infra
}

// Open connects to NATS and the store and declares the bus objects.
func Open(ctx context.Context, o Options) (c *Conns, err error) {
	c = &Conns{}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	// An in-process NATS connection (NATSOptions) needs no URL.
	if (o.NATSURL == "" && len(o.NATSOptions) == 0) || o.MongoURI == "" {
		return nil, fmt.Errorf("conns: both a NATS URL and a MongoDB URI are needed (nats_url, mongo_uri)")
	}
	c.NC, err = bus.Connect(o.NATSURL, o.Name, o.NATSOptions...)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(c.NC)
	if err != nil {
		return nil, fmt.Errorf("conns: jetstream: %w", err)
	}
	c.Bus, err = bus.Ensure(ctx, js, o.Bus)
	if err != nil {
		return nil, err
	}
	var opts []store.Option
	if o.MongoDatabase != "" {
		opts = append(opts, store.WithDatabase(o.MongoDatabase))
	}
	// One client with one connection, shared by every service in the
	// process: the embedded store loses concurrent updates across
	// connections.
	c.Store, err = store.Open(ctx, o.MongoURI, opts...)
	if err != nil {
		return nil, fmt.Errorf("conns: open store %s: %w", RedactURI(o.MongoURI), err)
	}
	return c, nil
}

// Close drains NATS (letting in-flight acks out) and closes the store.
func (c *Conns) Close() {
	if c.NC != nil {
		_ = c.NC.Drain()
		deadline := time.Now().Add(5 * time.Second)
		for !c.NC.IsClosed() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		c.NC.Close()
	}
	if c.Store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.Store.Close(ctx)
		cancel()
	}
}

// RedactURI hides a password in a URI's user info.
func RedactURI(uri string) string {
	j := strings.Index(uri, "://")
	i := strings.LastIndex(uri, "@")
	if j < 0 || i < j {
		return uri
	}
	return uri[:j+3] + "***@" + uri[i+1:]
}
