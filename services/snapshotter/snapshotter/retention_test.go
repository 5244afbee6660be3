package snapshotter

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/staging"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

// These tests run the snapshotter as the service runs: a real consumer on
// the embedded NATS, the embedded store, the real restic. Jobs are
// submitted as the API submits them: the job document first, then its
// request on satoru.jobs.<site>.<type>.

func TestRetentionJobs(t *testing.T) {
	h := newHarness(t)

	t.Run("keeps the policy's snapshots of one site, never another's", func(t *testing.T) {
		h.serve(t, h.snapshotter(5*time.Second))
		a, b := uuid.NewString(), uuid.NewString()
		idsA := h.backups(t, a, 4, 100_000)
		idsB := h.backups(t, b, 4, 100_000)
		// Retention leaves the health the backups set alone.
		health := domain.HealthState{Status: domain.HealthWarning, Message: "1 of 2 targets failed", UpdatedAt: time.Now().UTC().Truncate(time.Millisecond)}
		if err := h.st.PutSiteStatus(t.Context(), domain.SiteStatus{SiteUUID: a, Health: health, LastJobID: "backup-job"}); err != nil {
			t.Fatal(err)
		}

		start := time.Now()
		job := h.wait(t, h.submitRetention(t, a))
		t.Logf("retention job took %v", time.Since(start))
		if job.Status != domain.StatusSuccess {
			t.Fatalf("job %s: %s", job.Status, job.Error)
		}
		if got := h.snapshotIDs(t, a); !slices.Equal(got, idsA[2:]) {
			t.Errorf("site a has %q, want the two newest %q", got, idsA[2:])
		}
		if got := h.snapshotIDs(t, b); !slices.Equal(got, idsB) {
			t.Errorf("site b has %q, want all four untouched %q", got, idsB)
		}

		ev := h.event(t, job.ID, func(e domain.JobEvent) bool { return e.Step == "retention" && e.Data != nil })
		t.Logf("event: %s %v", ev.Message, ev.Data)
		for _, got := range []map[string]any{ev.Data, job.Summary} {
			if num(got["kept"]) != 2 || num(got["removed"]) != 2 || got["pruned"] != true {
				t.Errorf("data = %v, want kept 2, removed 2, pruned", got)
			}
			// Two files of 100 kB of incompressible data, and their trees.
			if freed := num(got["bytes_freed"]); freed < 200_000 || freed > 240_000 {
				t.Errorf("bytes_freed = %d, want about 200 kB", freed)
			}
			if removed := strs(got["removed_ids"]); !sameSet(removed, idsA[:2]) {
				t.Errorf("removed_ids = %q, want %q", removed, idsA[:2])
			}
		}
		if job.Summary["policy"] != "keep_last=2" {
			t.Errorf("summary policy = %v", job.Summary["policy"])
		}
		for _, want := range []string{"kept 2, removed 2 snapshot(s)", "; prune freed ", " KiB (", "remain in the repository"} {
			if !strings.Contains(ev.Message, want) {
				t.Errorf("event message %q lacks %q", ev.Message, want)
			}
		}

		st, err := h.st.GetSiteStatus(t.Context(), a)
		if err != nil {
			t.Fatal(err)
		}
		if st.LastRetentionAt == nil || st.LastRetentionAt.Before(start.Add(-time.Second)) {
			t.Errorf("last_retention_at = %v", st.LastRetentionAt)
		}
		if st.Health.Status != health.Status || st.Health.Message != health.Message || st.LastJobID != "backup-job" {
			t.Errorf("status changed: %+v", st)
		}

		// Run again: nothing left to remove.
		again := h.wait(t, h.submitRetention(t, a))
		if again.Status != domain.StatusSuccess || num(again.Summary["removed"]) != 0 || num(again.Summary["kept"]) != 2 {
			t.Errorf("second run: %s %v", again.Status, again.Summary)
		}
	})

	t.Run("a backup and a retention started together both succeed", func(t *testing.T) {
		// No --retry-lock: were the two not serialized in this process,
		// whichever came second would fail on restic's lock.
		h.serve(t, h.snapshotter(0))
		a, b := uuid.NewString(), uuid.NewString()
		idsA := h.backups(t, a, 3, 50_000)
		h.stage(t, b, 40<<20) // a backup of a few seconds

		ret, snap := h.submitRetention(t, a), h.submitSnapshot(t, b)
		retJob, snapJob := h.wait(t, ret), h.wait(t, snap)
		for _, j := range []domain.Job{retJob, snapJob} {
			t.Logf("%s job: %s to %s", j.Type, j.StartedAt.Format("15:04:05.000"), j.FinishedAt.Format("15:04:05.000"))
		}
		if retJob.Status != domain.StatusSuccess || snapJob.Status != domain.StatusSuccess {
			t.Fatalf("retention %s (%s), snapshot %s (%s)", retJob.Status, retJob.Error, snapJob.Status, snapJob.Error)
		}
		if got := h.snapshotIDs(t, a); !slices.Equal(got, idsA[1:]) {
			t.Errorf("site a has %q, want %q", got, idsA[1:])
		}
		if got := h.snapshotIDs(t, b); len(got) != 1 || got[0] != snapJob.Summary["snapshot_id"] {
			t.Errorf("site b has %q, want the backup's snapshot %v", got, snapJob.Summary["snapshot_id"])
		}
		// They did meet: one of them waited for the other.
		waited := h.hasEvent(t, ret, func(e domain.JobEvent) bool { return strings.HasPrefix(e.Message, "waiting for 1 backup(s)") }) ||
			h.hasEvent(t, snap, func(e domain.JobEvent) bool { return strings.HasPrefix(e.Message, "waiting for retention") })
		if !waited {
			t.Error("neither job waited for the other: the test did not make them overlap")
		}
	})

	t.Run("retention waits for a backup running in this process", func(t *testing.T) {
		s := h.snapshotter(0)
		h.serve(t, s)
		a := uuid.NewString()
		h.backups(t, a, 2, 10_000)
		release, err := s.repoLock.Shared(t.Context(), nil) // a backup in progress
		if err != nil {
			t.Fatal(err)
		}
		id := uuid.NewString()
		live := h.follow(t, a, id)
		h.submitRetentionID(t, a, id)
		e := live.next(t, func(e domain.JobEvent) bool { return e.Step == "retention" })
		if e.Message != "waiting for 1 backup(s) in this process to finish before pruning" {
			t.Fatalf("first retention event = %q", e.Message)
		}
		time.Sleep(300 * time.Millisecond)
		if job, _ := h.st.GetJob(t.Context(), id); job.Status != domain.StatusRunning {
			t.Fatalf("job is %s while the backup runs", job.Status)
		}
		release()
		if job := h.wait(t, id); job.Status != domain.StatusSuccess || num(job.Summary["removed"]) != 0 {
			t.Fatalf("job %s %v: %s", job.Status, job.Summary, job.Error)
		}
	})

	t.Run("a stale lock of a killed restic is cleared and retention succeeds", func(t *testing.T) {
		h.serve(t, h.snapshotter(time.Second))
		a := uuid.NewString()
		ids := h.backups(t, a, 3, 10_000)
		h.staleExclusiveLock(t)

		job := h.wait(t, h.submitRetention(t, a))
		if job.Status != domain.StatusSuccess {
			t.Fatalf("job %s: %s", job.Status, job.Error)
		}
		if num(job.Summary["stale_locks_cleared"]) != 1 || num(job.Summary["removed"]) != 1 {
			t.Errorf("summary = %v", job.Summary)
		}
		ev := h.event(t, job.ID, func(e domain.JobEvent) bool { return e.Level == domain.LevelWarn })
		if !strings.HasPrefix(ev.Message, "cleared 1 stale restic lock(s)") || num(ev.Data["stale_locks_cleared"]) != 1 {
			t.Errorf("event = %q %v", ev.Message, ev.Data)
		}
		if got := h.snapshotIDs(t, a); !slices.Equal(got, ids[1:]) {
			t.Errorf("site has %q, want %q", got, ids[1:])
		}
	})

	t.Run("a live lock is not removed: the job is retried, then fails", func(t *testing.T) {
		h.serve(t, h.snapshotter(500*time.Millisecond))
		a := uuid.NewString()
		h.backups(t, a, 2, 10_000)
		release := h.liveExclusiveLock(t)
		job := h.wait(t, h.submitRetention(t, a))
		if h.lockCount(t) != 1 {
			t.Error("the live lock was removed")
		}
		release()
		if job.Status != domain.StatusFailed || !strings.Contains(job.Error, "locked by a live process") {
			t.Fatalf("job %s: %s", job.Status, job.Error)
		}
		// A locked repository may come free: every attempt but the last
		// was retried.
		if job.Attempts != 3 {
			t.Errorf("attempts = %d, want all 3", job.Attempts)
		}
		retries := 0
		for _, e := range h.events(t, job.ID) {
			if e.Step == "retry" && strings.Contains(e.Message, "locked by a live process") {
				retries++
			}
		}
		if retries != 2 {
			t.Errorf("%d retry events naming the lock, want 2", retries)
		}
		if n := len(h.snapshotIDs(t, a)); n != 2 {
			t.Errorf("%d snapshots left, want 2", n)
		}
	})

	t.Run("no policy wired: the job fails before restic runs", func(t *testing.T) {
		s := h.snapshotter(0)
		s.Retention = config.RetentionPolicy{}
		h.serve(t, s)
		a := uuid.NewString()
		h.backups(t, a, 2, 10_000)
		job := h.wait(t, h.submitRetention(t, a))
		if job.Status != domain.StatusFailed || !strings.HasPrefix(job.Error, "restic_retention_policy: keeps nothing") {
			t.Fatalf("job %s: %s", job.Status, job.Error)
		}
		if n := len(h.snapshotIDs(t, a)); n != 2 {
			t.Errorf("%d snapshots left, want 2", n)
		}
	})
}

