// Package bus connects to NATS, declares Satoru's streams, consumers and KV
// buckets, and runs consumers one message at a time.
package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/events"
)

// Connect dials NATS and returns a connection that reconnects forever, so a
// restarting NATS server does not take the services down with it.
func Connect(url, name string, opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("bus: connect to NATS: %w", err)
	}
	return nc, nil
}

// Settings are the timings the bus objects are declared with.
type Settings struct {
	// LeaseTTL is how long a site lease lives without renewal. It should
	// be shorter than AckWait by a heartbeat (config enforces it), so a
	// crashed worker's lease has expired when its job is redelivered.
	LeaseTTL time.Duration
	// AckWait is how long a consumer waits for Ack or InProgress before
	// redelivering a message.
	AckWait time.Duration
	// ServiceTTL is how long a service instance's liveness entry lives
	// without renewal (bucket SATORU_SERVICES); 0 means DefaultServiceTTL.
	ServiceTTL time.Duration
	// Replicas is how many copies a JetStream cluster keeps of each
	// stream and bucket (nats_replicas); 0 means 1. A single server
	// refuses more than 1.
	Replicas int
}

// DefaultServiceTTL is the liveness TTL of a zero Settings.ServiceTTL.
const DefaultServiceTTL = 30 * time.Second

// Infra holds the declared JetStream objects every service uses.
type Infra struct {
	JS      jetstream.JetStream
	Leases  jetstream.KeyValue
	Cancels jetstream.KeyValue
	// Liveness holds the liveness entries of the running service
	// instances (see Announce).
	Liveness jetstream.KeyValue
	// Nodes keeps the last liveness value of the instances that run on a
	// worker node for events.NodeRetention (see AnnounceNode, NodeRecords).
	Nodes jetstream.KeyValue
	// ResticProcs records the restic processes running on the
	// repository (shared/repoguard).
	ResticProcs jetstream.KeyValue
	AckWait     time.Duration
	// ServiceTTL is the TTL of the Services bucket.
	ServiceTTL time.Duration
}

// Ensure creates or updates the streams and KV buckets. It is idempotent,
// so every service calls it at start.
func Ensure(ctx context.Context, js jetstream.JetStream, s Settings) (*Infra, error) {
	if s.LeaseTTL <= 0 || s.AckWait <= 0 {
		return nil, errors.New("bus: ensure: lease TTL and ack wait must be positive")
	}
	replicas := max(s.Replicas, 1)
	src, dest := events.JobsTransform()
	streams := []jetstream.StreamConfig{{
		Name:        events.StreamJobs,
		Description: "Satoru job requests, stored by site partition; one consumer per service, one per worker node's puller",
		Subjects:    []string{events.JobsPrefix + ".>"},
		// Sites are partitioned on the way in, so a worker node's puller
		// takes its sites by filtering on its partitions (shared/affinity).
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: src, Destination: dest},
		Retention:        jetstream.WorkQueuePolicy,
		Storage:          jetstream.FileStorage,
		Duplicates:       10 * time.Minute,
		Replicas:         replicas,
	}, {
		Name:        events.StreamEvents,
		Description: "Satoru job step events",
		Subjects:    []string{events.EventsPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      events.EventsMaxAge,
		Replicas:    replicas,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return nil, fmt.Errorf("bus: ensure stream %s: %w", sc.Name, err)
		}
	}
	if err := purgeUnpartitioned(ctx, js); err != nil {
		return nil, err
	}
	leases, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.BucketLeases,
		Description: "per-site leases; an entry expires unless renewed",
		TTL:         s.LeaseTTL,
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: ensure bucket %s: %w", events.BucketLeases, err)
	}
	cancels, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.BucketCancel,
		Description: "cancel requests by job id",
		TTL:         7 * 24 * time.Hour,
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: ensure bucket %s: %w", events.BucketCancel, err)
	}
	serviceTTL := s.ServiceTTL
	if serviceTTL <= 0 {
		serviceTTL = DefaultServiceTTL
	}
	services, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.BucketServices,
		Description: "service instance liveness; an entry expires unless renewed",
		TTL:         serviceTTL,
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.MemoryStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: ensure bucket %s: %w", events.BucketServices, err)
	}
	nodes, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.BucketNodes,
		Description: "last liveness value of each worker node's service instances; kept a while after they stop",
		TTL:         events.NodeRetention,
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: ensure bucket %s: %w", events.BucketNodes, err)
	}
	procs, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.BucketResticProcs,
		Description: "restic processes Satoru runs on the repository; entries outlive a crash",
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: ensure bucket %s: %w", events.BucketResticProcs, err)
	}
	return &Infra{JS: js, Leases: leases, Cancels: cancels, Liveness: services, Nodes: nodes, ResticProcs: procs,
		AckWait: s.AckWait, ServiceTTL: serviceTTL}, nil
}

// Consumer creates or updates a service's durable consumer. Deliveries are
// unlimited: the job document counts attempts, and lease contention, which
// also redelivers, must not use them up.
func (in *Infra) Consumer(ctx context.Context, c events.Consumer) (jetstream.Consumer, error) {
	return in.NodeConsumer(ctx, c.Durable, c.FilterSubjects())
}

// NodeConsumer creates or updates durable on the job stream with the
// given filters, as Consumer does; a worker node's puller (events.
// NodeDurable) filters on the partitions the node owns.
func (in *Infra) NodeConsumer(ctx context.Context, durable string, filters []string) (jetstream.Consumer, error) {
	cons, err := in.JS.CreateOrUpdateConsumer(ctx, events.StreamJobs, jetstream.ConsumerConfig{
		Durable:        durable,
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        in.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  1000,
	})
	if err != nil {
		return nil, fmt.Errorf("bus: ensure consumer %s: %w", durable, err)
	}
	return cons, nil
}

// purgeUnpartitioned drops the job requests a version without site
// partitions stored (satoru.jobs.<site>.<type>): no consumer takes that
// shape any more. Their jobs are still queued or running in the store,
// and the scheduler publishes them again when they go stale (the
// recovery of lost requests, job_stale_after_seconds).
func purgeUnpartitioned(ctx context.Context, js jetstream.JetStream) error {
	str, err := js.Stream(ctx, events.StreamJobs)
	if err != nil {
		return fmt.Errorf("bus: stream %s: %w", events.StreamJobs, err)
	}
	if err := str.Purge(ctx, jetstream.WithPurgeSubject(events.JobsPrefix+".*.*")); err != nil {
		return fmt.Errorf("bus: purge unpartitioned requests of %s: %w", events.StreamJobs, err)
	}
	return nil
}
