package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/embedded"
	"github.com/satoru/satoru/shared/store"
)

// openStore starts a real embedded FerretDB in a temp dir, opens a store
// on it and indexes its collections as `satoru up` does; both stop when
// the test ends.
func openStore(t testing.TB, opts ...store.Option) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
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
	t.Cleanup(func() {
		if err := st.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return st
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// base is a time with sub-millisecond digits and a non-UTC zone, to check
// that what is read back equals what was written, normalised.
var base = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.FixedZone("X", 3600))

func norm(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }
func ptr(t time.Time) *time.Time { return &t }

func mustEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got  %#v\n want %#v", what, got, want)
	}
}

func wantErr(t *testing.T, what string, err, target error, contains string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Fatalf("%s: err %q does not name %q", what, err, contains)
	}
}

func site(id, name string) domain.Site {
	return domain.Site{
		UUID: id, Name: name, Host: "10.0.0.1", Port: 22, User: "backup",
		SSHKeyPath: "/k", HostKey: "ssh-ed25519 AAAA", TrustOnFirstUse: true,
		BandwidthLimitKbps: 100, CreatedAt: base, UpdatedAt: base,
	}
}

func TestSites(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	for _, s := range []domain.Site{site("u2", "bravo"), site("u1", "charlie"), site("u3", "alpha")} {
		if err := st.CreateSite(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("get round trips", func(t *testing.T) {
		got, err := st.GetSite(ctx, "u2")
		if err != nil {
			t.Fatal(err)
		}
		want := site("u2", "bravo")
		want.CreatedAt, want.UpdatedAt = norm(base), norm(base)
		mustEqual(t, "site", got, want)
	})
	t.Run("get missing", func(t *testing.T) {
		_, err := st.GetSite(ctx, "nope")
		wantErr(t, "get", err, store.ErrNotFound, "nope")
	})
	t.Run("duplicate name", func(t *testing.T) {
		err := st.CreateSite(ctx, site("u9", "bravo"))
		wantErr(t, "create", err, store.ErrConflict, `"bravo"`)
	})
	t.Run("duplicate id", func(t *testing.T) {
		err := st.CreateSite(ctx, site("u2", "delta"))
		wantErr(t, "create", err, store.ErrConflict, "u2")
	})
	t.Run("empty id", func(t *testing.T) {
		if err := st.CreateSite(ctx, site("", "e")); err == nil {
			t.Fatal("want error")
		}
	})
	t.Run("list sorted by name", func(t *testing.T) {
		all, err := st.ListSites(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range all {
			names = append(names, s.Name)
		}
		mustEqual(t, "names", names, []string{"alpha", "bravo", "charlie"})
	})
	t.Run("replace", func(t *testing.T) {
		s := site("u2", "bravo2")
		s.Port = 2222
		s.HostKey = ""
		if err := st.ReplaceSite(ctx, s); err != nil {
			t.Fatal(err)
		}
		got, err := st.GetSite(ctx, "u2")
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "bravo2" || got.Port != 2222 || got.HostKey != "" {
			t.Fatalf("after replace: %+v", got)
		}
	})
	t.Run("replace missing", func(t *testing.T) {
		err := st.ReplaceSite(ctx, site("nope", "zulu"))
		wantErr(t, "replace", err, store.ErrNotFound, "nope")
	})
	t.Run("replace to a taken name", func(t *testing.T) {
		err := st.ReplaceSite(ctx, site("u2", "alpha"))
		wantErr(t, "replace", err, store.ErrConflict, `"alpha"`)
		got, err := st.GetSite(ctx, "u2")
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "bravo2" {
			t.Fatalf("failed replace changed the site: %+v", got)
		}
		// The connection is still usable after FerretDB's internal error.
		if err := st.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("name freed by rename is reusable", func(t *testing.T) {
		if err := st.CreateSite(ctx, site("u4", "bravo")); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDeleteSiteRemovesTargetsAndStatus(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	for _, id := range []string{"a", "b"} {
		if err := st.CreateSite(ctx, site(id, "site-"+id)); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/data", "/etc"} {
			tg := domain.Target{SiteUUID: id, TargetHash: domain.TargetHash(domain.ModeDirectory, p), Mode: domain.ModeDirectory, Path: p}
			if err := st.AddTarget(ctx, tg); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.PutSiteStatus(ctx, domain.SiteStatus{SiteUUID: id, Health: domain.HealthState{Status: domain.HealthSuccess}}); err != nil {
			t.Fatal(err)
		}
	}

	if err := st.DeleteSite(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetSite(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("site still there: %v", err)
	}
	if tg, err := st.ListTargets(ctx, "a"); err != nil || len(tg) != 0 {
		t.Fatalf("targets of a = %v, %v", tg, err)
	}
	if s, err := st.GetSiteStatus(ctx, "a"); err != nil || s.Health.Status != domain.HealthUnknown {
		t.Fatalf("status of a = %+v, %v", s, err)
	}
	// b is untouched.
	if tg, err := st.ListTargets(ctx, "b"); err != nil || len(tg) != 2 {
		t.Fatalf("targets of b = %v, %v", tg, err)
	}
	if all, err := st.ListSiteStatuses(ctx); err != nil || len(all) != 1 || all["b"].Health.Status != domain.HealthSuccess {
		t.Fatalf("statuses = %v, %v", all, err)
	}
	wantErr(t, "delete again", st.DeleteSite(ctx, "a"), store.ErrNotFound, "a")
}

func TestSiteStatus(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	got, err := st.GetSiteStatus(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "absent", got, domain.SiteStatus{SiteUUID: "s", Health: domain.HealthState{Status: domain.HealthUnknown}})

	all, err := st.ListSiteStatuses(ctx)
	if err != nil || len(all) != 0 {
		t.Fatalf("ListSiteStatuses = %v, %v", all, err)
	}

	s1 := domain.SiteStatus{
		SiteUUID:        "s",
		Health:          domain.HealthState{Status: domain.HealthWarning, Message: "1 of 2 targets failed", UpdatedAt: base},
		LastPreflightAt: ptr(base), LastScanAt: ptr(base.Add(time.Minute)),
		LastJobID: "j1", LearnedHostKey: "ssh-ed25519 BBBB",
	}
	if err := st.PutSiteStatus(ctx, s1); err != nil {
		t.Fatal(err)
	}
	// Replace: fields not given any more disappear.
	s2 := domain.SiteStatus{
		SiteUUID:      "s",
		Health:        domain.HealthState{Status: domain.HealthSuccess, UpdatedAt: base.Add(time.Hour)},
		LastSuccessAt: ptr(base.Add(time.Hour)), LastJobID: "j2",
	}
	if err := st.PutSiteStatus(ctx, s2); err != nil {
		t.Fatal(err)
	}
	got, err = st.GetSiteStatus(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	want := domain.SiteStatus{
		SiteUUID:      "s",
		Health:        domain.HealthState{Status: domain.HealthSuccess, UpdatedAt: norm(base.Add(time.Hour))},
		LastSuccessAt: ptr(norm(base.Add(time.Hour))), LastJobID: "j2",
	}
	mustEqual(t, "status", got, want)

	all, err = st.ListSiteStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "all", all, map[string]domain.SiteStatus{"s": want})

	if err := st.PutSiteStatus(ctx, domain.SiteStatus{}); err == nil {
		t.Fatal("want error for empty site_uuid")
	}
}

func TestTargets(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	mk := func(site, path string, mode domain.TargetMode) domain.Target {
		return domain.Target{SiteUUID: site, TargetHash: domain.TargetHash(mode, path), Mode: mode, Path: path, Excludes: []string{"*.tmp"}, CreatedAt: base}
	}
	for _, tg := range []domain.Target{
		mk("s", "/var/lib/app.db", domain.ModeSQLiteDump),
		mk("s", "/etc", domain.ModeDirectory),
		mk("s", "/srv/data", domain.ModeDirectory),
		mk("other", "/etc", domain.ModeDirectory),
	} {
		if err := st.AddTarget(ctx, tg); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("duplicate", func(t *testing.T) {
		err := st.AddTarget(ctx, mk("s", "/etc", domain.ModeDirectory))
		wantErr(t, "add", err, store.ErrConflict, "/etc")
	})
	t.Run("list sorted by path, only the site's", func(t *testing.T) {
		got, err := st.ListTargets(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		for _, tg := range got {
			paths = append(paths, tg.Path)
			if tg.ID != domain.TargetID("s", tg.TargetHash) {
				t.Errorf("id = %q", tg.ID)
			}
		}
		mustEqual(t, "paths", paths, []string{"/etc", "/srv/data", "/var/lib/app.db"})
		want := mk("s", "/etc", domain.ModeDirectory)
		want.ID, want.CreatedAt = domain.TargetID("s", want.TargetHash), norm(base)
		mustEqual(t, "target", got[0], want)
	})
	t.Run("list of unknown site is empty", func(t *testing.T) {
		got, err := st.ListTargets(ctx, "none")
		if err != nil || got == nil || len(got) != 0 {
			t.Fatalf("ListTargets = %#v, %v", got, err)
		}
	})
	t.Run("scan", func(t *testing.T) {
		h := domain.TargetHash(domain.ModeDirectory, "/srv/data")
		h2 := domain.TargetHash(domain.ModeDirectory, "/etc")
		scan := domain.Scan{At: base, Status: domain.HealthFailed, Bytes: 1 << 40, Files: 12, Error: "rsync: exit 23"}
		scan2 := domain.Scan{At: base, Status: domain.HealthSuccess, Bytes: 7, Files: 1}
		// One write for both, and a target deleted meanwhile ("beef") is skipped.
		if err := st.SetTargetScans(ctx, "s", map[string]domain.Scan{h: scan, h2: scan2, "beef": scan}); err != nil {
			t.Fatal(err)
		}
		got, err := st.ListTargets(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		scan.At, scan2.At = norm(base), norm(base)
		mustEqual(t, "scan", got[1].LastScan, &scan)
		mustEqual(t, "scan of /etc", got[0].LastScan, &scan2)
		if len(got) != 3 {
			t.Fatalf("targets after scans = %d, want 3 (a scan of a missing target must not create one)", len(got))
		}
	})
	t.Run("delete", func(t *testing.T) {
		h := domain.TargetHash(domain.ModeDirectory, "/etc")
		if err := st.DeleteTarget(ctx, "s", h); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "delete again", st.DeleteTarget(ctx, "s", h), store.ErrNotFound, h)
		got, _ := st.ListTargets(ctx, "s")
		other, _ := st.ListTargets(ctx, "other")
		if len(got) != 2 || len(other) != 1 {
			t.Fatalf("after delete: %d targets of s, %d of other", len(got), len(other))
		}
	})
}

func job(id, site string, typ domain.JobType, created time.Time) domain.Job {
	return domain.Job{ID: id, SiteUUID: site, Type: typ, Status: domain.StatusQueued, CreatedAt: created}
}

func TestJobLifecycle(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	j := job("j1", "s", domain.JobBackup, base)
	j.NextAttemptAt = ptr(base.Add(time.Second))
	if err := st.InsertJob(ctx, j); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "insert again", st.InsertJob(ctx, j), store.ErrConflict, "j1")
	_, err := st.GetJob(ctx, "nope")
	wantErr(t, "get missing", err, store.ErrNotFound, "nope")

	got, err := st.GetJob(ctx, "j1")
	if err != nil {
		t.Fatal(err)
	}
	want := j
	want.CreatedAt, want.NextAttemptAt = norm(base), ptr(norm(base.Add(time.Second)))
	mustEqual(t, "inserted", got, want)

	// First attempt fails.
	t1, t2, t3 := base.Add(time.Minute), base.Add(2*time.Minute), base.Add(3*time.Minute)
	if err := st.StartJob(ctx, "j1", "w1", 1, t1); err != nil {
		t.Fatal(err)
	}
	if err := st.HeartbeatJob(ctx, "j1", t2); err != nil {
		t.Fatal(err)
	}
	got, _ = st.GetJob(ctx, "j1")
	if got.Status != domain.StatusRunning || got.Worker != "w1" || got.Attempts != 1 ||
		!got.StartedAt.Equal(norm(t1)) || !got.HeartbeatAt.Equal(norm(t2)) {
		t.Fatalf("running: %+v", got)
	}
	if err := st.FinishJob(ctx, "j1", domain.StatusFailed, "ssh: connection refused", nil, t3); err != nil {
		t.Fatal(err)
	}
	got, _ = st.GetJob(ctx, "j1")
	if got.Status != domain.StatusFailed || got.Error != "ssh: connection refused" || !got.FinishedAt.Equal(norm(t3)) || !got.HeartbeatAt.Equal(norm(t3)) {
		t.Fatalf("failed: %+v", got)
	}

	// Retry clears error and finished_at, then succeeds with a summary.
	t4, t5 := base.Add(4*time.Minute), base.Add(5*time.Minute)
	if err := st.StartJob(ctx, "j1", "w2", 2, t4); err != nil {
		t.Fatal(err)
	}
	got, _ = st.GetJob(ctx, "j1")
	if got.Error != "" || got.FinishedAt != nil || got.Worker != "w2" || got.Attempts != 2 {
		t.Fatalf("restarted: %+v", got)
	}
	summary := map[string]any{"snapshot_id": "abc", "bytes_added": int64(1234), "targets": map[string]any{"ok": int64(2)}}
	if err := st.FinishJob(ctx, "j1", domain.StatusSuccess, "", summary, t5); err != nil {
		t.Fatal(err)
	}
	got, _ = st.GetJob(ctx, "j1")
	want.Status, want.Attempts, want.Worker = domain.StatusSuccess, 2, "w2"
	want.StartedAt, want.HeartbeatAt, want.FinishedAt = ptr(norm(t4)), ptr(norm(t5)), ptr(norm(t5))
	want.NextAttemptAt = nil // the attempt it announced has started
	if got.Summary["snapshot_id"] != "abc" || got.Summary["bytes_added"] != int64(1234) {
		t.Fatalf("summary = %#v", got.Summary)
	}
	// Nested documents decode as maps (bson.M), which JSON encodes as objects.
	mustEqual(t, "nested summary", got.Summary["targets"], bson.M{"ok": int64(2)})
	got.Summary = nil
	mustEqual(t, "finished", got, want)

	t.Run("finish needs a terminal status", func(t *testing.T) {
		if err := st.FinishJob(ctx, "j1", domain.StatusRunning, "", nil, t5); err == nil {
			t.Fatal("want error")
		}
	})
	t.Run("missing job", func(t *testing.T) {
		wantErr(t, "start", st.StartJob(ctx, "nope", "w", 1, t1), store.ErrNotFound, "nope")
		wantErr(t, "heartbeat", st.HeartbeatJob(ctx, "nope", t1), store.ErrNotFound, "nope")
		wantErr(t, "finish", st.FinishJob(ctx, "nope", domain.StatusFailed, "x", nil, t1), store.ErrNotFound, "nope")
	})
}

func ids(js []domain.Job) []string {
	out := []string{}
	for _, j := range js {
		out = append(out, j.ID)
	}
	return out
}

func TestListJobsAndActive(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	// j0..j9 created one minute apart; sites alternate; every third is a preflight.
	for i := range 10 {
		typ := domain.JobBackup
		if i%3 == 0 {
			typ = domain.JobPreflight
		}
		s := "a"
		if i%2 == 1 {
			s = "b"
		}
		if err := st.InsertJob(ctx, job(fmt.Sprintf("j%d", i), s, typ, base.Add(time.Duration(i)*time.Minute))); err != nil {
			t.Fatal(err)
		}
	}
	// Same created_at as j9: ties break by job_id, newest first.
	if err := st.InsertJob(ctx, job("j9b", "", domain.JobResticSync, base.Add(9*time.Minute))); err != nil {
		t.Fatal(err)
	}
	if err := st.StartJob(ctx, "j2", "w", 1, base); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"j4", "j5"} {
		if err := st.FinishJob(ctx, id, domain.StatusSuccess, "", nil, base); err != nil {
			t.Fatal(err)
		}
	}

	cases := []struct {
		name string
		f    store.JobFilter
		want []string
	}{
		{"all newest first", store.JobFilter{}, []string{"j9b", "j9", "j8", "j7", "j6", "j5", "j4", "j3", "j2", "j1", "j0"}},
		{"limit", store.JobFilter{Limit: 3}, []string{"j9b", "j9", "j8"}},
		{"site", store.JobFilter{SiteUUID: "a"}, []string{"j8", "j6", "j4", "j2", "j0"}},
		{"type", store.JobFilter{Type: domain.JobPreflight}, []string{"j9", "j6", "j3", "j0"}},
		{"status", store.JobFilter{Status: domain.StatusSuccess}, []string{"j5", "j4"}},
		{"site type status", store.JobFilter{SiteUUID: "b", Type: domain.JobBackup, Status: domain.StatusQueued}, []string{"j7", "j1"}},
		{"no match", store.JobFilter{SiteUUID: "zzz"}, []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.ListJobs(ctx, tc.f)
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "ids", ids(got), tc.want)
		})
	}

	t.Run("active all, oldest first", func(t *testing.T) {
		got, err := st.ActiveJobs(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "ids", ids(got), []string{"j0", "j1", "j2", "j3", "j6", "j7", "j8", "j9", "j9b"})
	})
	t.Run("active of a site", func(t *testing.T) {
		got, err := st.ActiveJobs(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "ids", ids(got), []string{"j0", "j2", "j6", "j8"})
	})
}

func TestListJobsLimitBounds(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	var docs []domain.Job
	for i := range 520 {
		docs = append(docs, job(fmt.Sprintf("j%04d", i), "s", domain.JobBackup, base.Add(time.Duration(i)*time.Second)))
	}
	for _, j := range docs {
		if err := st.InsertJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		limit, want int
	}{{0, 50}, {-1, 50}, {10, 10}, {500, 500}, {10000, 500}} {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			got, err := st.ListJobs(ctx, store.JobFilter{Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Fatalf("len = %d, want %d", len(got), tc.want)
			}
			if got[0].ID != "j0519" {
				t.Fatalf("first = %s", got[0].ID)
			}
		})
	}
}

func ev(seq int, step, msg string) domain.JobEvent {
	return domain.JobEvent{Seq: seq, TS: base.Add(time.Duration(seq) * time.Second), Step: step, Level: domain.LevelInfo, Message: msg}
}

func TestEvents(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	got, err := st.ListEvents(ctx, "j")
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ListEvents of unknown job = %#v, %v", got, err)
	}
	if err := st.AppendEvents(ctx, "j"); err != nil {
		t.Fatal(err)
	}

	first := []domain.JobEvent{ev(1, "preflight", "ok"), ev(2, "pull", "start")}
	first[1].TargetHash = "abcd"
	first[1].Data = map[string]any{"bytes": int64(10)}
	second := []domain.JobEvent{ev(3, "pull", "done"), ev(4, "snapshot", "start"), ev(5, "snapshot", "done")}
	if err := st.AppendEvents(ctx, "j", first...); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendEvents(ctx, "j", second...); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendEvents(ctx, "other", ev(1, "x", "y")); err != nil {
		t.Fatal(err)
	}
	got, err = st.ListEvents(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	want := append(append([]domain.JobEvent{}, first...), second...)
	for i := range want {
		want[i].TS = norm(want[i].TS)
	}
	mustEqual(t, "events", got, want)

	if err := st.AppendEvents(ctx, "", ev(1, "x", "y")); err == nil {
		t.Fatal("want error for empty job id")
	}
}

func TestEventsBuckets(t *testing.T) {
	st := openStore(t, store.WithEventsPerBucket(4))
	ctx := ctxT(t)

	var all []domain.JobEvent
	// Batches that stay in a bucket, cross buckets and skip one (seq 12-15).
	for _, batch := range [][2]int{{1, 3}, {3, 6}, {6, 7}, {7, 12}, {16, 18}} {
		var evs []domain.JobEvent
		for seq := batch[0]; seq < batch[1]; seq++ {
			evs = append(evs, ev(seq, "s", fmt.Sprint(seq)))
		}
		if err := st.AppendEvents(ctx, "long", evs...); err != nil {
			t.Fatal(err)
		}
		all = append(all, evs...)
	}
	got, err := st.ListEvents(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	var seqs, wantSeqs []int
	for _, e := range got {
		seqs = append(seqs, e.Seq)
	}
	for _, e := range all {
		wantSeqs = append(wantSeqs, e.Seq)
	}
	mustEqual(t, "seqs", seqs, wantSeqs)

	// The history pass removes every bucket.
	if err := st.InsertJob(ctx, job("long", "s", domain.JobBackup, base)); err != nil {
		t.Fatal(err)
	}
	if err := st.FinishJob(ctx, "long", domain.StatusSuccess, "", nil, base); err != nil {
		t.Fatal(err)
	}
	n, err := st.DeleteFinishedJobsBefore(ctx, base.Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("DeleteFinishedJobsBefore = %d, %v", n, err)
	}
	// Recreate bucket 0 only: the old later buckets must be gone.
	if err := st.AppendEvents(ctx, "long", ev(1, "s", "again"), ev(9, "s", "later")); err != nil {
		t.Fatal(err)
	}
	got, err = st.ListEvents(ctx, "long")
	if err != nil {
		t.Fatal(err)
	}
	seqs = nil
	for _, e := range got {
		seqs = append(seqs, e.Seq)
	}
	mustEqual(t, "after history pass", seqs, []int{1, 9})
}

func TestDeleteFinishedJobsBefore(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	cutoff := base.Add(time.Hour)
	type spec struct {
		id       string
		finished *time.Time
		status   domain.JobStatus
	}
	specs := []spec{
		{"old-ok", ptr(base), domain.StatusSuccess},
		{"old-failed", ptr(base.Add(59 * time.Minute)), domain.StatusFailed},
		{"old-canceled", ptr(base), domain.StatusCanceled},
		{"at-cutoff", ptr(cutoff), domain.StatusSuccess},
		{"new", ptr(cutoff.Add(time.Minute)), domain.StatusWarning},
		{"queued", nil, domain.StatusQueued},
		{"running", nil, domain.StatusRunning},
	}
	for _, sp := range specs {
		if err := st.InsertJob(ctx, job(sp.id, "s", domain.JobBackup, base)); err != nil {
			t.Fatal(err)
		}
		if sp.status == domain.StatusRunning {
			if err := st.StartJob(ctx, sp.id, "w", 1, base); err != nil {
				t.Fatal(err)
			}
		}
		if sp.finished != nil {
			if err := st.FinishJob(ctx, sp.id, sp.status, "", nil, *sp.finished); err != nil {
				t.Fatal(err)
			}
		}
		if err := st.AppendEvents(ctx, sp.id, ev(1, "x", sp.id)); err != nil {
			t.Fatal(err)
		}
	}

	n, err := st.DeleteFinishedJobsBefore(ctx, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("deleted %d, want 3", n)
	}
	left, err := st.ListJobs(ctx, store.JobFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	kept := map[string]bool{}
	for _, j := range left {
		kept[j.ID] = true
	}
	mustEqual(t, "kept", kept, map[string]bool{"at-cutoff": true, "new": true, "queued": true, "running": true})
	for _, sp := range specs {
		evs, err := st.ListEvents(ctx, sp.id)
		if err != nil {
			t.Fatal(err)
		}
		if kept[sp.id] != (len(evs) == 1) {
			t.Errorf("%s: kept=%v but %d events", sp.id, kept[sp.id], len(evs))
		}
	}
	if n, err := st.DeleteFinishedJobsBefore(ctx, cutoff); err != nil || n != 0 {
		t.Fatalf("second pass = %d, %v", n, err)
	}
}

func TestSyncState(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)

	got, err := st.GetSyncState(ctx, "b2")
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "absent", got, domain.SyncState{ID: "b2", Status: domain.HealthUnknown})

	s := domain.SyncState{ID: "b2", Status: domain.HealthFailed, LastAttemptAt: ptr(base), Error: "b2: 401", SnapshotsCopied: 3}
	if err := st.PutSyncState(ctx, s); err != nil {
		t.Fatal(err)
	}
	s = domain.SyncState{ID: "b2", Status: domain.HealthSuccess, LastAttemptAt: ptr(base.Add(time.Hour)), LastSuccessAt: ptr(base.Add(time.Hour)), SnapshotsCopied: 7}
	if err := st.PutSyncState(ctx, s); err != nil {
		t.Fatal(err)
	}
	got, err = st.GetSyncState(ctx, "b2")
	if err != nil {
		t.Fatal(err)
	}
	s.LastAttemptAt, s.LastSuccessAt = ptr(norm(base.Add(time.Hour))), ptr(norm(base.Add(time.Hour)))
	mustEqual(t, "state", got, s)
	if err := st.PutSyncState(ctx, domain.SyncState{}); err == nil {
		t.Fatal("want error for empty id")
	}
}

func TestOpenOptions(t *testing.T) {
	ctx := ctxT(t)
	srv, err := embedded.StartStore(ctx, embedded.StoreOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	a, err := store.Open(ctx, srv.URI(), store.WithDatabase("one"), store.WithMaxPoolSize(2))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	b, err := store.Open(ctx, srv.URI(), store.WithDatabase("two"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	if err := a.CreateSite(ctx, site("x", "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetSite(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("databases not separate: %v", err)
	}
	// Opening again on an existing database (indexes exist) works.
	c, err := store.Open(ctx, srv.URI(), store.WithDatabase("one"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.GetSite(ctx, "x"); err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := store.Open(short, "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"); err == nil {
		t.Fatal("want error for an unreachable server")
	}
}

// One Store shares one connection among goroutines; FerretDB then applies
// concurrent updates one after the other and loses none.
func TestConcurrentUseOfOneStore(t *testing.T) {
	st := openStore(t)
	ctx := ctxT(t)
	if err := st.InsertJob(ctx, job("j", "s", domain.JobBackup, base)); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 25
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := range each {
				if err := st.AppendEvents(ctx, "j", ev(1+w*each+i, "w", fmt.Sprint(w))); err != nil {
					errs <- err
					return
				}
				if err := st.HeartbeatJob(ctx, "j", base.Add(time.Duration(i)*time.Second)); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.ListEvents(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != workers*each {
		t.Fatalf("%d events, want %d (lost updates)", len(got), workers*each)
	}
}

// Open creates every collection, so the embedded store can index them all
// right after Open.
func TestOpenCreatesCollections(t *testing.T) {
	ctx := ctxT(t)
	srv, err := embedded.StartStore(ctx, embedded.StoreOptions{Dir: t.TempDir(), Listen: "127.0.0.1:0", IndexEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for range 2 { // the second Open finds them all
		st, err := store.Open(ctx, srv.URI())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n, err := srv.IndexIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// sites, site_status, site_targets, jobs, jobs_history, job_index,
	// job_events, sync_state, api_tokens, audit, check_state
	if n != 11 {
		t.Fatalf("indexed %d collections, want 11", n)
	}
}
