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
	if service == "" || instance == "" {
		return errors.New("bus: announce: service and instance are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := events.ServiceKey(service, instance)
	me := Instance{Service: service, Instance: instance, StartedAt: time.Now().UTC(), Version: observe.Version()}
	put := func() error {
		me.HeartbeatAt = time.Now().UTC()
		val, err := json.Marshal(me)
		if err != nil {
			return err
		}
		if _, err := in.Liveness.Put(ctx, key, val); err != nil {
			return fmt.Errorf("bus: announce %s: %w", key, err)
		}
		return nil
	}
	if err := put(); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
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
	w, err := in.Liveness.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("bus: read %s: %w", events.BucketServices, err)
	}
	defer func() { _ = w.Stop() }()
	out := []Instance{}
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("bus: read %s: %w", events.BucketServices, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("bus: read %s: watcher closed", events.BucketServices)
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
