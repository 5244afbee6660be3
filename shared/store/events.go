package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
)

// A job's events live in job_events documents ("buckets"). Bucket 0 has
// _id = job_id and holds the events with seq below eventsPerBucket (100
// by default), which is every event of an ordinary job, so reading them
// is one lookup by _id. Bucket b > 0 (_id "<job_id>#<b>") holds seq in
// [b*n, (b+1)*n); bucket 0's last_bucket says how far they go. Every bucket
// also carries job_id, for queries by job.
type eventBucket struct {
	ID         string            `bson:"_id"`
	JobID      string            `bson:"job_id"`
	LastBucket int               `bson:"last_bucket,omitempty"`
	Events     []domain.JobEvent `bson:"events"`
}

func bucketID(jobID string, b int) string {
	if b == 0 {
		return jobID
	}
	return jobID + "#" + strconv.Itoa(b)
}

// AppendEvents appends a batch of events to a job's record, in order. A
// batch within one bucket (the usual case) is one write: $push with $each
// and upsert. Only the worker holding the job writes its events.
func (s *Store) AppendEvents(ctx context.Context, jobID string, evs ...domain.JobEvent) error {
	if jobID == "" {
		return errors.New("store: append events: empty job_id")
	}
	if len(evs) == 0 {
		return nil
	}
	// Group by bucket, keeping the order within each.
	byBucket := map[int][]domain.JobEvent{}
	maxB := 0
	for _, ev := range evs {
		b := max(ev.Seq, 0) / s.eventsPerBucket
		ev.TS = ts(ev.TS)
		byBucket[b] = append(byBucket[b], ev)
		maxB = max(maxB, b)
	}
	// Bucket 0 first: it carries the marker of the last bucket, which is
	// written before the bucket it points to, so a reader never misses
	// a written bucket (a marked bucket that is missing reads as empty).
	for b := 0; b <= maxB; b++ {
		batch, ok := byBucket[b]
		if !ok && !(b == 0 && maxB > 0) {
			continue
		}
		update := bson.D{{Key: "$set", Value: bson.D{{Key: "job_id", Value: jobID}}}}
		if len(batch) > 0 {
			update = append(update, bson.E{Key: "$push", Value: bson.D{{Key: "events", Value: bson.D{{Key: "$each", Value: batch}}}}})
		}
		if b == 0 && maxB > 0 {
			update = append(update, bson.E{Key: "$max", Value: bson.D{{Key: "last_bucket", Value: maxB}}})
		}
		_, err := s.events.UpdateOne(ctx, byID(bucketID(jobID, b)), update, options.UpdateOne().SetUpsert(true))
		if err != nil {
			return wrap(fmt.Sprintf("append %d events to job %s", len(evs), jobID), err)
		}
	}
	return nil
}

// ListEvents returns a job's events in the order they were appended ([]
// when there are none, also for an unknown job).
func (s *Store) ListEvents(ctx context.Context, jobID string) ([]domain.JobEvent, error) {
	out := []domain.JobEvent{}
	var first eventBucket
	err := s.events.FindOne(ctx, byID(jobID)).Decode(&first)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return out, nil
	}
	if err != nil {
		return nil, wrap("list events of job "+jobID, err)
	}
	out = append(out, first.Events...)
	for b := 1; b <= first.LastBucket; b++ {
		var more eventBucket
		err := s.events.FindOne(ctx, byID(bucketID(jobID, b))).Decode(&more)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue
		}
		if err != nil {
			return nil, wrap("list events of job "+jobID, err)
		}
		out = append(out, more.Events...)
	}
	return out, nil
}

// deleteEvents removes every event bucket of a job and returns how many
// documents it removed. Bucket 0 goes first, in one findAndModify that
// also says how many buckets there are (a read and a delete cost the same
// on the embedded store); when it is missing, the buckets after it are
// still looked for, so a deletion cut short leaves nothing behind.
func (s *Store) deleteEvents(ctx context.Context, jobID string) (int, error) {
	var first struct {
		LastBucket int `bson:"last_bucket"`
	}
	n := 0
	err := s.events.FindOneAndDelete(ctx, byID(jobID)).Decode(&first)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments):
		for b := 1; ; b++ {
			res, err := s.events.DeleteOne(ctx, byID(bucketID(jobID, b)))
			if err != nil {
				return n, err
			}
			if res.DeletedCount == 0 {
				return n, nil
			}
			n++
		}
	case err != nil:
		return 0, err
	}
	n++
	for b := 1; b <= first.LastBucket; b++ {
		res, err := s.events.DeleteOne(ctx, byID(bucketID(jobID, b)))
		if err != nil {
			return n, err
		}
		n += int(res.DeletedCount)
	}
	return n, nil
}
