package store_test

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/store"
)

// Benchmark sizes: a fleet of benchSites sites with benchTargets targets
// each, and a history of finished jobs, each with benchEventsPerJob events.
const (
	benchSites        = 100
	benchTargets      = 3
	benchEventsPerJob = 10
	seedBatch         = 500
)

// BenchmarkJobPath measures each store operation of the job path against
// the real embedded FerretDB, with 100 and with 10,000 finished jobs (and
// their event documents) already stored. Run it with a fixed count, e.g.
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench JobPath -benchtime 40x ./store/
//
// Every sub-benchmark removes what it created, so the history stays at
// its size while it is measured. "Job" is one whole backup job of a site
// with three targets (16 store operations, see docs/store-budget.md).
// HistoryPass1 runs last: it deletes one job per iteration (at most 100).
func BenchmarkJobPath(b *testing.B) {
	for _, history := range []int{100, 10000} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			benchJobPath(b, history, true)
		})
	}
}

// BenchmarkBaselineNoIDIndex is BenchmarkJobPath on FerretDB as it comes,
// without the SQLite index on its _id lookups (embedded.Store.IndexIDs):
// what the job path costs when every lookup reads the whole collection.
// It is slow at 10,000 jobs (minutes at -benchtime 20x).
func BenchmarkBaselineNoIDIndex(b *testing.B) {
	for _, history := range []int{100, 10000} {
		b.Run(fmt.Sprintf("history=%d", history), func(b *testing.B) {
			benchJobPath(b, history, false)
		})
	}
}

// openBenchEnv starts an embedded store (its _id lookups indexed when
// idIndex) and opens a store and a raw client on it.
func openBenchEnv(b *testing.B, idIndex bool) *benchEnv {
	ctx := context.Background()
	dir := b.TempDir()
	srv, err := embedded.StartStore(ctx, embedded.StoreOptions{Dir: dir, Listen: "127.0.0.1:0", IndexEvery: -1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Close)
	st, err := store.Open(ctx, srv.URI())
	if err != nil {
		b.Fatal(err)
	}
	if idIndex {
		if _, err := srv.IndexIDs(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() { _ = st.Close(ctx) })
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI()).SetMaxPoolSize(1))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = client.Disconnect(ctx) })
	return &benchEnv{st: st, raw: client.Database(store.DefaultDatabase), now: time.Now(), dir: dir}
}

type benchEnv struct {
	st  *store.Store
	raw *mongo.Database // to seed and clean up around the measured calls
	now time.Time
	seq int    // for job ids that must not repeat
	dir string // the store's files
}

