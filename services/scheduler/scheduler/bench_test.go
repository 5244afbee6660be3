package scheduler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// Scale check (docs/scale.md): one tick that finds every one of 1,000
// sites due and queues a backup for each: 1,000 jobs written (one
// InsertMany), 1,000 requests published (async, acks awaited), 1,000
// schedules moved on. Run with
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench Tick1000Sites -benchtime 3x ./services/scheduler/scheduler/
//
// Each iteration builds a fresh stack (not timed): 1,000 sites, optionally
// a history of finished jobs, and a first tick that makes the 2,000
// schedules (backup and retention per site). The timed tick runs one
// interval later, when every backup is due.
func BenchmarkTick1000Sites(b *testing.B) {
	benchTick(b, []tickCase{
		{"warm/history=0", 0, false},
		{"cold/history=0", 0, true},
		{"cold/history=3000", 3000, true},
	})
}

// BenchmarkTick1000SitesHistory200k is the same tick with 200,000 finished
// jobs in the store: 1,000 sites x ~2 jobs a day x 90 days
// (history_retention_days). Seeding takes 40-60 s per iteration; run with
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench Tick1000SitesHistory200k -benchtime 3x -timeout 40m ./services/scheduler/scheduler/
func BenchmarkTick1000SitesHistory200k(b *testing.B) {
	benchTick(b, []tickCase{{"cold/history=200000", 200000, true}})
}

type tickCase struct {
	name    string
	history int  // finished jobs already stored
	cold    bool // a scheduler that has not read the schedules yet (restart, new leader)
}

func benchTick(b *testing.B, cases []tickCase) {
	const sites = 1000
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			var queuedIn, took time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := newEnv(b)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				b.Cleanup(cancel)
				uuids := make([]string, sites)
				for k := range uuids {
					uuids[k] = fmt.Sprintf("5a70b0e4-b000-4000-8000-%012d", k)
				}
				e.addSites(b, uuids...)
				if bc.history > 0 {
					t0 := time.Now()
					seedHistory(b, e, uuids, bc.history)
					b.Logf("seeded %d finished jobs in %s", bc.history, time.Since(t0).Round(time.Millisecond))
				}
				set := Settings{ScanInterval: day, RetentionInterval: day}
				s := e.scheduler(b, "bench-1", set)
				if res, err := s.Tick(ctx, start); err != nil || res.Created != 2*sites {
					b.Fatalf("first tick: %+v, %v", res, err)
				}
				// The running embedded store indexes new collections within
				// 30 s; do it now.
				if _, err := e.stack.Store.IndexIDs(ctx); err != nil {
					b.Fatal(err)
				}
				if bc.cold {
					s.Resign()
					s = e.scheduler(b, "bench-2", set)
				}
				b.StartTimer()
				res, err := s.Tick(ctx, start.Add(day))
				b.StopTimer()
				if err != nil || res.Queued[domain.JobBackup] != sites || res.Failed+res.Lost != 0 {
					b.Fatalf("tick: %+v, %v", res, err)
				}
				str, err := e.in.JS.Stream(ctx, events.StreamJobs)
				if err != nil {
					b.Fatal(err)
				}
				if info, err := str.Info(ctx); err != nil || info.State.Msgs != sites {
					b.Fatalf("stream holds %d messages, want %d (%v)", info.State.Msgs, sites, err)
				}
				queuedIn += res.QueuedIn
				took += res.Took
			}
			b.ReportMetric(float64(queuedIn.Milliseconds())/float64(b.N), "ms-to-queue")
			b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms-tick")
		})
	}
}

// seedHistory stores n finished backups spread over the sites, as
// FinishJob leaves them (store.ArchiveJobs: InsertMany in batches of
// 1,000, index entries grouped per bucket).
func seedHistory(b *testing.B, e *env, sites []string, n int) {
	b.Helper()
	jobs := make([]domain.Job, n)
	for i := range jobs {
		created := start.Add(-time.Duration(n-i) * time.Minute)
		fin := created.Add(30 * time.Second)
		jobs[i] = domain.Job{ID: fmt.Sprintf("hist-%06d", i), SiteUUID: sites[i%len(sites)], Type: domain.JobBackup,
			Status: domain.StatusSuccess, Attempts: 1, CreatedAt: created, StartedAt: &created, FinishedAt: &fin,
			Summary: map[string]any{"files_new": 3, "bytes_added": 12345}}
	}
	if err := e.st.ArchiveJobs(context.Background(), jobs); err != nil {
		b.Fatal(err)
	}
}
