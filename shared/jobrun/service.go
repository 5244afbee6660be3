package jobrun

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

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
}

// Run consumes the service's job requests until ctx ends.
func (s Service) Run(ctx context.Context) error {
	cons, err := s.Infra.Consumer(ctx, s.Consumer)
	if err != nil {
		return err
	}
	if s.Registry != nil {
		// Queue depth: requests waiting for this service, or taken and not acked.
		observe.NewQueueMetrics(s.Registry).Watch(s.Consumer.Durable, func(ctx context.Context) (uint64, error) {
			info, err := cons.Info(ctx)
			if err != nil {
				return 0, err
			}
			return info.NumPending + uint64(info.NumAckPending), nil
		})
	}
	log := s.Log.With("service", s.Name, "worker", s.Worker)
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
	}
	r := &bus.Runner{
		Consumer: cons,
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