func TestRetentionOptions(t *testing.T) {
	got := restic.ForgetArgs(RetentionOptions("s-1", []string{"--keep-last", "2"}))
	want := []string{"forget", "--json", "--host", domain.ResticHost("s-1"), "--tag", domain.SiteTag("s-1"), "--group-by", "host", "--keep-last", "2"}
	if !slices.Equal(got, want) {
		t.Errorf("argv = %q\nwant   %q", got, want)
	}
	// The site tag is the one backups put on their snapshots.
	if !slices.Contains(domain.SnapshotTags("s-1", "job-1"), domain.SiteTag("s-1")) {
		t.Errorf("Tags %q lack %q", domain.SnapshotTags("s-1", "job-1"), domain.SiteTag("s-1"))
	}
}

type harness struct {
	st      *store.Store
	infra   *bus.Infra
	nc      *nats.Conn
	repo    restic.Repo
	staging string
	// stagingID is staging's id, which the snapshot requests name.
	stagingID string
	policy    config.RetentionPolicy
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	stack := testkit.StartStack(t)
	st := stack.OpenStore(t)
	nc, err := bus.Connect(stack.NATSURL, "snapshotter-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	infra, err := bus.Ensure(t.Context(), js, bus.Settings{LeaseTTL: 10 * time.Second, AckWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	repo := restic.Repo{Bin: testkit.ResticBin(t), Repository: filepath.Join(dir, "repo"), Password: "retention-test-password-5c1",
		CacheDir: filepath.Join(dir, "cache")}
	if err := repo.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The policy as an operator gives it, through config.
	cfg, err := config.Load("", []string{`SATORU_RESTIC_RETENTION_POLICY={"keep_last":2}`})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{st: st, infra: infra, nc: nc, repo: repo, staging: filepath.Join(dir, "staging"), policy: cfg.ResticRetentionPolicy}
	if h.stagingID, err = staging.ID(h.staging); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) snapshotter(retryLock time.Duration) *Snapshotter {
	repo := h.repo
	repo.RetryLock = retryLock
	s := &Snapshotter{Store: h.st, Repo: repo, StagingRoot: h.staging, StagingID: h.stagingID, Worker: "test-snapshotter", Retention: h.policy, RetentionLimit: time.Minute}
	s.initialised.Store(true) // newHarness made the repository
	return s
}

