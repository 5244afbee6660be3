package jobrun

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/affinity"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/observe"
)

// Service is the wiring every job-consuming service shares: its durable
// consumer, a pool of workers taking one message at a time, and an
// Executor around the service's work.
type Service struct {
	Name     string
	Consumer events.Consumer
	Infra    *bus.Infra
	Store    Store
	// IsNotFound tells the store's not-found error.
	IsNotFound  func(error) bool
	Worker      string
	Concurrency int
	AckWait     time.Duration
	Heartbeat   time.Duration
	LeaseRetry  time.Duration
	RetryBase   time.Duration
	MaxAttempts int
	Registry    prometheus.Registerer
	Log         *slog.Logger
	// Pick returns the work for a job, or an error for a job type the
	// service does not run.
	Pick func(domain.Job) (Work, error)
	// Notify, when set, is told every job's final outcome (see
	// Executor.Notify).
	Notify func(ctx context.Context, job domain.Job, out Outcome)
	// Staging and Local: see Executor.
	Staging string
	Local   map[string]func(domain.Job) (Work, error)
	// Partitioned: the service is a worker node's puller (named by
	// Staging): it takes only the sites of the partitions the node owns,
	// through a consumer of its own (shared/affinity).
	Partitioned bool
	// PartitionsChanged, when set, is told the node's partitions after
	// each change.
	PartitionsChanged func(parts []int)
	// Hold: see Executor.Hold.
	Hold func(ctx context.Context, job domain.Job) (time.Time, string, error)
}

// Run consumes the service's job requests until ctx ends.
func (s Service) Run(ctx context.Context) error {
	log := s.Log.With("service", s.Name, "worker", s.Worker)
	fetcher, pending, stop, err := s.source(ctx, log)
	if err != nil {
		return err
	}
	defer stop()
	if s.Registry != nil {
		// Queue depth: requests waiting for this service, or taken and not acked.
		observe.NewQueueMetrics(s.Registry).Watch(s.Consumer.Durable, pending)
	}
	x := &Executor{
		Store:       s.Store,
		Bus:         s.Infra,
		Worker:      s.Worker,
		Heartbeat:   s.Heartbeat,
		MaxAttempts: s.MaxAttempts,
		LeaseRetry:  s.LeaseRetry,
		RetryBase:   s.RetryBase,
		IsNotFound:  s.IsNotFound,
		Metrics:     observe.NewJobMetrics(s.Registry),
		Log:         log,
		Notify:      s.Notify,
		Staging:     s.Staging,
		Local:       s.Local,
		Hold:        s.Hold,
	}
	r := &bus.Runner{
		Consumer: fetcher,
		Workers:  s.Concurrency,
		AckWait:  s.AckWait,
		Log:      log,
		Handle: func(ctx context.Context, d bus.Delivery) error {
			return x.Handle(ctx, d, s.Pick)
		},
	}
	log.Info(s.Name+" started", "concurrency", s.Concurrency)
	return r.Run(ctx)
}

// source is where the service's requests come from: its durable, or a
// worker node's own consumer kept on the node's partitions; pending
// counts what waits there; stop ends what source started.
func (s Service) source(ctx context.Context, log *slog.Logger) (bus.Fetcher, func(context.Context) (uint64, error), func(), error) {
	if !s.Partitioned {
		cons, err := s.Infra.Consumer(ctx, s.Consumer)
		if err != nil {
			return nil, nil, nil, err
		}
		pending := func(ctx context.Context) (uint64, error) {
			info, err := cons.Info(ctx)
			if err != nil {
				return 0, err
			}
			return info.NumPending + uint64(info.NumAckPending), nil
		}
		return cons, pending, func() {}, nil
	}
	if s.Staging == "" {
		return nil, nil, nil, errors.New("jobrun: a partitioned service needs its node's staging id")
	}
	k := &affinity.Keeper{Infra: s.Infra, Node: s.Staging, Consumer: s.Consumer, Changed: s.PartitionsChanged, Log: log}
	// The keeper outlives ctx until stop: it releases the node's consumer
	// only after the runner has handed back or acked what it held.
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	wait := k.Start(kctx)
	return k, k.Pending, func() { cancel(); wait() }, nil
}
