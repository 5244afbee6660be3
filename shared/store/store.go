// Package store keeps Satoru's documents in MongoDB through the official
// driver: sites, their status and targets, jobs, job events and the
// offsite sync state.
//
// The same code runs against MongoDB and against the embedded FerretDB v1
// (SQLite) store, so it keeps to what both do well (see DESIGN.md, "Living
// with the embedded store"):
//
//   - natural _id keys (site_uuid, site_uuid/target_hash, job_id) and
//     point lookups by _id, which FerretDB pushes down to SQLite (and the
//     embedded store indexes: embedded.Store.IndexIDs); other filters
//     read the whole collection there;
//   - one writer per document and no transactions: FerretDB's updates are
//     read-modify-write, so Open uses ONE connection by default and every
//     service in a process shares that *Store;
//   - few queries with small results, sorting and aggregation in Go or on
//     small sets, no $lookup, no TTL indexes (PurgeHistory is the history
//     pass);
//   - no collection that a hot path reads grows with the history: "jobs"
//     holds the open jobs only, finished ones move to "jobs_history" and
//     are listed through the bounded buckets of "job_index" (history.go).
//
// Times are stored in UTC truncated to milliseconds (BSON precision), so a
// value read back compares equal to the value written.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// Sentinel errors; every error the store returns wraps the operation.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// DefaultDatabase is the database Open uses unless WithDatabase says otherwise.
const DefaultDatabase = "satoru"

// DefaultEventsPerBucket bounds a job_events document. FerretDB rewrites
// the whole document on every append: ~3 ms with 20 events, ~80 ms with
// 500 (docs/store-budget.md).
const DefaultEventsPerBucket = 100

// DefaultIndexBucket bounds a job_index bucket document (history.go):
// FerretDB rewrites the whole document on every append (~5 ms at 50
// entries, docs/store-budget.md).
const DefaultIndexBucket = 50

// Collection names.
const (
	collSites       = "sites"
	collSiteStatus  = "site_status"
	collTargets     = "site_targets"
	collJobs        = "jobs"
	collJobsHistory = "jobs_history"
	collJobIndex    = "job_index"
	collJobEvents   = "job_events"
	collSyncState   = "sync_state"
	collCheckState  = "check_state"
)

// Store is a client of the satoru database. It is safe for concurrent use;
// share one per process.
type Store struct {
	client *mongo.Client
	db     *mongo.Database

	sites, siteStatus, targets, jobs, history, index, events, syncState *mongo.Collection
	checkState                                                          *mongo.Collection

	eventsPerBucket int
	indexBucket     int64
}

type config struct {
	database        string
	maxPoolSize     int
	eventsPerBucket int
	indexBucket     int
}

// Option changes how Open connects.
type Option func(*config)

// WithDatabase uses the named database instead of "satoru".
func WithDatabase(name string) Option { return func(c *config) { c.database = name } }

// WithMaxPoolSize allows n connections (default 1). Raise it only against
// real MongoDB: FerretDB loses concurrent updates made over different
// connections.
func WithMaxPoolSize(n int) Option { return func(c *config) { c.maxPoolSize = n } }

// WithEventsPerBucket sets how many events one job_events document holds
// before the next ones go to a new bucket document (default 100).
func WithEventsPerBucket(n int) Option { return func(c *config) { c.eventsPerBucket = n } }

// WithIndexBucket sets how many finished jobs one job_index bucket
// document lists (default 50); tests use small buckets.
func WithIndexBucket(n int) Option { return func(c *config) { c.indexBucket = n } }

