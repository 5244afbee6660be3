package store

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The scheduler's next-run times live in the collection "schedules", one
// document per (kind, site) with a natural _id (ScheduleID), so a
// restarted scheduler neither fires a run twice nor forgets one. Only the
// scheduler writes it (the leader, see services/scheduler).
const collSchedules = "schedules"

// Schedule kinds.
const (
	ScheduleBackup    = "backup"    // per site, every site_scan_interval_hours
	ScheduleRetention = "retention" // per site, after its backups
	ScheduleSync      = "sync"      // the repository's offsite copy
	ScheduleCheck     = "check"     // the repository check (restic check)
	ScheduleVerify    = "verify"    // per site, every verify_interval_hours
)

// ScheduleID is the _id of a schedule: "<kind>:<site_uuid>", or the kind
// alone for a repository-level schedule (siteUUID "").
func ScheduleID(kind, siteUUID string) string {
	if siteUUID == "" {
		return kind
	}
	return kind + ":" + siteUUID
}

// Schedule is when the scheduler next queues one kind of job for a site
// (or for the repository), and what it queued last.
type Schedule struct {
	ID       string `bson:"_id" json:"id"`
	Kind     string `bson:"kind" json:"kind"`
	SiteUUID string `bson:"site_uuid,omitempty" json:"site_uuid,omitempty"`
	// IntervalSeconds is the interval NextRunAt was computed with; a
	// changed configuration shows as a different value.
	IntervalSeconds int64 `bson:"interval_seconds" json:"interval_seconds"`
	// Spec is the site's cron schedule ("<5 fields> <zone>") NextRunAt
	// was computed with, "" for an interval; a changed policy shows as a
	// different value.
	Spec string `bson:"spec,omitempty" json:"spec,omitempty"`
	// NextRunAt is when the next run is due. Writers compare and set it
	// (SwapSchedules).
	NextRunAt time.Time `bson:"next_run_at" json:"next_run_at"`
	// LastDueAt is when the last queued run was due, LastRunAt when it
	// was queued, LastJobID its job.
	LastDueAt *time.Time `bson:"last_due_at,omitempty" json:"last_due_at,omitempty"`
	LastRunAt *time.Time `bson:"last_run_at,omitempty" json:"last_run_at,omitempty"`
	LastJobID string     `bson:"last_job_id,omitempty" json:"last_job_id,omitempty"`
	UpdatedAt time.Time  `bson:"updated_at" json:"updated_at"`
}

// Interval is IntervalSeconds as a duration.
func (sc Schedule) Interval() time.Duration { return time.Duration(sc.IntervalSeconds) * time.Second }

func normSchedule(sc Schedule) Schedule {
	sc.NextRunAt = ts(sc.NextRunAt)
	sc.LastDueAt = tsp(sc.LastDueAt)
	sc.LastRunAt = tsp(sc.LastRunAt)
	sc.UpdatedAt = ts(sc.UpdatedAt)
	return sc
}

func (s *Store) schedules() *mongo.Collection { return s.db.Collection(collSchedules) }

// EnsureSchedules creates the schedules collection if it does not exist,
// so that the embedded store can index its _id lookups
// (embedded.Store.IndexIDs) before the first schedule is written.
func (s *Store) EnsureSchedules(ctx context.Context) error {
	names, err := s.db.ListCollectionNames(ctx, bson.D{{Key: "name", Value: collSchedules}})
	if err != nil {
		return wrap("ensure schedules", err)
	}
	if len(names) > 0 {
		return nil
	}
	err = s.db.CreateCollection(ctx, collSchedules)
	var ce mongo.CommandError
	if errors.As(err, &ce) && ce.Code == 48 { // NamespaceExists: made meanwhile
		err = nil
	}
	return wrap("ensure schedules", err)
}