// size is the bytes of the store's files.
func (e *benchEnv) size(b *testing.B) int64 {
	var n int64
	err := filepath.WalkDir(e.dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

func benchJobPath(b *testing.B, history int, idIndex bool) {
	ctx := context.Background()
	env := openBenchEnv(b, idIndex)
	st := env.st

	start := time.Now()
	env.seed(b, ctx, history)
	b.Logf("seeded %d sites, %d targets, %d jobs with events in %s", benchSites, benchSites*benchTargets, history, time.Since(start).Round(time.Millisecond))

	// One running job that the update benchmarks work on.
	active := job("active", siteID(0), domain.JobBackup, env.now)
	if err := st.InsertJob(ctx, active); err != nil {
		b.Fatal(err)
	}

	run := func(name string, f func(b *testing.B, i int), cleanup func(b *testing.B, n int)) {
		b.Run(name, func(b *testing.B) {
			b.ResetTimer()
			for i := range b.N {
				f(b, i)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
			if cleanup != nil {
				cleanup(b, b.N)
			}
		})
	}
	check := func(b *testing.B, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	newID := func(prefix string, i int) string { return fmt.Sprintf("%s-%06d", prefix, i) }

	run("InsertJob", func(b *testing.B, i int) {
		check(b, st.InsertJob(ctx, job(newID("new", i), siteID(i), domain.JobBackup, env.now)))
	}, func(b *testing.B, n int) {
		env.deletePrefix(b, "jobs", "new-", n)
		env.deletePrefix(b, "jobs_history", "new-", n)
	})
	run("GetJob", func(b *testing.B, i int) {
		_, err := st.GetJob(ctx, histID(i*7919%history))
		check(b, err)
	}, nil)
	run("StartJob", func(b *testing.B, i int) {
		check(b, st.StartJob(ctx, "active", "worker-1", 1, env.now))
	}, nil)
	run("HeartbeatJob", func(b *testing.B, i int) {
		check(b, st.HeartbeatJob(ctx, "active", env.now.Add(time.Duration(i)*time.Second)))
	}, nil)
	run("AppendEvents5", func(b *testing.B, i int) {
		// Four batches per job: the first creates the document, the
		// others push onto it, as a job's steps do.
		evs := make([]domain.JobEvent, 5)
		for k := range evs {
			evs[k] = benchEvent(i%4*5+k+1, "")
		}
		check(b, st.AppendEvents(ctx, newID("ev", i/4), evs...))
	}, func(b *testing.B, n int) { env.deletePrefix(b, "job_events", "ev-", n/4+1) })
	// A long job: its event bucket already holds 90 events (a bucket holds
	// up to 100 by default); the 5 appended stay in it.
	full := make([]domain.JobEvent, 90)
	for k := range full {
		full[k] = benchEvent(k+1, "")
	}
	run("AppendEvents5To90", func(b *testing.B, i int) {
		b.StopTimer()
		id := newID("full", i)
		if _, err := env.raw.Collection("job_events").InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "job_id", Value: id}, {Key: "events", Value: full}}); err != nil {
			b.Fatal(err)
		}
		evs := make([]domain.JobEvent, 5)
		for k := range evs {
			evs[k] = benchEvent(91+k, "")
		}
		b.StartTimer()
		check(b, st.AppendEvents(ctx, id, evs...))
	}, func(b *testing.B, n int) { env.deletePrefix(b, "job_events", "full-", n) })
	run("FinishJob", func(b *testing.B, i int) {
		// A running job of its own each time: FinishJob moves it to the
		// history (one update, the history copy, 8 index writes, one
		// delete).
		b.StopTimer()
		env.seq++ // ids stay taken: unique across the runs of b.N
		id := newID("fin", env.seq)
		check(b, st.InsertJob(ctx, job(id, siteID(i), domain.JobBackup, env.now)))
		check(b, st.StartJob(ctx, id, "worker-1", 1, env.now))
		b.StartTimer()
		check(b, st.FinishJob(ctx, id, domain.StatusSuccess, "", benchSummary(), env.now))
	}, nil) // they stay in the history: a few more finished jobs
	run("ListJobs50", func(b *testing.B, i int) {
		jobs, err := st.ListJobs(ctx, store.JobFilter{Limit: 50})
		check(b, err)
		if len(jobs) != 50 {
			b.Fatalf("%d jobs", len(jobs))
		}
	}, nil)
	run("ListJobsSite20", func(b *testing.B, i int) {
		_, err := st.ListJobs(ctx, store.JobFilter{SiteUUID: siteID(i), Limit: 20})
		check(b, err)
	}, nil)
	run("ActiveJobs", func(b *testing.B, i int) {
		_, err := st.ActiveJobs(ctx, "")
		check(b, err)
	}, nil)
	run("ListEvents", func(b *testing.B, i int) {
		evs, err := st.ListEvents(ctx, histID(i*7919%history))
		check(b, err)
		if len(evs) != benchEventsPerJob {
			b.Fatalf("%d events", len(evs))
		}
	}, nil)
	run("GetSite", func(b *testing.B, i int) {
		_, err := st.GetSite(ctx, siteID(i))
		check(b, err)
	}, nil)
	run("ListTargets", func(b *testing.B, i int) {
		tg, err := st.ListTargets(ctx, siteID(i))
		check(b, err)
		if len(tg) != benchTargets {
			b.Fatalf("%d targets", len(tg))
		}
	}, nil)
	run("SetTargetScan", func(b *testing.B, i int) {
		check(b, st.SetTargetScans(ctx, siteID(i), map[string]domain.Scan{targetHash(0): {At: env.now, Status: domain.HealthSuccess, Bytes: 1 << 30, Files: 5000}}))
	}, nil)
	run("PutSiteStatus", func(b *testing.B, i int) {
		check(b, st.PutSiteStatus(ctx, domain.SiteStatus{SiteUUID: siteID(i), Health: domain.HealthState{Status: domain.HealthSuccess, UpdatedAt: env.now}, LastJobID: "x"}))
	}, nil)
	run("Job", func(b *testing.B, i int) {
		env.seq++
		env.oneJob(b, ctx, newID("job", env.seq), siteID(i))
	}, nil) // they stay in the history, as finished jobs do
	// Last, as it shrinks the history: one history pass that finds and
	// deletes the oldest remaining job with its events.
	deletedSoFar := 0
	run("HistoryPass1", func(b *testing.B, i int) {
		if deletedSoFar >= history {
			b.Fatal("history exhausted; use a smaller -benchtime")
		}
		oldest := env.now.Add(-time.Duration(history-deletedSoFar) * time.Hour)
		n, err := st.DeleteFinishedJobsBefore(ctx, oldest.Add(time.Hour))
		check(b, err)
		if n != 1 {
			b.Fatalf("deleted %d jobs, want 1", n)
		}
		deletedSoFar++
	}, nil)
}

// BenchmarkHistoryPass200k measures one step of the history pass
// (store.PurgeHistory with its default limit of 500 jobs, the scheduler's
// share of a pass per tick) over 200,000 finished jobs, each with a
// 10-event job_events document. Seeding takes a few minutes; run with
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench HistoryPass200k -benchtime 20x -timeout 30m ./store/
//
// Each step deletes the 500 oldest jobs left.
func BenchmarkHistoryPass200k(b *testing.B) {
	const (
		history = 200000
		step    = 500
	)
	ctx := context.Background()
	env := openBenchEnv(b, true)
	start := time.Now()
	env.seed(b, ctx, history)
	b.Logf("seeded %d sites, %d targets, %d jobs with events in %s; the store's files: %d MB", benchSites, benchSites*benchTargets, history, time.Since(start).Round(time.Millisecond), env.size(b)>>20)
	deleted := 0
	b.Run("step500", func(b *testing.B) {
		for range b.N {
			if deleted+step > history {
				b.Fatal("history exhausted; use a smaller -benchtime")
			}
			// Jobs 0 .. deleted+step-1 finished before the cutoff.
			cutoff := env.now.Add(-time.Duration(history-deleted-step) * time.Hour)
			res, err := env.st.PurgeHistory(ctx, cutoff, step)
			if err != nil {
				b.Fatal(err)
			}
			if res.Jobs != step || res.EventDocs != step {
				b.Fatalf("step deleted %+v, want %d jobs and event documents", res, step)
			}
			deleted += step
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/step")
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N*step), "ms/job")
	})
}

