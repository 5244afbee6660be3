package syncer

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

// The integration test runs the syncer's real consumer against the
// embedded NATS and store, real restic, and the S3 stand-in for B2.
// Nothing skips: a missing restic fails the run.

const (
	testAccessKey = "AKIDSATORUSYNC01"
	testSecretKey = "b2-app-key-Zx81-do-not-leak"
	testPassword  = "local-and-offsite-password-42"
)

// syncEnv is one test's world: the stack, the S3 server, a local
// repository with a staging folder to back up.
type syncEnv struct {
	t       *testing.T
	store   *store.Store
	infra   *bus.Infra
	js      jetstream.JetStream
	s3      *testkit.S3
	local   restic.Repo
	staging string
	logs    *lockedBuffer
	ids     int
}

func newSyncEnv(t *testing.T) *syncEnv {
	t.Helper()
	ctx := t.Context()
	stack := testkit.StartStack(t)
	e := &syncEnv{t: t, store: stack.OpenStore(t), logs: &lockedBuffer{}}
	nc, err := nats.Connect(stack.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e.js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e.infra, err = bus.Ensure(ctx, e.js, bus.Settings{LeaseTTL: 10 * time.Second, AckWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e.s3 = testkit.StartS3(t, testAccessKey, testSecretKey)
	e.s3.Bucket(t, "satoru-offsite")

	dir := t.TempDir()
	e.staging = filepath.Join(dir, "staging")
	if err := os.MkdirAll(e.staging, 0o700); err != nil {
		t.Fatal(err)
	}
	e.local = restic.Repo{Bin: testkit.ResticBin(t), Repository: filepath.Join(dir, "repo"), Password: testPassword,
		CacheDir: filepath.Join(dir, "cache"), RetryLock: time.Minute}
	if err := e.local.Init(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// remote is the offsite repository with the given key pair.
func (e *syncEnv) remote(accessKey, secretKey string) restic.Repo {
	e.t.Helper()
	r, err := RemoteRepo(e.local, e.s3.Repository("satoru-offsite", "satoru/repo"), accessKey, secretKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// startSyncer runs the service until the returned stop is called (or the
// test ends).
func (e *syncEnv) startSyncer(remote restic.Repo) (stop func()) {
	e.t.Helper()
	return e.startSyncerWith(remote, 2*time.Minute)
}

// startSyncerWith is startSyncer with a job_timeout_sync_seconds of limit.
func (e *syncEnv) startSyncerWith(remote restic.Repo, limit time.Duration) (stop func()) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{
			Settings: Settings{Worker: "syncer-test", Concurrency: 1, AckWait: 10 * time.Second, Heartbeat: time.Second,
				LeaseRetry: 200 * time.Millisecond, MaxAttempts: 3, Local: e.local, Remote: remote, SyncLimit: limit},
			Store: e.store, Infra: e.infra, Registry: prometheus.NewRegistry(),
			Log: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("syncer Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				e.t.Error("syncer did not stop")
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

// backup writes a new file into staging and snapshots it.
func (e *syncEnv) backup(name string) (id string, content []byte) {
	e.t.Helper()
	content = make([]byte, 100_000)
	rand.Read(content)
	if err := os.WriteFile(filepath.Join(e.staging, name), content, 0o600); err != nil {
		e.t.Fatal(err)
	}
	s, err := e.local.Backup(e.t.Context(), restic.BackupOptions{Paths: []string{"."}, Dir: e.staging, Host: "satoru-test"}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return s.SnapshotID, content
}

// runSync creates a restic_sync job the way the API does (insert, then
// publish) and waits for it to finish.
func (e *syncEnv) runSync() domain.Job {
	e.t.Helper()
	ctx := e.t.Context()
	e.ids++
	id := fmt.Sprintf("sync-job-%d", e.ids)
	job := domain.Job{ID: id, Type: domain.JobResticSync, Status: domain.StatusQueued, CreatedAt: time.Now().UTC()}
	if err := e.store.InsertJob(ctx, job); err != nil {
		e.t.Fatal(err)
	}
	if err := e.infra.Publish(ctx, events.JobRequest{V: events.JobRequestV1, JobID: id, SiteUUID: "", Type: string(domain.JobResticSync)}); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		j, err := e.store.GetJob(ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if j.Status.Terminal() {
			return j
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("sync job %s did not finish", id)
	return domain.Job{}
}

func (e *syncEnv) state() domain.SyncState {
	e.t.Helper()
	st, err := e.store.GetSyncState(e.t.Context(), domain.OffsiteSyncStateID)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// published returns the step events published on NATS for a job.
func (e *syncEnv) published(jobID string) []events.StepEvent {
	e.t.Helper()
	ctx := e.t.Context()
	cons, err := e.js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.EventSubject("", jobID)}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []events.StepEvent
	for {
		batch, err := cons.Fetch(100, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev events.StepEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				e.t.Fatal(err)
			}
			out = append(out, ev)
		}
		if n == 0 {
			return out
		}
	}
}

func TestIntegrationSync(t *testing.T) {
	e := newSyncEnv(t)
	ctx := t.Context()
	id1, content1 := e.backup("one.bin")
	id2, _ := e.backup("two.bin")
	remote := e.remote(testAccessKey, testSecretKey)
	stop := e.startSyncer(remote)

	// First sync: the offsite repository is created and both snapshots copied.
	job := e.runSync()
	if job.Status != domain.StatusSuccess {
		t.Fatalf("first sync = %s: %s\n%s", job.Status, job.Error, e.logs)
	}
	offsite, err := remote.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	copyOf := map[string]string{}
	for _, s := range offsite {
		copyOf[s.Original] = s.ID
	}
	for _, id := range []string{id1, id2} {
		if copyOf[id] == "" {
			t.Errorf("local snapshot %s is not offsite; offsite has %+v", id[:8], offsite)
		}
	}
	target := t.TempDir()
	if err := remote.Restore(ctx, copyOf[id1], target); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(target, "one.bin")); err != nil || !bytes.Equal(got, content1) {
		t.Errorf("restored one.bin from offsite: %d bytes, %v; want the %d bytes backed up", len(got), err, len(content1))
	}
	st := e.state()
	if st.Status != domain.HealthSuccess || st.Error != "" || st.SnapshotsCopied != 2 || st.Bytes <= 0 ||
		st.SnapshotsPending != 0 || st.OldestPendingAt != nil || st.LastSuccessAt == nil || st.LastAttemptAt == nil {
		t.Errorf("sync state after the first sync = %+v", st)
	}
	if want := e.s3.Repository("satoru-offsite", "satoru/repo"); st.Repository != want {
		t.Errorf("sync state repository = %q, want %q", st.Repository, want)
	}
	if job.Summary["snapshots_copied"] != int32(2) && job.Summary["snapshots_copied"] != int64(2) {
		t.Errorf("job summary = %v", job.Summary)
	}
	evs := e.published(job.ID)
	var copiedEv, lagEv *domain.JobEvent
	for i := range evs {
		switch {
		case evs[i].Event.Step == "sync" && evs[i].Event.Data["snapshots_copied"] != nil:
			copiedEv = &evs[i].Event
		case evs[i].Event.Step == "sync_lag":
			lagEv = &evs[i].Event
		}
	}
	if copiedEv == nil || copiedEv.Data["snapshots_copied"] != float64(2) || copiedEv.Data["bytes"].(float64) <= 0 {
		t.Errorf("copied event = %+v", copiedEv)
	}
	if lagEv == nil || lagEv.Data["snapshots_pending"] != float64(0) {
		t.Errorf("lag event = %+v", lagEv)
	}
	if !strings.Contains(e.logs.String(), "initialised offsite repository") {
		t.Errorf("no initialisation logged:\n%s", e.logs)
	}

	// A third local snapshot is pending until the next sync.
	id3, _ := e.backup("three.bin")
	lag, err := measureLag(ctx, e.local, remote)
	if err != nil {
		t.Fatal(err)
	}
	if lag.SnapshotsPending() != 1 || lag.Pending[0] != id3 || lag.OldestPendingAt == nil || lag.OldestPendingAge <= 0 {
		t.Errorf("lag before the second sync = %+v, want %s pending", lag, id3[:8])
	}
	job = e.runSync()
	if job.Status != domain.StatusSuccess {
		t.Fatalf("second sync = %s: %s", job.Status, job.Error)
	}
	st2 := e.state()
	if st2.SnapshotsCopied != 1 || st2.SnapshotsPending != 0 || !st2.LastSuccessAt.After(*st.LastSuccessAt) {
		t.Errorf("sync state after the second sync = %+v", st2)
	}
	if lag, err := measureLag(ctx, e.local, remote); err != nil || lag.SnapshotsPending() != 0 {
		t.Errorf("lag after the second sync = %+v, %v", lag, err)
	}
	stop()

	// Wrong credentials: the job fails with a clear message, the last
	// success stays, and the secret shows up nowhere.
	e.backup("four.bin")
	denied := e.s3.Denied()
	e.startSyncer(e.remote(testAccessKey+"X", testSecretKey))
	job = e.runSync()
	if job.Status != domain.StatusFailed || !strings.Contains(job.Error, "offsite repository refused the credentials") {
		t.Fatalf("sync with wrong credentials = %s: %q", job.Status, job.Error)
	}
	if e.s3.Denied() == denied {
		t.Error("the S3 server refused nothing")
	}
	st3 := e.state()
	if st3.Status != domain.HealthFailed || st3.Error != job.Error || !st3.LastSuccessAt.Equal(*st2.LastSuccessAt) ||
		!st3.LastAttemptAt.After(*st2.LastAttemptAt) {
		t.Errorf("sync state after the failed sync = %+v (before: %+v)", st3, st2)
	}
	stored, err := e.store.ListEvents(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	all := fmt.Sprintf("%q %+v %+v %+v %s", job.Error, st3, stored, e.published(job.ID), e.logs)
	for _, secret := range []string{testSecretKey, testPassword} {
		if strings.Contains(all, secret) {
			t.Errorf("secret %q leaked into the job, its events, the sync state or the logs", secret)
		}
	}
	t.Logf("failed sync: %s", job.Error)
}

func TestSyncWithoutLocalRepository(t *testing.T) {
	// No backup has run yet: nothing to copy, no offsite repository made.
	dir := t.TempDir()
	local := restic.Repo{Bin: testkit.ResticBin(t), Repository: filepath.Join(dir, "none"), Password: testPassword, CacheDir: filepath.Join(dir, "c")}
	remote := local
	remote.Repository = filepath.Join(dir, "offsite")
	st := &memStore{}
	s := &Syncer{Store: st, Local: local, Remote: remote}
	out := runWork(t, s)
	if out.Status != domain.StatusSuccess || st.st.Status != domain.HealthSuccess || st.st.SnapshotsCopied != 0 {
		t.Fatalf("outcome %+v, state %+v", out, st.st)
	}
	if _, err := os.Stat(remote.Repository); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("offsite repository created without a local one: %v", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// measureLag lists both repositories as a sync does and compares them.
func measureLag(ctx context.Context, local, offsite restic.Repo) (Lag, error) {
	l, o, err := listBoth(ctx, local, offsite)
	if err != nil {
		return Lag{}, err
	}
	return ComputeLag(l, o, time.Now()), nil
}
