package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/satoru/satoru/shared/tick"
)

// RetryError asks for the message to be redelivered after Delay.
type RetryError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryError) Error() string { return fmt.Sprintf("retry in %s: %v", e.Delay, e.Err) }
func (e *RetryError) Unwrap() error { return e.Err }

// RetryAfter wraps err so the runner Naks the message with delay d.
func RetryAfter(d time.Duration, err error) error { return &RetryError{Delay: d, Err: err} }

// PermanentError marks a message that can never be processed.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err so the runner terminates the message.
func Permanent(err error) error { return &PermanentError{Err: err} }

// Delivery is one message as a handler sees it.
type Delivery struct {
	Subject      string
	Data         []byte
	NumDelivered uint64
}

// Handler processes one delivery. nil acks it, a RetryError naks it with
// delay, a PermanentError terminates it; any other error naks it after
// the runner's default delay. If ctx ended (shutdown), the message is
// nakked at once so another worker takes it.
type Handler func(ctx context.Context, d Delivery) error

// Fetcher hands out a consumer's next message: a jetstream.Consumer, or
// a worker node's partition keeper (shared/affinity).
type Fetcher interface {
	Next(opts ...jetstream.FetchOpt) (jetstream.Msg, error)
}

// Runner takes messages from one durable consumer, one at a time per
// worker, and keeps each in progress while its handler runs.
type Runner struct {
	Consumer Fetcher
	Workers  int
	// AckWait is the consumer's ack wait; InProgress is sent at a third of it.
	AckWait time.Duration
	// RetryDelay is the Nak delay for unclassified errors.
	RetryDelay time.Duration
	Handle     Handler
	Log        *slog.Logger
}

// Run blocks until ctx ends and every worker has finished its message.
func (r *Runner) Run(ctx context.Context) error {
	if r.Workers < 1 || r.Handle == nil || r.Consumer == nil || r.AckWait <= 0 {
		return errors.New("bus: runner needs a consumer, a handler, ack wait and at least one worker")
	}
	if r.RetryDelay <= 0 {
		r.RetryDelay = 5 * time.Second
	}
	if r.Log == nil {
		r.Log = slog.Default()
	}
	var wg sync.WaitGroup
	for i := 0; i < r.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (r *Runner) loop(ctx context.Context) {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := r.Consumer.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// An empty fetch ends in a timeout: no message, fetch again at once.
			if !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
				r.Log.Warn("fetch failed", "err", err)
				sleep(ctx, time.Second)
			}
			continue
		}
		r.process(ctx, msg)
	}
}

func (r *Runner) process(ctx context.Context, msg jetstream.Msg) {
	d := Delivery{Subject: msg.Subject(), Data: msg.Data()}
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered = md.NumDelivered
	}
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { // keeps the message ours while the handler works
		defer close(done)
		tick.Every(hctx, r.AckWait/3, func() bool {
			if err := msg.InProgress(); err != nil {
				r.Log.Warn("in-progress failed", "subject", d.Subject, "err", err)
			}
			return true
		})
	}()
	err := r.Handle(hctx, d)
	stop()
	<-done

	var retry *RetryError
	var perm *PermanentError
	switch {
	case ctx.Err() != nil:
		// Shutting down: hand the message back at once.
		_ = msg.Nak()
	case err == nil:
		if aerr := msg.DoubleAck(context.WithoutCancel(ctx)); aerr != nil {
			r.Log.Warn("ack failed", "subject", d.Subject, "err", aerr)
		}
	case errors.As(err, &perm):
		r.Log.Error("message dropped", "subject", d.Subject, "err", err)
		_ = msg.Term()
	case errors.As(err, &retry):
		r.Log.Debug("message retried", "subject", d.Subject, "delay", retry.Delay, "err", err)
		_ = msg.NakWithDelay(retry.Delay)
	default:
		r.Log.Warn("message failed, retrying", "subject", d.Subject, "delay", r.RetryDelay, "err", err)
		_ = msg.NakWithDelay(r.RetryDelay)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