// ListSchedules returns every schedule, sorted by _id. It reads the whole
// collection (one query): two documents per site plus one.
func (s *Store) ListSchedules(ctx context.Context) ([]Schedule, error) {
	cur, err := s.schedules().Find(ctx, bson.D{})
	if err != nil {
		return nil, wrap("list schedules", err)
	}
	out := []Schedule{}
	if err := cur.All(ctx, &out); err != nil {
		return nil, wrap("list schedules", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// InsertSchedules stores new schedules in one write and returns how many
// it inserted. A schedule whose _id exists is left as it is and is not an
// error (another scheduler made it first).
func (s *Store) InsertSchedules(ctx context.Context, scs []Schedule) (int, error) {
	if len(scs) == 0 {
		return 0, nil
	}
	docs := make([]any, len(scs))
	for i, sc := range scs {
		if sc.ID == "" {
			return 0, fmt.Errorf("store: insert schedules: schedule %d has no _id", i)
		}
		docs[i] = normSchedule(sc)
	}
	done, err := insertManyNew(ctx, s.schedules(), docs)
	n := 0
	for _, ok := range done {
		if ok {
			n++
		}
	}
	return n, wrap(fmt.Sprintf("insert %d schedules", len(scs)), err)
}

// ScheduleSwap replaces a schedule only if its next_run_at still equals
// Expect, the value its writer read.
type ScheduleSwap struct {
	Expect   time.Time
	Schedule Schedule
}

// SwapSchedules is a batch of compare-and-set writes: it replaces each
// schedule whose stored next_run_at still equals its swap's Expect, and
// reports which it replaced (swapped[i] for swaps[i]). A schedule that
// moved on, or is gone, is left as it is.
//
// It reads the stored next_run_at values, compares them in Go, then writes
// the matching schedules: up to pointWrites of them one replace by _id
// each (~1.5 ms apiece on the embedded store), more with one delete of
// them all and one insert (~0.5 s for 1,000 among 2,000 schedules instead
// of 1.5 s). The compare and the write are separate commands, so a writer
// can slip in between (on the embedded FerretDB even a single conditional
// update is a read followed by a write); the swap catches a writer that
// moved a schedule on since the caller read it, which is what the
// scheduler needs besides its leader lease. If the batch write is
// interrupted between its delete and its insert, the schedules are gone
// and the scheduler makes them anew.
//
// Why not one update per swap with the filter {_id, next_run_at}: FerretDB
// v1 pushes only a filter on _id alone down to SQLite and reads the whole
// collection for anything else, 0.15 ms per stored schedule per swap.
func (s *Store) SwapSchedules(ctx context.Context, swaps []ScheduleSwap) (swapped []bool, err error) {
	swapped = make([]bool, len(swaps))
	if len(swaps) == 0 {
		return swapped, nil
	}
	op := fmt.Sprintf("swap %d schedules", len(swaps))
	ids := make([]string, len(swaps))
	seen := make(map[string]bool, len(swaps))
	for i, sw := range swaps {
		id := sw.Schedule.ID
		if id == "" {
			return swapped, fmt.Errorf("store: %s: schedule %d has no _id", op, i)
		}
		if seen[id] {
			return swapped, fmt.Errorf("store: %s: schedule %s given twice", op, id)
		}
		seen[id] = true
		ids[i] = id
	}
	current, err := s.scheduleTimes(ctx, ids)
	if err != nil {
		return swapped, wrap(op, err)
	}
	var match []int
	for i, sw := range swaps {
		if cur, ok := current[sw.Schedule.ID]; ok && cur.Equal(ts(sw.Expect)) {
			match = append(match, i)
		}
	}
	switch {
	case len(match) == 0:
		return swapped, nil
	case len(match) <= pointWrites:
		err = s.replaceSchedules(ctx, swaps, match, swapped)
	default:
		err = s.rewriteSchedules(ctx, swaps, match, swapped)
	}
	return swapped, wrap(op, err)
}

// replaceSchedules replaces swaps[match...] one by one by _id, at most
// updateBatch replaces per command.
func (s *Store) replaceSchedules(ctx context.Context, swaps []ScheduleSwap, match []int, swapped []bool) error {
	var errs []error
	for start := 0; start < len(match); start += updateBatch {
		part := match[start:min(start+updateBatch, len(match))]
		models := make([]mongo.WriteModel, len(part))
		for k, i := range part {
			models[k] = mongo.NewReplaceOneModel().
				SetFilter(byID(swaps[i].Schedule.ID)).
				SetReplacement(normSchedule(swaps[i].Schedule))
		}
		_, err := s.schedules().BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		var bwe mongo.BulkWriteException
		switch {
		case err == nil:
			for _, i := range part {
				swapped[i] = true
			}
		case errors.As(err, &bwe) && bwe.WriteConcernError == nil:
			failed := map[int]bool{}
			for _, we := range bwe.WriteErrors {
				failed[we.Index] = true
			}
			for k, i := range part {
				swapped[i] = !failed[k]
			}
		}
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// rewriteSchedules replaces swaps[match...] with one delete and one
// insert. The delete takes only schedules still at one of the expected
// times, so one moved on meanwhile keeps its document and its insert is
// skipped as a duplicate.
func (s *Store) rewriteSchedules(ctx context.Context, swaps []ScheduleSwap, match []int, swapped []bool) error {
	ids := make(bson.A, len(match))
	times := make(bson.A, 0, len(match))
	seenT := map[time.Time]bool{}
	docs := make([]any, len(match))
	for k, i := range match {
		ids[k] = swaps[i].Schedule.ID
		if t := ts(swaps[i].Expect); !seenT[t] {
			seenT[t] = true
			times = append(times, t)
		}
		docs[k] = normSchedule(swaps[i].Schedule)
	}
	if _, err := s.schedules().DeleteMany(ctx, bson.D{
		{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}},
		{Key: "next_run_at", Value: bson.D{{Key: "$in", Value: times}}},
	}); err != nil {
		return err
	}
	done, err := insertManyNew(ctx, s.schedules(), docs)
	for k, i := range match {
		swapped[i] = done[k]
	}
	return err
}

// updateBatch is the most updates sent in one command. FerretDB v1 keeps
// the read cursor of every update statement of a command open until the
// command ends, and its SQLite pool has 100 connections: a command with
// about 100 updates or more waits forever.
const updateBatch = 50

// pointWrites is the most schedules SwapSchedules replaces one by one;
// pointReads the most whose stored times it reads one by one (about
// 0.6 ms each by _id). Beyond them one query that reads the whole
// collection (~0.1 ms per stored schedule on the embedded store) is
// cheaper.
const (
	pointWrites = 32
	pointReads  = 32
)

// scheduleTimes reads the next_run_at of the given schedules; missing ones
// are absent from the map.
func (s *Store) scheduleTimes(ctx context.Context, ids []string) (map[string]time.Time, error) {
	out := make(map[string]time.Time, len(ids))
	type doc struct {
		ID        string    `bson:"_id"`
		NextRunAt time.Time `bson:"next_run_at"`
	}
	proj := bson.D{{Key: "next_run_at", Value: 1}}
	if len(ids) <= pointReads {
		for _, id := range ids {
			var d doc
			err := s.schedules().FindOne(ctx, byID(id), options.FindOne().SetProjection(proj)).Decode(&d)
			if errors.Is(err, mongo.ErrNoDocuments) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out[d.ID] = d.NextRunAt
		}
		return out, nil
	}
	// Reading them all and picking in Go is cheaper on the embedded store
	// than {_id: {$in: ids}}, which it evaluates in Go per document and id.
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	cur, err := s.schedules().Find(ctx, bson.D{}, options.Find().SetProjection(proj))
	if err != nil {
		return nil, err
	}
	var docs []doc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	for _, d := range docs {
		if want[d.ID] {
			out[d.ID] = d.NextRunAt
		}
	}
	return out, nil
}

// DeleteSchedules removes schedules by _id (one write) and returns how
// many it removed; unknown ids are not an error.
func (s *Store) DeleteSchedules(ctx context.Context, ids ...string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	// One DeleteOne by _id per schedule, in one command: a DeleteMany
	// with $in would read the whole collection on the embedded store.
	models := make([]mongo.WriteModel, len(ids))
	for i, id := range ids {
		models[i] = mongo.NewDeleteOneModel().SetFilter(byID(id))
	}
	res, err := s.schedules().BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
	n := 0
	if res != nil {
		n = int(res.DeletedCount)
	}
	return n, wrap(fmt.Sprintf("delete %d schedules", len(ids)), err)
}
