package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/tick"
)

// Instance is a running service instance's liveness entry in the
// SATORU_SERVICES bucket, under events.ServiceKey(Service, Instance).
type Instance struct {
	Service     string    `json:"service"`
	Instance    string    `json:"instance"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	Version     string    `json:"version"`
	// Node is the staging id (shared/staging) of the worker node the
	// instance runs on; empty for a service without a staging (API,
	// scheduler, syncer) and in entries written before nodes existed.
	Node string `json:"node,omitempty"`
}

// Announce reports service/instance alive until ctx ends: it puts the
// instance's entry at once and again every ServiceTTL/3, so the entry
// lives as long as the caller does and expires by the bucket's TTL when
// the process dies. On return it deletes the entry (a clean stop shows at
// once). The caller owns the goroutine running it. Only a first put that
// fails is returned (with the entry never written); later failures, e.g.
// while NATS reconnects, are logged to log (nil discards) and retried at
// the next renewal.
func (in *Infra) Announce(ctx context.Context, service, instance string, log *slog.Logger) error {
	return in.AnnounceNode(ctx, service, instance, "", log)
}

// AnnounceNode is Announce for an instance on worker node node (its
// staging id; "" is Announce): each put also writes the instance's
// record in SATORU_NODES, and a last one on return, so the node is
// still listed, with when it was last seen, after its liveness entry is
// gone. A failed record write is logged, never fatal: the record only
// serves GET /health.
func (in *Infra) AnnounceNode(ctx context.Context, service, instance, node string, log *slog.Logger) error {
	if service == "" || instance == "" {
		return errors.New("bus: announce: service and instance are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := events.ServiceKey(service, instance)
	me := Instance{Service: service, Instance: instance, StartedAt: time.Now().UTC(), Version: observe.Version(), Node: node}
	record := func(ctx context.Context, val []byte) {
		if node == "" || in.Nodes == nil {
			return
		}
		nkey := events.NodeKey(node, service, instance)
		if _, err := in.Nodes.Put(ctx, nkey, val); err != nil && ctx.Err() == nil {
			log.Warn("node record not written", "key", nkey, "err", err)
		}
	}
	put := func() error {
		me.HeartbeatAt = time.Now().UTC()
		val, err := json.Marshal(me)
		if err != nil {
			return err
		}
		if _, err := in.Liveness.Put(ctx, key, val); err != nil {
			return fmt.Errorf("bus: announce %s: %w", key, err)
		}
		record(ctx, val)
		return nil
	}
	if err := put(); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		// The record's heartbeat becomes the stop time: last seen.
		me.HeartbeatAt = time.Now().UTC()
		if val, err := json.Marshal(me); err == nil {
			record(dctx, val)
		}
		if err := in.Liveness.Delete(dctx, key); err != nil {
			log.Warn("liveness entry not deleted; it expires by TTL", "key", key, "err", err)
		}
	}()
	ttl := in.ServiceTTL
	if ttl <= 0 {
		ttl = DefaultServiceTTL
	}
	tick.Every(ctx, max(ttl/3, 10*time.Millisecond), func() bool {
		if err := put(); err != nil && ctx.Err() == nil {
			log.Warn("liveness renewal failed", "key", key, "err", err)
		}
		return true
	})
	return nil
}

// Services lists the live service instances (the entries of the
// SATORU_SERVICES bucket), by service then instance.
func (in *Infra) Services(ctx context.Context) ([]Instance, error) {
	return readInstances(ctx, in.Liveness, events.BucketServices)
}

// NodeRecords lists the last known value of every service instance that
// ran on a worker node within events.NodeRetention (the entries of the
// SATORU_NODES bucket), live or not, by service then instance.
func (in *Infra) NodeRecords(ctx context.Context) ([]Instance, error) {
	if in.Nodes == nil {
		return nil, fmt.Errorf("bus: read %s: bucket not declared", events.BucketNodes)
	}
	return readInstances(ctx, in.Nodes, events.BucketNodes)
}

// readInstances reads every Instance value of bucket kv.
func readInstances(ctx context.Context, kv jetstream.KeyValue, bucket string) ([]Instance, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("bus: read %s: %w", bucket, err)
	}
	defer func() { _ = w.Stop() }()
	out := []Instance{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: read %s: %w", bucket, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("bus: read %s: watcher closed", bucket)
			}
			if e == nil { // every current entry was delivered
				sort.Slice(out, func(i, j int) bool {
					if out[i].Service != out[j].Service {
						return out[i].Service < out[j].Service
					}
					return out[i].Instance < out[j].Instance
				})
				return out, nil
			}
			var inst Instance
			if err := json.Unmarshal(e.Value(), &inst); err != nil {
				continue // not ours to judge; skip it
			}
			out = append(out, inst)
		}
	}
}
