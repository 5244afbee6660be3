package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

// Scale check (docs/scale.md): GET /api/v1/jobs with 200,000 finished jobs
// in the embedded store (1,000 sites, 90 days of history at ~2 jobs per
// site and day), through the real API on the real embedded store and NATS.
// Run with
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench JobList200k -benchtime 50x -timeout 30m ./services/api/apiserver/
//
// Sub-benchmarks: "site" is the budgeted request (one site's newest 50,
// what `satoru jobs --site` asks); "site-failed" a site filter with a
// status that matches few; "all-200" and "sync-10" are the dashboard's
// overview and sync page; "job" and "events" read one old job.
func BenchmarkJobList200k(b *testing.B) {
	const (
		sites   = 1000
		history = 200000
	)
	st, disp := benchStack(b, sites)
	ctx := context.Background()
	seed := time.Now()
	jobs := historyJobs(sites, history)
	seedFinishedJobs(b, st, jobs)
	b.Logf("seeded %d finished jobs in %s", history, time.Since(seed).Round(time.Millisecond))

	const token = "bench-token"
	srv := httptest.NewServer(New(Deps{Store: st, Dispatcher: disp, Token: token, Context: ctx}))
	b.Cleanup(srv.Close)

	// newest[site] is the id of each site's newest job; failed[site] how
	// many failed jobs it has.
	newest := map[string]string{}
	failed := map[string]int{}
	for _, j := range jobs {
		newest[j.SiteUUID] = j.ID // jobs are in created order
		if j.Status == domain.StatusFailed {
			failed[j.SiteUUID]++
		}
	}
	list := func(b *testing.B, query string, want int, first string) {
		b.Helper()
		var got struct {
			Jobs []domain.Job `json:"jobs"`
		}
		getJSON(b, srv, token, "/api/v1/jobs?"+query, &got)
		if len(got.Jobs) != want || (want > 0 && first != "" && got.Jobs[0].ID != first) {
			b.Fatalf("GET /api/v1/jobs?%s: %d jobs, first %v; want %d, first %s", query, len(got.Jobs), firstID(got.Jobs), want, first)
		}
	}
	timed := func(name string, f func(b *testing.B, i int)) {
		b.Run(name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				f(b, i)
				lat = append(lat, time.Since(t0))
			}
			reportPercentiles(b, lat)
		})
	}
	site := func(i int) string { return benchSiteUUID(i * 7919 % sites) }
	timed("site", func(b *testing.B, i int) {
		list(b, "site_uuid="+site(i), store.DefaultJobLimit, newest[site(i)])
	})
	timed("site-failed", func(b *testing.B, i int) {
		list(b, "status=failed&site_uuid="+site(i), failed[site(i)], "")
	})
	timed("all-200", func(b *testing.B, i int) {
		list(b, "limit=200", 200, jobs[len(jobs)-1].ID)
	})
	timed("sync-10", func(b *testing.B, i int) {
		list(b, "type=restic_sync&limit=10", 10, newest[""])
	})
	timed("job", func(b *testing.B, i int) {
		var got domain.Job
		id := jobs[i*7919%len(jobs)].ID
		getJSON(b, srv, token, "/api/v1/jobs/"+id, &got)
		if got.ID != id || !got.Status.Terminal() {
			b.Fatalf("GET /api/v1/jobs/%s = %+v", id, got)
		}
	})
}

func firstID(js []domain.Job) string {
	if len(js) == 0 {
		return "(none)"
	}
	return js[0].ID
}

func benchSiteUUID(i int) string { return fmt.Sprintf("5a70b0e4-a000-4000-8000-%012d", i) }

// historyJobs makes n finished jobs over the 90 days before 2026-11-25
// 12:00 UTC, oldest first: a backup or a retention of each of the sites
// in turn, and after every 1,000th job an offsite sync (site ""). One job
// in 97 failed, one in 89 ended with a warning.
func historyJobs(sites, n int) []domain.Job {
	end := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	step := 90 * 24 * time.Hour / time.Duration(n)
	out := make([]domain.Job, n)
	for i := range out {
		created := end.Add(-time.Duration(n-i) * step)
		started, fin := created.Add(time.Second), created.Add(30*time.Second)
		j := domain.Job{
			ID: fmt.Sprintf("hist-%07d", i), SiteUUID: benchSiteUUID(i % sites), Type: domain.JobBackup,
			Status: domain.StatusSuccess, Attempts: 1, CreatedAt: created, StartedAt: &started,
			FinishedAt: &fin, HeartbeatAt: &fin, Worker: "worker-1",
			Summary: map[string]any{"files_new": int64(3), "bytes_added": int64(12345), "snapshot_id": "4f2a9c1d8e7b"},
		}
		switch {
		case i%1000 == 999:
			j.SiteUUID, j.Type = "", domain.JobResticSync
		case (i/sites)%2 == 1:
			j.Type = domain.JobRetention
		}
		switch {
		case i%97 == 0:
			j.Status, j.Error = domain.StatusFailed, "ssh: connect to host 10.0.0.1 port 22: Connection refused"
		case i%89 == 0:
			j.Status = domain.StatusWarning
		}
		out[i] = j
	}
	return out
}

// seedFinishedJobs stores finished jobs as FinishJob leaves them (in the
// history and the job index), with InsertMany in batches of 1,000 and
// the index entries grouped per bucket (store.ArchiveJobs).
func seedFinishedJobs(b *testing.B, st *store.Store, jobs []domain.Job) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := st.ArchiveJobs(ctx, jobs); err != nil {
		b.Fatal(err)
	}
}

// getJSON GETs path and decodes the 200 answer into v.
func getJSON(b *testing.B, srv *httptest.Server, token, path string, v any) {
	b.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s = %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		b.Fatalf("GET %s: %v", path, err)
	}
}