// Open connects to uri, pings the server and ensures the indexes.
func Open(ctx context.Context, uri string, opts ...Option) (*Store, error) {
	cfg := config{database: DefaultDatabase, maxPoolSize: 1, eventsPerBucket: DefaultEventsPerBucket, indexBucket: DefaultIndexBucket}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.database == "" {
		return nil, errors.New("store: open: empty database name")
	}
	if cfg.maxPoolSize < 1 {
		cfg.maxPoolSize = 1
	}
	if cfg.eventsPerBucket < 1 {
		cfg.eventsPerBucket = DefaultEventsPerBucket
	}
	if cfg.indexBucket < 1 {
		cfg.indexBucket = DefaultIndexBucket
	}
	client, err := mongo.Connect(options.Client().
		ApplyURI(uri).
		SetAppName("satoru").
		SetMaxPoolSize(uint64(cfg.maxPoolSize)).
		// Nested documents (summary, event data) decode as maps, which
		// encode to JSON as objects.
		SetBSONOptions(&options.BSONOptions{DefaultDocumentM: true}))
	if err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	db := client.Database(cfg.database)
	s := &Store{
		client:          client,
		db:              db,
		sites:           db.Collection(collSites),
		siteStatus:      db.Collection(collSiteStatus),
		targets:         db.Collection(collTargets),
		jobs:            db.Collection(collJobs),
		history:         db.Collection(collJobsHistory),
		index:           db.Collection(collJobIndex),
		events:          db.Collection(collJobEvents),
		syncState:       db.Collection(collSyncState),
		checkState:      db.Collection(collCheckState),
		eventsPerBucket: cfg.eventsPerBucket,
		indexBucket:     int64(cfg.indexBucket),
	}
	if err := s.Ping(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := s.ensureCollections(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := s.ensureIndexes(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("store: open: %w", err)
	}
	if err := s.ensureAccess(ctx); err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("store: open: %w", err)
	}
	return s, nil
}

// Close disconnects.
func (s *Store) Close(ctx context.Context) error {
	if err := s.client.Disconnect(ctx); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Ping checks that the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// ensureCollections creates the collections that do not exist yet, so
// that all exist once Open returns (the embedded store indexes the _id
// lookups of existing collections: embedded.Store.IndexIDs).
func (s *Store) ensureCollections(ctx context.Context) error {
	names, err := s.db.ListCollectionNames(ctx, bson.D{})
	if err != nil {
		return fmt.Errorf("list collections: %w", err)
	}
	have := make(map[string]bool, len(names))
	for _, n := range names {
		have[n] = true
	}
	for _, n := range []string{collSites, collSiteStatus, collTargets, collJobs, collJobsHistory, collJobIndex, collJobEvents, collSyncState, collCheckState} {
		if have[n] {
			continue
		}
		err := s.db.CreateCollection(ctx, n)
		var ce mongo.CommandError
		if errors.As(err, &ce) && ce.Code == 48 { // NamespaceExists: another process made it
			err = nil
		}
		if err != nil {
			return fmt.Errorf("create collection %s: %w", n, err)
		}
	}
	return nil
}

func (s *Store) ensureIndexes(ctx context.Context) error {
	all := []struct {
		coll   *mongo.Collection
		models []mongo.IndexModel
	}{
		{s.sites, []mongo.IndexModel{
			{Keys: bson.D{{Key: "name", Value: 1}}, Options: options.Index().SetUnique(true).SetName("name_unique")},
		}},
		{s.targets, []mongo.IndexModel{
			{Keys: bson.D{{Key: "site_uuid", Value: 1}}},
		}},
		{s.jobs, []mongo.IndexModel{
			{Keys: bson.D{{Key: "site_uuid", Value: 1}, {Key: "created_at", Value: -1}}},
			{Keys: bson.D{{Key: "status", Value: 1}}},
			{Keys: bson.D{{Key: "created_at", Value: -1}}},
		}},
	}
	// One index per command: FerretDB v1.24.2's createIndexes panics
	// (slice bounds out of range, the connection drops) when a command
	// lists two or more indexes that already exist, i.e. on every Open
	// after the first with CreateMany.
	for _, a := range all {
		for _, m := range a.models {
			if _, err := a.coll.Indexes().CreateOne(ctx, m); err != nil {
				return fmt.Errorf("indexes of %s: %w", a.coll.Name(), err)
			}
		}
	}
	return nil
}

// isConflict reports a unique-index violation. FerretDB v1 reports one on
// insert as a duplicate key error (E11000) but one caused by an update or
// replace as an InternalError carrying SQLite's message.
func isConflict(err error) bool {
	return mongo.IsDuplicateKeyError(err) ||
		(err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed"))
}

// wrap adds the operation and maps driver errors to the sentinels.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, mongo.ErrNoDocuments):
		return fmt.Errorf("store: %s: %w", op, ErrNotFound)
	case isConflict(err):
		return fmt.Errorf("store: %s: %w: %w", op, ErrConflict, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// ts normalises a time to what BSON keeps: UTC, milliseconds.
func ts(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Millisecond)
}

func tsp(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := ts(*t)
	return &v
}

func byID(id string) bson.D { return bson.D{{Key: "_id", Value: id}} }