// serve runs s as the service until the (sub)test ends.
func (h *harness) serve(t *testing.T, s *Snapshotter) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := Deps{
		Settings: Settings{Worker: "test-snapshotter", Concurrency: 2, AckWait: 10 * time.Second, Heartbeat: time.Second,
			LeaseRetry: 200 * time.Millisecond, MaxAttempts: 3, RetryBase: 2 * time.Second, StagingRoot: s.StagingRoot, Repo: s.Repo},
		Store: h.st, Infra: h.infra, Registry: prometheus.NewRegistry(),
		Log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := Serve(ctx, d, s); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// backups makes n snapshots of a site the way the snapshotter makes them,
// each holding only new data (size bytes of it), and returns their ids,
// oldest first.
func (h *harness) backups(t *testing.T, site string, n, size int) []string {
	t.Helper()
	dir := t.TempDir()
	var ids []string
	for i := range n {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		writeRandom(t, filepath.Join(dir, "f"), size)
		s, err := h.repo.Backup(t.Context(), restic.BackupOptions{Paths: []string{dir}, Host: domain.ResticHost(site),
			Tags: domain.SnapshotTags(site, fmt.Sprintf("job-%d", i))}, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.SnapshotID)
	}
	return ids
}

const stagedTarget = "0123456789abcdef"

// stage puts size bytes into a site's staging, as a pull would.
func (h *harness) stage(t *testing.T, site string, size int) {
	t.Helper()
	writeRandom(t, filepath.Join(h.staging, site, stagedTarget, "data.bin"), size)
}

func writeRandom(t *testing.T, path string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) submitRetention(t *testing.T, site string) string {
	t.Helper()
	id := uuid.NewString()
	h.submitRetentionID(t, site, id)
	return id
}

// submitRetentionID submits a retention job as the API does.
func (h *harness) submitRetentionID(t *testing.T, site, id string) {
	t.Helper()
	h.submit(t, domain.Job{ID: id, SiteUUID: site, Type: domain.JobRetention, Status: domain.StatusQueued, CreatedAt: time.Now().UTC()},
		string(domain.JobRetention))
}

// submitSnapshot hands a backup job to the snapshotter as the puller does
// after pulling the site's one target.
func (h *harness) submitSnapshot(t *testing.T, site string) string {
	t.Helper()
	id := uuid.NewString()
	h.submitSnapshotID(t, site, id)
	return id
}

// submitSnapshotID is submitSnapshot with the job id given.
func (h *harness) submitSnapshotID(t *testing.T, site, id string) {
	t.Helper()
	now := time.Now().UTC()
	h.submit(t, domain.Job{ID: id, SiteUUID: site, Type: domain.JobBackup, Status: domain.StatusRunning, Attempts: 1,
		CreatedAt: now, StartedAt: &now, Worker: "test-puller", HandOff: &domain.HandOff{Staging: h.stagingID, Worker: "test-puller"},
		Targets: []domain.TargetRun{{TargetHash: stagedTarget, Path: "/data", Mode: domain.ModeDirectory, Status: domain.HealthSuccess}}},
		events.StepSnapshot)
}

func (h *harness) submit(t *testing.T, job domain.Job, reqType string) {
	t.Helper()
	if err := h.st.InsertJob(t.Context(), job); err != nil {
		t.Fatal(err)
	}
	req := events.StepRequest(job, reqType)
	if err := h.infra.Publish(t.Context(), req); err != nil {
		t.Fatal(err)
	}
}

// wait returns the job once it has finished.
func (h *harness) wait(t *testing.T, id string) domain.Job {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		job, err := h.st.GetJob(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if job.Status.Terminal() {
			return job
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s", id, job.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) events(t *testing.T, id string) []domain.JobEvent {
	t.Helper()
	evs, err := h.st.ListEvents(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func (h *harness) hasEvent(t *testing.T, id string, match func(domain.JobEvent) bool) bool {
	t.Helper()
	return slices.ContainsFunc(h.events(t, id), match)
}

// event returns the job's first event that matches.
func (h *harness) event(t *testing.T, id string, match func(domain.JobEvent) bool) domain.JobEvent {
	t.Helper()
	evs := h.events(t, id)
	if i := slices.IndexFunc(evs, match); i >= 0 {
		return evs[i]
	}
	for _, e := range evs {
		t.Logf("event %d %s %s: %s %v", e.Seq, e.Step, e.Level, e.Message, e.Data)
	}
	t.Fatalf("job %s has no such event", id)
	return domain.JobEvent{}
}

// liveEvents follows a job's step events as they are published (the store
// gets them only when a step ends).
type liveEvents struct{ sub *nats.Subscription }

func (h *harness) follow(t *testing.T, site, jobID string) liveEvents {
	t.Helper()
	sub, err := h.nc.SubscribeSync(events.EventSubject(site, jobID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return liveEvents{sub}
}

func (l liveEvents) next(t *testing.T, match func(domain.JobEvent) bool) domain.JobEvent {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		msg, err := l.sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var se events.StepEvent
		if err := json.Unmarshal(msg.Data, &se); err != nil {
			t.Fatal(err)
		}
		if match(se.Event) {
			return se.Event
		}
	}
	t.Fatal("no matching event published")
	return domain.JobEvent{}
}

func (h *harness) snapshotIDs(t *testing.T, site string) []string {
	t.Helper()
	snaps, err := h.repo.Snapshots(t.Context(), domain.SiteTag(site))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range snaps {
		ids = append(ids, s.ID)
	}
	return ids
}

// lockHolder starts `restic key passwd`, which takes the exclusive lock
// and then waits for a new password on stdin, and returns once the lock
// is in the repository.
func (h *harness) lockHolder(t *testing.T) (cmd *exec.Cmd, stdin *os.File, exited <-chan struct{}) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd = exec.Command(h.repo.Bin, "key", "passwd")
	cmd.Env = append(os.Environ(), "RESTIC_REPOSITORY="+h.repo.Repository, "RESTIC_PASSWORD="+h.repo.Password,
		"RESTIC_PASSWORD_FILE=", "RESTIC_CACHE_DIR="+h.repo.CacheDir)
	cmd.Stdin = r
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done; w.Close() })
	deadline := time.Now().Add(15 * time.Second)
	for h.lockCount(t) == 0 {
		select {
		case <-done:
			t.Fatal("restic key passwd exited before taking the lock")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("restic key passwd took no lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd, w, done
}

// staleExclusiveLock leaves the exclusive lock of a SIGKILLed restic.
func (h *harness) staleExclusiveLock(t *testing.T) {
	t.Helper()
	cmd, _, exited := h.lockHolder(t)
	_ = cmd.Process.Kill()
	<-exited // reaped: restic judges a lock stale once its pid is gone
	if n := h.lockCount(t); n != 1 {
		t.Fatalf("%d locks after the kill, want the stale one", n)
	}
}

// liveExclusiveLock holds the exclusive lock until release is called.
func (h *harness) liveExclusiveLock(t *testing.T) (release func()) {
	t.Helper()
	_, stdin, exited := h.lockHolder(t)
	return func() { stdin.Close(); <-exited }
}

func (h *harness) lockCount(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(h.repo.Repository, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if len(e.Name()) == 64 {
			n++
		}
	}
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// num reads a number back from the store (int32, int64 or float64).
func num(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int32:
		return int64(n)
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return -1
}

// strs reads a list of strings back from the store.
func strs(v any) []string {
	b, _ := json.Marshal(v)
	var out []string
	_ = json.Unmarshal(b, &out)
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
