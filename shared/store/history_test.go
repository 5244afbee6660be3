package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/store"
)

// openStoreRaw is openStore plus a second client on the same database,
// to look at (and tamper with) the collections behind the store.
func openStoreRaw(t *testing.T, opts ...store.Option) (*store.Store, *mongo.Database) {
	t.Helper()
	ctx := ctxT(t)
	srv, err := embedded.StartStore(ctx, embedded.StoreOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	st, err := store.Open(ctx, srv.URI(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.IndexIDs(ctx); err != nil {
		t.Fatal(err)
	}
	client, err := mongo.Connect(options.Client().ApplyURI(srv.URI()).SetMaxPoolSize(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.Disconnect(context.Background())
		if err := st.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return st, client.Database(store.DefaultDatabase)
}

func count(t *testing.T, db *mongo.Database, coll string) int {
	t.Helper()
	n, err := db.Collection(coll).CountDocuments(ctxT(t), bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func finished(id, site string, typ domain.JobType, st domain.JobStatus, created, fin time.Time) domain.Job {
	return domain.Job{ID: id, SiteUUID: site, Type: typ, Status: st, Attempts: 1, CreatedAt: created,
		StartedAt: ptr(created), FinishedAt: ptr(fin), HeartbeatAt: ptr(fin), Summary: map[string]any{"n": int64(1)}}
}

// A finished job leaves "jobs" for the history; it is still read by id,
// listed, and its id can never be used again.
func TestFinishMovesJobToHistory(t *testing.T) {
	st, db := openStoreRaw(t)
	ctx := ctxT(t)

	if err := st.InsertJob(ctx, job("j1", "s", domain.JobBackup, base)); err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, "j1", "w", 1, base); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "jobs"); n != 1 {
		t.Fatalf("open jobs = %d, want 1", n)
	}
	if err := st.FinishJob(ctx, "j1", domain.StatusWarning, "1 of 3 targets failed", map[string]any{"targets_failed": int64(1)}, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "jobs"); n != 0 {
		t.Fatalf("open jobs after finish = %d, want 0", n)
	}
	got, err := st.GetJob(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != domain.StatusWarning || got.Error != "1 of 3 targets failed" || got.Worker != "w" ||
		!got.FinishedAt.Equal(norm(base.Add(time.Minute))) || got.Summary["targets_failed"] != int64(1) {
		t.Fatalf("finished job = %+v", got)
	}
	for _, f := range []store.JobFilter{{}, {SiteUUID: "s"}, {Status: domain.StatusWarning}, {Type: domain.JobBackup}} {
		list, err := st.ListJobs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, fmt.Sprintf("list %+v", f), ids(list), []string{"j1"})
		mustEqual(t, "listed job", list[0], got)
	}
	if act, err := st.ActiveJobs(ctx, ""); err != nil || len(act) != 0 {
		t.Fatalf("ActiveJobs = %v, %v", act, err)
	}

	// The id stays taken, for one job and for a batch.
	wantErr(t, "insert again", st.InsertJob(ctx, job("j1", "s", domain.JobBackup, base)), store.ErrConflict, "j1")
	done, err := st.InsertJobs(ctx, []domain.Job{job("j1", "s", domain.JobBackup, base), job("j2", "s", domain.JobBackup, base)})
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "inserted", done, []bool{false, true})
	done, err = st.InsertJobs(ctx, []domain.Job{job("j2", "s", domain.JobBackup, base)})
	if err != nil || done[0] {
		t.Fatalf("insert open job again = %v, %v", done, err)
	}

	// Updates of a finished job land in the history, as before.
	if err := st.HeartbeatJob(ctx, "j1", base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetJob(ctx, "j1"); !got.HeartbeatAt.Equal(norm(base.Add(time.Hour))) {
		t.Fatalf("heartbeat of a finished job: %+v", got)
	}
}

// Job and site ids with control characters are refused (the job index
// separates fields with one).
func TestInsertJobRefusesControlCharacters(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	for _, j := range []domain.Job{job("a\x1fb", "s", domain.JobBackup, base), job("ok", "s\n", domain.JobBackup, base)} {
		if err := st.InsertJob(ctx, j); err == nil || !strings.Contains(err.Error(), "control character") {
			t.Errorf("InsertJob(%q, site %q) = %v", j.ID, j.SiteUUID, err)
		}
		if _, err := st.InsertJobs(ctx, []domain.Job{j}); err == nil {
			t.Errorf("InsertJobs(%q, site %q) succeeded", j.ID, j.SiteUUID)
		}
	}
}

// An insert cut short between its two writes (the history copy written,
// the open job not) is completed by the next insert of the same job.
func TestInsertJobsCompletesCutShortInsert(t *testing.T) {
	st, db := openStoreRaw(t)
	ctx := ctxT(t)
	j := job("cut", "s", domain.JobBackup, base)
	if _, err := db.Collection("jobs_history").InsertOne(ctx, j); err != nil {
		t.Fatal(err)
	}
	done, err := st.InsertJobs(ctx, []domain.Job{j})
	if err != nil || !done[0] {
		t.Fatalf("InsertJobs = %v, %v", done, err)
	}
	act, err := st.ActiveJobs(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "active", ids(act), []string{"cut"})
}

// A finished job started again (a retry through the store) is open
// again: listed once, with its current status.
func TestRestartedJobListsOnce(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	if err := st.InsertJob(ctx, job("r", "s", domain.JobBackup, base)); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishJob(ctx, "r", domain.StatusFailed, "boom", nil, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, "r", "w2", 2, base.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    store.JobFilter
		want []string
	}{
		{store.JobFilter{}, []string{"r"}},
		{store.JobFilter{Status: domain.StatusFailed}, []string{}},
		{store.JobFilter{SiteUUID: "s", Status: domain.StatusFailed}, []string{}},
		{store.JobFilter{Status: domain.StatusRunning}, []string{"r"}},
	} {
		got, err := st.ListJobs(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, fmt.Sprintf("list %+v", tc.f), ids(got), tc.want)
	}
	if err := st.FinishJob(ctx, "r", domain.StatusSuccess, "", nil, base.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    store.JobFilter
		want []string
	}{
		{store.JobFilter{}, []string{"r"}},
		{store.JobFilter{Status: domain.StatusFailed}, []string{}},
		{store.JobFilter{Status: domain.StatusSuccess}, []string{"r"}},
	} {
		got, err := st.ListJobs(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, fmt.Sprintf("after second finish, list %+v", tc.f), ids(got), tc.want)
	}
}

// histFleet is a history over several index buckets: jobs of 4 sites and
// the repository, of every type, finished out of creation order (some
// ran long), with a few open jobs; want lists them newest first.
func histFleet(t *testing.T, st *store.Store, n int) (all []domain.Job) {
	t.Helper()
	ctx := ctxT(t)
	rng := rand.New(rand.NewPCG(1, 2))
	types := []domain.JobType{domain.JobBackup, domain.JobRetention, domain.JobPreflight, domain.JobRestore}
	statuses := []domain.JobStatus{domain.StatusSuccess, domain.StatusSuccess, domain.StatusSuccess, domain.StatusFailed, domain.StatusWarning, domain.StatusCanceled}
	type fin struct {
		id  string
		at  time.Time
		st  domain.JobStatus
		err string
	}
	var fins []fin
	for i := range n {
		created := base.Add(time.Duration(i) * time.Minute)
		if i%7 == 3 {
			created = base.Add(time.Duration(i-1) * time.Minute) // same created_at as the one before: ties by id
		}
		j := job(fmt.Sprintf("h%03d", i), fmt.Sprintf("site-%d", i%4), types[rng.IntN(len(types))], created)
		if i%10 == 9 {
			j.SiteUUID, j.Type = "", domain.JobResticSync
		}
		if err := st.InsertJob(ctx, j); err != nil {
			t.Fatal(err)
		}
		open := i >= n-3 || i%23 == 0
		if !open {
			// Most finish within minutes, some much later.
			d := time.Duration(rng.IntN(5)+1) * time.Minute
			if rng.IntN(8) == 0 {
				d = time.Duration(rng.IntN(300)) * time.Minute
			}
			f := fin{id: j.ID, at: created.Add(d), st: statuses[rng.IntN(len(statuses))]}
			fins = append(fins, f)
			j.Status, j.FinishedAt = f.st, ptr(f.at)
		} else if i%2 == 0 {
			if err := st.StartJob(ctx, j.ID, "w", 1, created); err != nil {
				t.Fatal(err)
			}
			j.Status = domain.StatusRunning
		}
		all = append(all, j)
	}
	// Finish in the order of finished_at, as workers would.
	sort.Slice(fins, func(a, b int) bool { return fins[a].at.Before(fins[b].at) })
	for _, f := range fins {
		if err := st.FinishJob(ctx, f.id, f.st, f.err, nil, f.at); err != nil {
			t.Fatal(err)
		}
	}
	return all
}

// expect is ListJobs computed over all jobs in Go.
func expect(all []domain.Job, f store.JobFilter) []string {
	var sel []domain.Job
	for _, j := range all {
		if (f.SiteUUID == "" || j.SiteUUID == f.SiteUUID) && (f.Type == "" || j.Type == f.Type) && (f.Status == "" || j.Status == f.Status) {
			sel = append(sel, j)
		}
	}
	sort.Slice(sel, func(a, b int) bool {
		if !sel[a].CreatedAt.Equal(sel[b].CreatedAt) {
			return sel[a].CreatedAt.After(sel[b].CreatedAt)
		}
		return sel[a].ID > sel[b].ID
	})
	limit := f.Limit
	if limit <= 0 {
		limit = store.DefaultJobLimit
	}
	out := []string{}
	for i := 0; i < len(sel) && i < limit; i++ {
		out = append(out, sel[i].ID)
	}
	return out
}

func filters() []store.JobFilter {
	var out []store.JobFilter
	for _, site := range []string{"", "site-1", "site-3", "nope"} {
		for _, typ := range []domain.JobType{"", domain.JobBackup, domain.JobRestore, domain.JobResticSync} {
			for _, st := range []domain.JobStatus{"", domain.StatusSuccess, domain.StatusFailed, domain.StatusCanceled, domain.StatusRunning, domain.StatusQueued} {
				for _, limit := range []int{0, 1, 7, 500} {
					out = append(out, store.JobFilter{SiteUUID: site, Type: typ, Status: st, Limit: limit})
				}
			}
		}
	}
	return out
}

// ListJobs over small index buckets (3 entries) returns exactly what a
// scan would: every filter, several limits, jobs finished out of order.
func TestListJobsThroughIndex(t *testing.T) {
	st := openStore(t, store.WithIndexBucket(3))
	all := histFleet(t, st, 120)
	ctx := ctxT(t)
	for _, f := range filters() {
		got, err := st.ListJobs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if want := expect(all, f); !equalIDs(ids(got), want) {
			t.Fatalf("ListJobs(%+v):\n got  %v\n want %v", f, ids(got), want)
		}
	}
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ArchiveJobs (imports, benchmarks) leaves the history as FinishJob
// does: the same listings.
func TestArchiveJobs(t *testing.T) {
	st, db := openStoreRaw(t, store.WithIndexBucket(4))
	ctx := ctxT(t)
	var all []domain.Job
	for i := range 50 {
		st := []domain.JobStatus{domain.StatusSuccess, domain.StatusFailed}[i%2]
		all = append(all, finished(fmt.Sprintf("a%02d", i), fmt.Sprintf("site-%d", i%3), domain.JobBackup, st,
			base.Add(time.Duration(i)*time.Hour), base.Add(time.Duration(i)*time.Hour+time.Minute)))
	}
	if err := st.ArchiveJobs(ctx, all[:30]); err != nil {
		t.Fatal(err)
	}
	if err := st.ArchiveJobs(ctx, all[30:]); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, "jobs"); n != 0 {
		t.Fatalf("open jobs = %d", n)
	}
	for _, f := range []store.JobFilter{{}, {SiteUUID: "site-2", Limit: 5}, {Status: domain.StatusFailed, Limit: 100}, {SiteUUID: "site-1", Status: domain.StatusSuccess}} {
		got, err := st.ListJobs(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, fmt.Sprintf("list %+v", f), ids(got), expect(all, f))
	}
	got, err := st.GetJob(ctx, "a07")
	if err != nil || got.Status != domain.StatusFailed || got.Summary["n"] != int64(1) {
		t.Fatalf("GetJob = %+v, %v", got, err)
	}
	if err := st.ArchiveJobs(ctx, []domain.Job{job("q", "s", domain.JobBackup, base)}); err == nil {
		t.Fatal("archived a queued job")
	}
	if _, err := st.GetJob(ctx, "q"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused job stored: %v", err)
	}
}

// The history pass deletes exactly the jobs that finished before the
// cutoff, with their events and index buckets, in bounded steps, and
// never an open job; listings stay exact meanwhile.
func TestPurgeHistory(t *testing.T) {
	st, db := openStoreRaw(t, store.WithIndexBucket(4))
	ctx := ctxT(t)
	all := histFleet(t, st, 90)
	// A finished job left in "jobs" by an archive cut short, one old and
	// one recent, and an open job created long ago.
	oldLeft := finished("left-old", "site-0", domain.JobBackup, domain.StatusSuccess, base.Add(-time.Hour), base.Add(-time.Hour))
	newLeft := finished("left-new", "site-0", domain.JobBackup, domain.StatusFailed, base.Add(89*time.Minute), base.Add(200*time.Minute))
	for _, j := range []domain.Job{oldLeft, newLeft} {
		if _, err := db.Collection("jobs").InsertOne(ctx, j); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Collection("jobs_history").InsertOne(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	all = append(all, oldLeft, newLeft)
	for _, j := range all {
		if err := st.AppendEvents(ctx, j.ID, ev(1, "job", "started "+j.ID)); err != nil {
			t.Fatal(err)
		}
	}
	indexDocs := count(t, db, "job_index")

	cutoff := base.Add(60 * time.Minute)
	var keep []domain.Job
	expired := map[string]bool{}
	for _, j := range all {
		if j.FinishedAt != nil && j.FinishedAt.Before(cutoff) {
			expired[j.ID] = true
			continue
		}
		keep = append(keep, j)
	}
	if len(expired) < 20 || len(keep) < 20 {
		t.Fatalf("fleet: %d expired, %d kept; want both sizeable", len(expired), len(keep))
	}

	const step = 7
	total, events, archived, calls := 0, 0, 0, 0
	for {
		res, err := st.PurgeHistory(ctx, cutoff, step)
		if err != nil {
			t.Fatal(err)
		}
		calls++
		if res.Jobs > step || res.EventDocs > step {
			t.Fatalf("call %d deleted %d jobs, %d event documents; the limit is %d", calls, res.Jobs, res.EventDocs, step)
		}
		total, events, archived = total+res.Jobs, events+res.EventDocs, archived+res.Archived
		// Listings are exact at every step.
		for _, f := range []store.JobFilter{{Limit: 500}, {SiteUUID: "site-0", Limit: 500}, {Status: domain.StatusFailed, Limit: 500}} {
			got, err := st.ListJobs(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if want := expect(keep, f); !equalIDs(ids(got), want) {
				t.Fatalf("after call %d, ListJobs(%+v):\n got  %v\n want %v", calls, f, ids(got), want)
			}
		}
		if !res.More {
			break
		}
		if calls > 100 {
			t.Fatal("the pass does not end")
		}
	}
	if total != len(expired) || events != len(expired) || archived != 1 {
		t.Fatalf("deleted %d jobs and %d event documents, archived %d; want %d, %d, 1", total, events, archived, len(expired), len(expired))
	}
	if calls < len(expired)/step {
		t.Fatalf("%d calls for %d jobs at %d per call", calls, len(expired), step)
	}
	for _, j := range all {
		_, err := st.GetJob(ctx, j.ID)
		evs, eerr := st.ListEvents(ctx, j.ID)
		if eerr != nil {
			t.Fatal(eerr)
		}
		if expired[j.ID] {
			if !errors.Is(err, store.ErrNotFound) || len(evs) != 0 {
				t.Errorf("%s (finished %v) still there: %v, %d events", j.ID, j.FinishedAt, err, len(evs))
			}
		} else if err != nil || len(evs) != 1 {
			t.Errorf("%s (status %s, finished %v) lost: %v, %d events", j.ID, j.Status, j.FinishedAt, err, len(evs))
		}
	}
	if n := count(t, db, "jobs_history"); n != len(keep) {
		t.Errorf("history holds %d jobs, want %d", n, len(keep))
	}
	if n := count(t, db, "job_index"); n >= indexDocs {
		t.Errorf("index documents: %d before, %d after; want fewer", indexDocs, n)
	}
	// A second pass has nothing to do.
	res, err := st.PurgeHistory(ctx, cutoff, step)
	if err != nil || res != (store.PurgeResult{}) {
		t.Fatalf("second pass = %+v, %v", res, err)
	}
	// Everything finishes and expires: the index empties but its heads.
	if err := finishOpen(ctx, st, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := st.DeleteFinishedJobsBefore(ctx, base.Add(24*time.Hour)); err != nil || n != len(keep) {
		t.Fatalf("last pass deleted %d, %v; want %d", n, err, len(keep))
	}
	// The index keeps at most the last, partly filled bucket of each scope
	// (its jobs stopped coming); nothing is listed from it.
	cur, err := db.Collection("job_index").Find(ctx, bson.D{{Key: "entries", Value: bson.D{{Key: "$exists", Value: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	var left []struct {
		ID      string   `bson:"_id"`
		Entries []string `bson:"entries"`
	}
	if err := cur.All(ctx, &left); err != nil {
		t.Fatal(err)
	}
	scopes := map[string]bool{}
	for _, b := range left {
		sc, _, _ := strings.Cut(b.ID, "#")
		if scopes[sc] || len(b.Entries) >= 4 {
			t.Errorf("bucket %s (%d entries) left: want at most one partial bucket per scope", b.ID, len(b.Entries))
		}
		scopes[sc] = true
	}
	for _, f := range filters() {
		if got, err := st.ListJobs(ctx, f); err != nil || len(got) != 0 {
			t.Fatalf("ListJobs(%+v) after the history expired = %v, %v", f, ids(got), err)
		}
	}
	if n := count(t, db, "jobs_history") + count(t, db, "jobs") + count(t, db, "job_events"); n != 0 {
		t.Fatalf("%d documents left", n)
	}
}

func finishOpen(ctx context.Context, st *store.Store, at time.Time) error {
	act, err := st.ActiveJobs(ctx, "")
	if err != nil {
		return err
	}
	for _, j := range act {
		if err := st.FinishJob(ctx, j.ID, domain.StatusCanceled, "", nil, at); err != nil {
			return err
		}
	}
	return nil
}
