package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

// Job list limits.
const (
	DefaultJobLimit = 50
	MaxJobLimit     = 500
)

// JobFilter selects jobs for ListJobs; empty fields match everything.
type JobFilter struct {
	SiteUUID string
	Type     domain.JobType
	Status   domain.JobStatus
	// Limit is the most jobs returned: 0 means 50, at most 500.
	Limit int
}

func normJob(j domain.Job) domain.Job {
	j.CreatedAt = ts(j.CreatedAt)
	j.StartedAt = tsp(j.StartedAt)
	j.FinishedAt = tsp(j.FinishedAt)
	j.HeartbeatAt = tsp(j.HeartbeatAt)
	j.NextAttemptAt = tsp(j.NextAttemptAt)
	return j
}

// InsertJob stores a new job; ErrConflict if its id exists.
func (s *Store) InsertJob(ctx context.Context, j domain.Job) error {
	if j.ID == "" {
		return errors.New("store: insert job: empty job_id")
	}
	_, err := s.jobs.InsertOne(ctx, normJob(j))
	return wrap("insert job "+j.ID, err)
}

// GetJob reads a job; ErrNotFound if there is none.
func (s *Store) GetJob(ctx context.Context, id string) (domain.Job, error) {
	var j domain.Job
	if err := s.jobs.FindOne(ctx, byID(id)).Decode(&j); err != nil {
		return domain.Job{}, wrap("get job "+id, err)
	}
	return j, nil
}

// ListJobs returns the newest jobs (by created_at, then job_id) that match f.
func (s *Store) ListJobs(ctx context.Context, f JobFilter) ([]domain.Job, error) {
	filter := bson.D{}
	if f.SiteUUID != "" {
		filter = append(filter, bson.E{Key: "site_uuid", Value: f.SiteUUID})
	}
	if f.Type != "" {
		filter = append(filter, bson.E{Key: "type", Value: f.Type})
	}
	if f.Status != "" {
		filter = append(filter, bson.E{Key: "status", Value: f.Status})
	}
	limit := f.Limit
	switch {
	case limit <= 0:
		limit = DefaultJobLimit
	case limit > MaxJobLimit:
		limit = MaxJobLimit
	}
	return s.findJobs(ctx, "list jobs", filter, options.Find().
		SetSort(bson.D{{Key: "created_at", Value: -1}, {Key: "_id", Value: -1}}).
		SetLimit(int64(limit)))
}

func (s *Store) findJobs(ctx context.Context, op string, filter bson.D, opts *options.FindOptionsBuilder) ([]domain.Job, error) {
	cur, err := s.jobs.Find(ctx, filter, opts)
	if err != nil {
		return nil, wrap(op, err)
	}
	out := []domain.Job{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// updateJob applies one update to one job; ErrNotFound if it is gone.
func (s *Store) updateJob(ctx context.Context, op, id string, update bson.D) error {
	res, err := s.jobs.UpdateOne(ctx, byID(id), update)
	if err != nil {
		return wrap(op+" "+id, err)
	}
	if res.MatchedCount == 0 {
		return fmt.Errorf("store: %s %s: %w", op, id, ErrNotFound)
	}
	return nil
}

// StartJob marks a job running by worker, for its attempts-th attempt, and
// clears what an earlier attempt left (error, finished_at, the step it
// reached).
func (s *Store) StartJob(ctx context.Context, id, worker string, attempts int, at time.Time) error {
	at = ts(at)
	return s.updateJob(ctx, "start job", id, bson.D{
		{Key: "$set", Value: bson.D{
			{Key: "status", Value: domain.StatusRunning},
			{Key: "started_at", Value: at},
			{Key: "heartbeat_at", Value: at},
			{Key: "attempts", Value: attempts},
			{Key: "worker", Value: worker},
		}},
		{Key: "$unset", Value: bson.D{
			{Key: "error", Value: ""},
			{Key: "finished_at", Value: ""},
			{Key: "next_attempt_at", Value: ""},
			{Key: "step", Value: ""},
		}},
	})
}

// HeartbeatJob records that the worker still works on the job.
func (s *Store) HeartbeatJob(ctx context.Context, id string, at time.Time) error {
	return s.updateJob(ctx, "heartbeat job", id, bson.D{
		{Key: "$set", Value: bson.D{{Key: "heartbeat_at", Value: ts(at)}}},
	})
}

// FinishJob records a job's final status (a terminal one), its error
// message and summary (each removed when empty), and when it finished.
func (s *Store) FinishJob(ctx context.Context, id string, status domain.JobStatus, errMsg string, summary map[string]any, at time.Time) error {
	if !status.Terminal() {
		return fmt.Errorf("store: finish job %s: status %q is not terminal", id, status)
	}
	at = ts(at)
	set := bson.D{
		{Key: "status", Value: status},
		{Key: "finished_at", Value: at},
		{Key: "heartbeat_at", Value: at},
	}
	unset := bson.D{}
	if errMsg != "" {
		set = append(set, bson.E{Key: "error", Value: errMsg})
	} else {
		unset = append(unset, bson.E{Key: "error", Value: ""})
	}
	if len(summary) > 0 {
		set = append(set, bson.E{Key: "summary", Value: summary})
	} else {
		unset = append(unset, bson.E{Key: "summary", Value: ""})
	}
	return s.updateJob(ctx, "finish job", id, bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: unset}})
}

// ActiveJobs returns the queued and running jobs of a site (all sites when
// siteUUID is ""), oldest first.
func (s *Store) ActiveJobs(ctx context.Context, siteUUID string) ([]domain.Job, error) {
	filter := bson.D{}
	if siteUUID != "" {
		filter = append(filter, bson.E{Key: "site_uuid", Value: siteUUID})
	}
	filter = append(filter, bson.E{Key: "status", Value: bson.D{{Key: "$in", Value: bson.A{domain.StatusQueued, domain.StatusRunning}}}})
	return s.findJobs(ctx, "active jobs", filter, options.Find().
		SetSort(bson.D{{Key: "created_at", Value: 1}, {Key: "_id", Value: 1}}))
}

// DeleteFinishedJobsBefore is the history pass: it deletes the jobs that
// finished before t, with their events, and returns how many jobs it
// deleted.
//
// It reads the ids in one query, then deletes each job by _id: a job's
// event buckets first, the job last, so an interrupted pass leaves no
// orphan events and the next pass finishes the work. Deleting by _id
// keeps every write a short indexed lookup on the embedded store (a
// DeleteMany with $in would read the whole collection per call, holding
// the one shared connection meanwhile).
func (s *Store) DeleteFinishedJobsBefore(ctx context.Context, t time.Time) (int, error) {
	cur, err := s.jobs.Find(ctx, bson.D{
		{Key: "finished_at", Value: bson.D{{Key: "$lt", Value: ts(t)}}},
		{Key: "status", Value: bson.D{{Key: "$nin", Value: bson.A{domain.StatusQueued, domain.StatusRunning}}}},
	}, options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}))
	if err != nil {
		return 0, wrap("delete finished jobs", err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return 0, wrap("delete finished jobs", err)
	}
	deleted := 0
	for _, d := range docs {
		if err := s.deleteEvents(ctx, d.ID); err != nil {
			return deleted, wrap("delete finished jobs: events of job "+d.ID, err)
		}
		res, err := s.jobs.DeleteOne(ctx, byID(d.ID))
		if err != nil {
			return deleted, wrap("delete finished jobs: job "+d.ID, err)
		}
		deleted += int(res.DeletedCount)
	}
	return deleted, nil
}
