package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
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

// InsertJob stores a new job; ErrConflict if its id was ever used (see
// InsertJobs).
func (s *Store) InsertJob(ctx context.Context, j domain.Job) error {
	if err := checkJobIDs(j); err != nil {
		return fmt.Errorf("store: insert job: %w", err)
	}
	done, err := s.insertJobs(ctx, []domain.Job{j}, []any{normJob(j)})
	if err != nil {
		return wrap("insert job "+j.ID, err)
	}
	if !done[0] {
		return fmt.Errorf("store: insert job %s: %w", j.ID, ErrConflict)
	}
	return nil
}

// GetJob reads a job, open or finished; ErrNotFound if there is none. An
// open job is read from "jobs", a finished one from the history (which
// it enters before it leaves "jobs").
func (s *Store) GetJob(ctx context.Context, id string) (domain.Job, error) {
	var j domain.Job
	err := s.jobs.FindOne(ctx, byID(id)).Decode(&j)
	if err == nil {
		return j, nil
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return domain.Job{}, wrap("get job "+id, err)
	}
	h, err := s.historyJob(ctx, id)
	switch {
	case err != nil:
		return domain.Job{}, wrap("get job "+id, err)
	case h == nil:
		return domain.Job{}, fmt.Errorf("store: get job %s: %w", id, ErrNotFound)
	}
	return *h, nil
}

// ListJobs returns the newest jobs (by created_at, then job_id) that match
// f: the open ones from "jobs", the finished ones through the job index
// (history.go), so that it reads a bounded number of documents however
// long the history is.
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
	open, err := s.findJobs(ctx, "list jobs", filter, options.Find().
		SetSort(bson.D{{Key: "created_at", Value: -1}, {Key: "_id", Value: -1}}).
		SetLimit(int64(limit)))
	if err != nil || f.Status == domain.StatusQueued || f.Status == domain.StatusRunning {
		return open, err
	}
	out, err := s.listFinished(ctx, f, limit, open)
	return out, wrap("list jobs", err)
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

// updateJob applies one update to one job; ErrNotFound if there is none.
// A job that is no longer open is updated in the history; with reopen
// (the update makes it queued or running again) it is moved back to the
// open jobs, its history copy updated alike, so that the index entries of
// its earlier outcome no longer match it.
func (s *Store) updateJob(ctx context.Context, op, id string, reopen bool, update bson.D) error {
	res, err := s.jobs.UpdateOne(ctx, byID(id), update)
	if err != nil {
		return wrap(op+" "+id, err)
	}
	if res.MatchedCount > 0 {
		return nil
	}
	if !reopen {
		res, err := s.history.UpdateOne(ctx, byID(id), update)
		if err != nil {
			return wrap(op+" "+id, err)
		}
		if res.MatchedCount == 0 {
			return fmt.Errorf("store: %s %s: %w", op, id, ErrNotFound)
		}
		return nil
	}
	var doc bson.Raw
	err = s.history.FindOneAndUpdate(ctx, byID(id), update, options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&doc)
	if err != nil {
		return wrap(op+" "+id, err)
	}
	if _, err := s.jobs.InsertOne(ctx, doc); err != nil {
		return wrap(op+" "+id+": reopen", err)
	}
	return nil
}

// StartJob marks a job running by worker, for its attempts-th attempt, and
// clears what an earlier attempt left (error, finished_at, the step it
// reached).
func (s *Store) StartJob(ctx context.Context, id, worker string, attempts int, at time.Time) error {
	at = ts(at)
	return s.updateJob(ctx, "start job", id, true, bson.D{
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
			{Key: "handed_off_at", Value: ""},
			// A new attempt pulls again: the last one's pulled targets and
			// where they were staged no longer describe this attempt.
			{Key: "targets", Value: ""},
			{Key: "hand_off", Value: ""},
		}},
	})
}

// HeartbeatJob records that the worker still works on the job.
func (s *Store) HeartbeatJob(ctx context.Context, id string, at time.Time) error {
	return s.updateJob(ctx, "heartbeat job", id, false, bson.D{
		{Key: "$set", Value: bson.D{{Key: "heartbeat_at", Value: ts(at)}}},
	})
}

// FinishJob records a job's final status (a terminal one), its error
// message and summary (each removed when empty), and when it finished,
// then moves the job to the history (archive). An error after the status
// was written leaves the finished job in "jobs", where readers see it
// and the history pass archives it.
func (s *Store) FinishJob(ctx context.Context, id string, status domain.JobStatus, errMsg string, summary map[string]any, at time.Time) error {
	return s.FinishJobTargets(ctx, id, status, errMsg, summary, nil, at)
}

// FinishJobTargets is FinishJob that also records the job's per-target
// results (when not nil) in the same write.
func (s *Store) FinishJobTargets(ctx context.Context, id string, status domain.JobStatus, errMsg string, summary map[string]any, targets []domain.TargetRun, at time.Time) error {
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
	if targets != nil {
		set = append(set, bson.E{Key: "targets", Value: targets})
	}
	update := bson.D{{Key: "$set", Value: set}, {Key: "$unset", Value: unset}}
	after := options.FindOneAndUpdate().SetReturnDocument(options.After)
	var j domain.Job
	err := s.jobs.FindOneAndUpdate(ctx, byID(id), update, after).Decode(&j)
	if err == nil {
		return wrap("finish job "+id, s.archive(ctx, j))
	}
	if !errors.Is(err, mongo.ErrNoDocuments) {
		return wrap("finish job "+id, err)
	}
	// Not open: finished before. Its history copy takes the new outcome,
	// and the index lists it again (a listing takes the latest entry).
	if err := s.history.FindOneAndUpdate(ctx, byID(id), update, after).Decode(&j); err != nil {
		return wrap("finish job "+id, err)
	}
	return wrap("finish job "+id, s.appendIndex(ctx, []indexEntry{entryOf(j)}))
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