// oneJob is the store side of one backup job of a site with three
// targets: the API inserts it; the worker reads it, the site and its
// targets, starts it, writes four event batches, two heartbeats, one scan
// per target, finishes it and writes the site status. 16 operations.
func (e *benchEnv) oneJob(b *testing.B, ctx context.Context, id, site string) {
	st := e.st
	steps := []func() error{
		func() error { return st.InsertJob(ctx, job(id, site, domain.JobBackup, e.now)) },
		func() error { _, err := st.GetJob(ctx, id); return err },
		func() error { _, err := st.GetSite(ctx, site); return err },
		func() error { _, err := st.ListTargets(ctx, site); return err },
		func() error { return st.StartJob(ctx, id, "worker-1", 1, e.now) },
	}
	for batch := range 4 {
		steps = append(steps, func() error {
			evs := make([]domain.JobEvent, 5)
			for k := range evs {
				evs[k] = benchEvent(batch*5+k+1, targetHash(batch%benchTargets))
			}
			return st.AppendEvents(ctx, id, evs...)
		})
		if batch%2 == 1 {
			steps = append(steps, func() error { return st.HeartbeatJob(ctx, id, e.now) })
		}
	}
	for t := range benchTargets {
		steps = append(steps, func() error {
			return st.SetTargetScans(ctx, site, map[string]domain.Scan{targetHash(t): {At: e.now, Status: domain.HealthSuccess, Bytes: 1 << 30, Files: 5000}})
		})
	}
	steps = append(steps,
		func() error { return st.FinishJob(ctx, id, domain.StatusSuccess, "", benchSummary(), e.now) },
		func() error {
			return st.PutSiteStatus(ctx, domain.SiteStatus{SiteUUID: site, Health: domain.HealthState{Status: domain.HealthSuccess, UpdatedAt: e.now}, LastJobID: id, LastSuccessAt: &e.now})
		},
	)
	if len(steps) != 16 {
		b.Fatalf("job has %d store operations, want 16", len(steps))
	}
	for _, f := range steps {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
}

func siteID(i int) string { return fmt.Sprintf("site-%04d", i%benchSites) }
func histID(i int) string { return fmt.Sprintf("hist-%06d", i) }
func targetHash(t int) string {
	return domain.TargetHash(domain.ModeDirectory, fmt.Sprintf("/srv/data%d", t))
}

func benchSummary() map[string]any {
	return map[string]any{
		"snapshot_id": "4f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19",
		"files_new":   int64(12), "files_changed": int64(3), "files_unmodified": int64(4986),
		"data_added": int64(1 << 20), "total_bytes_processed": int64(165 << 20),
		"targets_ok": int64(3), "targets_failed": int64(0), "duration_seconds": 2.61,
	}
}

func benchEvent(seq int, target string) domain.JobEvent {
	return domain.JobEvent{
		Seq: seq, TS: time.Now(), Step: "pull", Level: domain.LevelInfo, TargetHash: target,
		Message: "rsync finished: 5001 files, 165 MB, 0.35 s",
		Data:    map[string]any{"bytes": int64(165 << 20), "files": int64(5001)},
	}
}

// seed writes the fleet and the history with InsertMany in batches.
func (e *benchEnv) seed(b *testing.B, ctx context.Context, history int) {
	var docs []any
	flush := func(coll string) {
		if len(docs) == 0 {
			return
		}
		if _, err := e.raw.Collection(coll).InsertMany(ctx, docs); err != nil {
			b.Fatalf("seed %s: %v", coll, err)
		}
		docs = docs[:0]
	}
	for i := range benchSites {
		s := site(siteID(i), fmt.Sprintf("site %04d", i))
		docs = append(docs, s)
	}
	flush("sites")
	for i := range benchSites {
		for t := range benchTargets {
			docs = append(docs, domain.Target{
				ID: domain.TargetID(siteID(i), targetHash(t)), SiteUUID: siteID(i), TargetHash: targetHash(t),
				Mode: domain.ModeDirectory, Path: fmt.Sprintf("/srv/data%d", t), CreatedAt: e.now,
			})
		}
	}
	flush("site_targets")

	// The jobs as FinishJob leaves them: in the history and the index.
	jobs := make([]domain.Job, history)
	for i := range jobs {
		created := e.now.Add(-time.Duration(history-i) * time.Hour)
		fin := created.Add(3 * time.Second)
		jobs[i] = domain.Job{
			ID: histID(i), SiteUUID: siteID(i), Type: domain.JobBackup, Status: domain.StatusSuccess,
			Attempts: 1, CreatedAt: created, StartedAt: &created, FinishedAt: &fin, HeartbeatAt: &fin,
			Worker: "worker-1", Summary: benchSummary(),
		}
	}
	if err := e.st.ArchiveJobs(ctx, jobs); err != nil {
		b.Fatalf("seed jobs: %v", err)
	}
	for start := 0; start < history; start += seedBatch {
		end := min(start+seedBatch, history)
		for i := start; i < end; i++ {
			evs := make([]domain.JobEvent, benchEventsPerJob)
			for k := range evs {
				evs[k] = benchEvent(k+1, targetHash(k%benchTargets))
			}
			docs = append(docs, bson.D{{Key: "_id", Value: histID(i)}, {Key: "job_id", Value: histID(i)}, {Key: "events", Value: evs}})
		}
		flush("job_events")
	}
}

// deletePrefix removes the documents prefix-000000 .. prefix-(n-1).
func (e *benchEnv) deletePrefix(b *testing.B, coll, prefix string, n int) {
	ids := make(bson.A, 0, seedBatch)
	for i := 0; i < n; i++ {
		ids = append(ids, fmt.Sprintf("%s%06d", prefix, i))
		if len(ids) == seedBatch || i == n-1 {
			if _, err := e.raw.Collection(coll).DeleteMany(context.Background(), bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}}); err != nil {
				b.Fatal(err)
			}
			ids = ids[:0]
		}
	}
}
