package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/events"
)

// Following step events live: an ordered consumer (ephemeral, in memory,
// no acks; the client library recreates it from the last stream sequence
// it delivered if a message goes missing) reads stream SATORU_EVENTS
// filtered by site and job. It pulls a small batch at a time, so a slow
// reader only makes it pull later: nothing is dropped and order holds.

// EventFilter picks the step events to follow.
type EventFilter struct {
	// SiteUUID and JobID narrow the subject; "" means any. Each must be a
	// subject token (no '.', '*', '>' or white space).
	SiteUUID string
	JobID    string
	// AfterSeq resumes after this stream sequence (an SSE Last-Event-ID).
	// 0 means: a job's events from its first still held by the stream
	// when JobID is set, else only events published from now on.
	AfterSeq uint64
	// Log gets a debug line for each payload skipped because it does not
	// decode or validate; nil discards them.
	Log *slog.Logger
}

// Validate reports a filter field that is not a subject token, wrapping
// events.ErrInvalid and naming the field.
func (f EventFilter) Validate() error {
	for _, fld := range []struct{ name, v string }{{"site_uuid", f.SiteUUID}, {"job_id", f.JobID}} {
		if fld.v == "" {
			continue
		}
		if msg := TokenProblem(fld.v); msg != "" {
			return fmt.Errorf("%w: event filter %s %s", events.ErrInvalid, fld.name, msg)
		}
	}
	return nil
}

// MaxTokenLen bounds a subject token taken from a client.
const MaxTokenLen = 128

// TokenProblem says why s cannot be one subject token ("" when it can).
func TokenProblem(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > MaxTokenLen:
		return fmt.Sprintf("must be at most %d characters", MaxTokenLen)
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '.' || r == '*' || r == '>' }):
		return "must not contain '.', '*', '>', white space or control characters"
	}
	return ""
}

// Subject is the stream subject the filter follows.
func (f EventFilter) Subject() string {
	site, job := f.SiteUUID, f.JobID
	if site == "" {
		site = "*"
	}
	if job == "" {
		job = "*"
	}
	return events.EventsPrefix + "." + site + "." + job
}

// consumerConfig is the ordered consumer for f: resume after AfterSeq,
// replay a job's events, or start at new events.
func (f EventFilter) consumerConfig() jetstream.OrderedConsumerConfig {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{f.Subject()},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		// A follower that vanished without Close (a crashed process) is
		// removed by the server after this long without a pull.
		InactiveThreshold: time.Minute,
		// A consumer lost while NATS is unreachable is recreated at most
		// this often (1 s, 2 s, 4 s apart); then Next fails and the caller
		// resumes with a new feed after the last sequence it saw.
		MaxResetAttempts: 3,
	}
	switch {
	case f.AfterSeq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.AfterSeq+1
	case f.JobID != "":
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	return cfg
}

// StreamedEvent is a step event with its stream sequence.
type StreamedEvent struct {
	Seq   uint64
	Event events.StepEvent
}

// EventFeed yields followed step events in stream order.
type EventFeed interface {
	// Next waits for the next event until ctx ends (returning ctx's
	// error; the feed stays usable, so a caller may wait with a
	// deadline). Payloads that do not decode or validate are skipped.
	Next(ctx context.Context) (StreamedEvent, error)
	// Close stops the feed and removes its consumer; Next then fails.
	Close()
}

// followPull is how many messages a feed holds unread at most.
const followPull = 64

// FollowEvents starts following the step events f picks. The consumer
// exists when it returns, so an event published afterwards is seen. The
// feed lives until ctx ends or Close; the caller must Close it.
func (in *Infra) FollowEvents(ctx context.Context, f EventFilter) (EventFeed, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	cons, err := in.JS.OrderedConsumer(ctx, events.StreamEvents, f.consumerConfig())
	if err != nil {
		return nil, fmt.Errorf("bus: follow events on %s: %w", f.Subject(), err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(followPull))
	if err != nil {
		return nil, fmt.Errorf("bus: follow events on %s: %w", f.Subject(), err)
	}
	log := f.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	fd := &feed{js: in.JS, cons: cons, it: it, subject: f.Subject(), log: log}
	// Stopping the iterator also ends a consumer reset in progress, which
	// does not watch the context of Next.
	fd.unwatch = context.AfterFunc(ctx, it.Stop)
	return fd, nil
}

type feed struct {
	js      jetstream.JetStream
	cons    jetstream.Consumer
	it      jetstream.MessagesContext
	subject string
	log     *slog.Logger
	unwatch func() bool
	once    sync.Once
}

// ErrFeedClosed is returned by Next after Close or when the NATS
// connection is closed.
var ErrFeedClosed = errors.New("bus: event feed closed")

func (fd *feed) Next(ctx context.Context) (StreamedEvent, error) {
	for {
		if err := ctx.Err(); err != nil {
			return StreamedEvent{}, err
		}
		msg, err := fd.it.Next(jetstream.NextContext(ctx))
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return StreamedEvent{}, ctx.Err()
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return StreamedEvent{}, fmt.Errorf("%w: %w", ErrFeedClosed, err)
		default:
			return StreamedEvent{}, fmt.Errorf("bus: follow events on %s: %w", fd.subject, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			fd.log.Debug("bus: skip step event without metadata", "subject", msg.Subject(), "err", err)
			continue
		}
		var e events.StepEvent
		if err := json.Unmarshal(msg.Data(), &e); err != nil {
			fd.log.Debug("bus: skip undecodable step event", "subject", msg.Subject(), "seq", meta.Sequence.Stream, "err", err)
			continue
		}
		if err := e.Validate(); err != nil {
			fd.log.Debug("bus: skip invalid step event", "subject", msg.Subject(), "seq", meta.Sequence.Stream, "err", err)
			continue
		}
		return StreamedEvent{Seq: meta.Sequence.Stream, Event: e}, nil
	}
}

// deleteTimeout bounds removing a closed feed's consumer.
const deleteTimeout = 2 * time.Second

// Close stops pulling and deletes the consumer at once rather than leave
// it to InactiveThreshold, so short-lived followers do not pile up.
func (fd *feed) Close() {
	fd.once.Do(func() {
		fd.unwatch()
		fd.it.Stop()
		info := fd.cons.CachedInfo()
		if info == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), deleteTimeout)
		defer cancel()
		if err := fd.js.DeleteConsumer(ctx, events.StreamEvents, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			fd.log.Debug("bus: delete event follower consumer", "consumer", info.Name, "err", err)
		}
	})
}
