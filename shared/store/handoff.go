package store

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/satoru/satoru/shared/domain"
)

// HandOffJob records a step's summary when one service hands a running
// job to the next (puller -> snapshotter) at at, and where it left its
// data (h); the job stays running.
func (s *Store) HandOffJob(ctx context.Context, id string, summary map[string]any, targets []domain.TargetRun, h domain.HandOff, at time.Time) error {
	return s.updateJob(ctx, "hand off job", id, false, bson.D{{Key: "$set", Value: bson.D{
		{Key: "summary", Value: summary},
		{Key: "targets", Value: targets},
		{Key: "hand_off", Value: h},
		{Key: "heartbeat_at", Value: ts(at)},
		{Key: "handed_off_at", Value: ts(at)},
	}}})
}

// ContinueJob marks the worker that started continuation step step of a
// handed-off job, in attempt attempts (the job's own, or one more when
// the step was started before by a worker that died); started_at stays
// that of the job's start.
func (s *Store) ContinueJob(ctx context.Context, id, worker, step string, attempts int, at time.Time) error {
	return s.updateJob(ctx, "continue job", id, false, bson.D{{Key: "$set", Value: bson.D{
		{Key: "status", Value: domain.StatusRunning},
		{Key: "worker", Value: worker},
		{Key: "step", Value: step},
		{Key: "attempts", Value: attempts},
		{Key: "heartbeat_at", Value: ts(at)},
	}}})
}

// RetryJob puts a job whose attempt failed for a passing reason back to
// queued, with the error and when the next attempt is due.
func (s *Store) RetryJob(ctx context.Context, id, errMsg string, next, at time.Time) error {
	return s.updateJob(ctx, "retry job", id, true, bson.D{{Key: "$set", Value: bson.D{
		{Key: "status", Value: domain.StatusQueued},
		{Key: "error", Value: errMsg},
		{Key: "next_attempt_at", Value: ts(next)},
		{Key: "heartbeat_at", Value: ts(at)},
	}}})
}
