package jobrun_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

// Crash tests: a worker is killed mid-job the way SIGKILL leaves things
// (its NATS connection gone, so it neither acks, naks nor releases its
// lease; its store writes stop), on a real in-process NATS server and the
// embedded store, with short timings in the ratios config derives from
// job_heartbeat_seconds.
const (
	hb        = 400 * time.Millisecond
	ackWait   = 3 * hb // job_ack_wait_seconds
	leaseTTL  = 2 * hb // site_lease_seconds
	slack     = hb / 2 // scheduling and fetch latency on a busy machine
	waitLimit = 20 * time.Second
)

// rig is the shared infrastructure: NATS with JetStream and the store.
type rig struct {
	stack *testkit.Stack
	st    *store.Store
	in    *bus.Infra // the test's own connection, for publishing jobs
}

func newRig(t *testing.T) *rig {
	t.Helper()
	stack := testkit.StartStack(t)
	r := &rig{stack: stack, st: stack.OpenStore(t)}
	r.in = r.connect(t, "test")
	return r
}

// connect opens a NATS connection (closed when the test ends) and
// declares the bus objects on it with the crash timings.
func (r *rig) connect(t *testing.T, name string) *bus.Infra {
	t.Helper()
	nc, err := nats.Connect(r.stack.NATSURL, nats.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	in, err := bus.Ensure(t.Context(), js, bus.Settings{LeaseTTL: leaseTTL, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// queue stores a queued job and publishes its request.
func (r *rig) queue(t *testing.T, id, site string, typ domain.JobType) {
	t.Helper()
	j := domain.Job{ID: id, SiteUUID: site, Type: typ, Status: domain.StatusQueued, CreatedAt: time.Now().UTC()}
	if err := r.st.InsertJob(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	if err := r.in.Publish(t.Context(), events.JobRequest{V: events.JobRequestV1, JobID: id, SiteUUID: site, Type: string(typ)}); err != nil {
		t.Fatal(err)
	}
}

// waitJob waits for the job to reach a terminal status.
func (r *rig) waitJob(t *testing.T, id string) domain.Job {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		j, err := r.st.GetJob(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.Status.Terminal() {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still %s after %s (worker %s, attempts %d)", id, j.Status, waitLimit, j.Worker, j.Attempts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// events lists the job's stored events.
func (r *rig) events(t *testing.T, id string) []domain.JobEvent {
	t.Helper()
	evs, err := r.st.ListEvents(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

var errDead = errors.New("process is dead")

// mortalStore is a worker's view of the store: it stops writing (and
// reading) when its process dies, and counts its event writes.
type mortalStore struct {
	st      *store.Store
	dead    atomic.Bool
	appends atomic.Int32 // AppendEvents calls that wrote
}

func (m *mortalStore) check() error {
	if m.dead.Load() {
		return errDead
	}
	return nil
}

func (m *mortalStore) GetJob(ctx context.Context, id string) (domain.Job, error) {
	if err := m.check(); err != nil {
		return domain.Job{}, err
	}
	return m.st.GetJob(ctx, id)
}

func (m *mortalStore) StartJob(ctx context.Context, id, worker string, attempts int, at time.Time) error {
	if err := m.check(); err != nil {
		return err
	}
	return m.st.StartJob(ctx, id, worker, attempts, at)
}

func (m *mortalStore) HeartbeatJob(ctx context.Context, id string, at time.Time) error {
	if err := m.check(); err != nil {
		return err
	}
	return m.st.HeartbeatJob(ctx, id, at)
}

func (m *mortalStore) RetryJob(ctx context.Context, id, errMsg string, next, at time.Time) error {
	if err := m.check(); err != nil {
		return err
	}
	return m.st.RetryJob(ctx, id, errMsg, next, at)
}

func (m *mortalStore) FinishJobTargets(ctx context.Context, id string, status domain.JobStatus, errMsg string, summary map[string]any, targets []domain.TargetRun, at time.Time) error {
	if err := m.check(); err != nil {
		return err
	}
	return m.st.FinishJobTargets(ctx, id, status, errMsg, summary, targets, at)
}

func (m *mortalStore) AppendEvents(ctx context.Context, jobID string, evs ...domain.JobEvent) error {
	if err := m.check(); err != nil {
		return err
	}
	if err := m.st.AppendEvents(ctx, jobID, evs...); err != nil {
		return err
	}
	m.appends.Add(1)
	return nil
}

func (m *mortalStore) ListEvents(ctx context.Context, jobID string) ([]domain.JobEvent, error) {
	if err := m.check(); err != nil {
		return nil, err
	}
	return m.st.ListEvents(ctx, jobID)
}

func (m *mortalStore) HandOffJob(ctx context.Context, id string, summary map[string]any, targets []domain.TargetRun, h domain.HandOff, at time.Time) error {
	if err := m.check(); err != nil {
		return err
	}
	return m.st.HandOffJob(ctx, id, summary, targets, h, at)
}

func (m *mortalStore) ContinueJob(ctx context.Context, id, worker, step string, attempts int, at time.Time) error {
	if err := m.check(); err != nil {
		return err
	}
	return m.st.ContinueJob(ctx, id, worker, step, attempts, at)
}

var _ jobrun.Store = (*mortalStore)(nil)

// delivery is one message a worker's handler got.
type delivery struct {
	at  time.Time
	num uint64
}

// worker is one process running one service: its own NATS connection
// and bus objects, its store view, an executor and a consumer runner.
type worker struct {
	name   string
	nc     *nats.Conn
	store  *mortalStore
	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	deliveries []delivery
}

func (r *rig) startWorker(t *testing.T, name string, c events.Consumer, maxAttempts int, work jobrun.Work) *worker {
	t.Helper()
	return r.startWorkerWith(t, name, c, maxAttempts, work, nil)
}

// startWorkerWith is startWorker with the executor adjusted by set
// (a staging id, steps served in process).
func (r *rig) startWorkerWith(t *testing.T, name string, c events.Consumer, maxAttempts int, work jobrun.Work, set func(*jobrun.Executor)) *worker {
	t.Helper()
	nc, err := nats.Connect(r.stack.NATSURL, nats.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	in, err := bus.Ensure(t.Context(), js, bus.Settings{LeaseTTL: leaseTTL, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := in.Consumer(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})).With("worker", name)
	w := &worker{name: name, nc: nc, store: &mortalStore{st: r.st}, done: make(chan struct{})}
	x := &jobrun.Executor{
		Store: w.store, Bus: in, Worker: name, Heartbeat: hb, MaxAttempts: maxAttempts,
		LeaseRetry: 100 * time.Millisecond, RetryBase: 100 * time.Millisecond,
		IsNotFound: func(err error) bool { return errors.Is(err, store.ErrNotFound) },
		Log:        log,
	}
	if set != nil {
		set(x)
	}
	pick := func(domain.Job) (jobrun.Work, error) { return work, nil }
	run := &bus.Runner{Consumer: cons, Workers: 1, AckWait: ackWait, RetryDelay: 100 * time.Millisecond, Log: log,
		Handle: func(ctx context.Context, d bus.Delivery) error {
			w.mu.Lock()
			w.deliveries = append(w.deliveries, delivery{at: time.Now(), num: d.NumDelivered})
			w.mu.Unlock()
			return x.Handle(ctx, d, pick)
		}}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.done)
		_ = run.Run(ctx)
	}()
	t.Cleanup(w.stop)
	return w
}

// stop ends the worker and waits for it (its goroutines log to t).
func (w *worker) stop() {
	w.cancel()
	<-w.done
	w.nc.Close()
}

// kill does what SIGKILL does to the worker's process: its connection
// and its store writes end at once, with nothing handed back.
func (w *worker) kill() {
	w.store.dead.Store(true)
	w.nc.Close()
	w.stop()
}

func (w *worker) firstDelivery(t *testing.T) delivery {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.deliveries) == 0 {
		t.Fatalf("%s got no delivery", w.name)
	}
	return w.deliveries[0]
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// doomedWork records early events, then on cue late ones, then works
// until it is killed.
type doomedWork struct {
	step     string
	started  chan domain.Job
	late     chan struct{}
	lateDone chan struct{}
}

func newDoomedWork(step string) *doomedWork {
	return &doomedWork{step: step, started: make(chan domain.Job, 1), late: make(chan struct{}), lateDone: make(chan struct{})}
}

func (d *doomedWork) work(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	for i := 1; i <= 3; i++ {
		rec.Add(ctx, domain.JobEvent{Step: d.step, Message: fmt.Sprintf("early %d", i)})
	}
	d.started <- job
	select {
	case <-d.late:
	case <-ctx.Done():
		return jobrun.Outcome{Status: domain.StatusFailed, Error: "stopped"}
	}
	for i := 1; i <= 2; i++ {
		rec.Add(ctx, domain.JobEvent{Step: d.step, Message: fmt.Sprintf("late %d", i)})
	}
	close(d.lateDone)
	<-ctx.Done()
	return jobrun.Outcome{Status: domain.StatusFailed, Error: "stopped"}
}

func rescueWork(step string) jobrun.Work {
	return func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		rec.Add(ctx, domain.JobEvent{Step: step, Message: "done by the rescuer"})
		return jobrun.Outcome{Status: domain.StatusSuccess}
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// runUntilKilled waits for the doomed work to start, checks its events
// reach the store on heartbeats, batched, while the job runs, then has it
// record late events the store never gets and kills the worker. It
// returns when the kill happened.
func runUntilKilled(t *testing.T, r *rig, jobID string, doomed *worker, d *doomedWork, storedBefore int) time.Time {
	t.Helper()
	recv(t, d.started, "the doomed work to start")
	// Nothing in the work flushes: the heartbeat writes the start event
	// and the three early ones, in one batch (two if a tick fell between).
	want := storedBefore + 4
	deadline := time.Now().Add(3 * hb)
	for len(r.events(t, jobID)) < want {
		if time.Now().After(deadline) {
			t.Fatalf("after %s the store holds %d events of the running job, want %d: heartbeats do not write them", 3*hb, len(r.events(t, jobID)), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := doomed.store.appends.Load(); n < 1 || n > 2 {
		t.Errorf("%d event writes for 4 events, want them batched per heartbeat (1 or 2)", n)
	}
	if j, _ := r.st.GetJob(t.Context(), jobID); j.Status != domain.StatusRunning {
		t.Fatalf("job is %s while its work runs", j.Status)
	}
	// The store is gone for this worker from now on; NATS is not yet.
	doomed.store.dead.Store(true)
	close(d.late)
	recv(t, d.lateDone, "the late events")
	killed := time.Now()
	doomed.kill()
	return killed
}

// checkEvents asserts the job's stored events are numbered 1, 2, 3, ...
// and hold want in this order (each a substring of one message).
func checkEvents(t *testing.T, evs []domain.JobEvent, want ...string) {
	t.Helper()
	var msgs []string
	for i, ev := range evs {
		msgs = append(msgs, fmt.Sprintf("%d:%s:%s", ev.Seq, ev.Step, ev.Message))
		if ev.Seq != i+1 {
			t.Errorf("event %d has seq %d, want %d (seqs must be unique and increasing)", i, ev.Seq, i+1)
		}
	}
	all := strings.Join(msgs, "\n")
	at := 0
	for _, w := range want {
		i := strings.Index(all[at:], w)
		if i < 0 {
			t.Fatalf("events lack %q (in order) after offset %d:\n%s", w, at, all)
		}
		at += i + len(w)
	}
}

// checkPromptRedelivery asserts the rescuer got the job within three
// heartbeats of the kill, on the first redelivery: the dead worker's
// lease had expired, so it started at once.
func checkPromptRedelivery(t *testing.T, rescuer *worker, killed time.Time) {
	t.Helper()
	d := rescuer.firstDelivery(t)
	t.Logf("redelivered %s after the kill (heartbeat %s)", d.at.Sub(killed), hb)
	if took := d.at.Sub(killed); took > 3*hb+slack {
		t.Errorf("redelivered %s after the kill, want within 3 heartbeats (%s)", took, 3*hb)
	}
	if d.num != 2 {
		t.Errorf("rescuer's first delivery is number %d, want 2", d.num)
	}
	rescuer.mu.Lock()
	defer rescuer.mu.Unlock()
	if n := len(rescuer.deliveries); n != 1 {
		t.Errorf("rescuer got %d deliveries, want 1 (a busy lease made it wait)", n)
	}
}

func TestKilledWorkerJobComesBackWithinThreeHeartbeats(t *testing.T) {
	r := newRig(t)
	r.queue(t, "job-1", "site-1", domain.JobBackup)
	d := newDoomedWork("pull")
	doomed := r.startWorker(t, "doomed", events.ConsumerPuller, 3, d.work)
	killed := runUntilKilled(t, r, "job-1", doomed, d, 0)

	if j, _ := r.st.GetJob(t.Context(), "job-1"); j.Status != domain.StatusRunning || j.Worker != "doomed" {
		t.Fatalf("after the kill the job is %s on %s, want running on doomed", j.Status, j.Worker)
	}
	rescuer := r.startWorker(t, "rescuer", events.ConsumerPuller, 3, rescueWork("pull"))
	j := r.waitJob(t, "job-1")
	if j.Status != domain.StatusSuccess || j.Worker != "rescuer" || j.Attempts != 2 {
		t.Errorf("job = %s on %s, attempts %d, error %q; want success on rescuer in attempt 2", j.Status, j.Worker, j.Attempts, j.Error)
	}
	checkPromptRedelivery(t, rescuer, killed)
	checkEvents(t, r.events(t, "job-1"),
		"job:started by doomed (attempt 1)", "pull:early 1", "pull:early 2", "pull:early 3",
		"pull:late 1", "pull:late 2", // published by doomed, stored by rescuer
		"job:started by rescuer (attempt 2)", "pull:done by the rescuer", "job:finished: success")
	// The lease is released right after the outcome is written, so the
	// finished job may be seen a moment before.
	deadline := time.Now().Add(2 * time.Second)
	for {
		h, ok, err := r.in.LeaseHolderOf(t.Context(), events.LeaseKey("site-1"))
		if err == nil && !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("site lease still held by %+v (%v) 2 s after the job finished", h, err)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handOffWork is a puller step that hands the job to the snapshotter.
func handOffWork(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	rec.Add(ctx, domain.JobEvent{Step: "pull", Message: "pulled"})
	return jobrun.Outcome{Status: domain.StatusRunning, Next: events.StepSnapshot,
		Summary: map[string]any{"pulled": 1}, Targets: []domain.TargetRun{{TargetHash: "h1", Path: "/data"}}}
}

func TestKilledSnapshotStepCountsAnAttempt(t *testing.T) {
	for _, tc := range []struct {
		name        string
		maxAttempts int
		status      domain.JobStatus
		attempts    int
		tail        []string
	}{
		{"attempt left: runs again", 3, domain.StatusSuccess, 2,
			[]string{"snapshot:snapshot step started again by rescuer (attempt 2)", "snapshot:done by the rescuer", "job:finished: success"}},
		{"no attempt left: worker lost", 1, domain.StatusFailed, 1,
			[]string{"job:worker lost: 1 attempts did not finish", "job:finished: failed: worker lost"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.queue(t, "job-2", "site-2", domain.JobBackup)
			r.startWorker(t, "puller", events.ConsumerPuller, tc.maxAttempts, handOffWork)
			d := newDoomedWork("snapshot")
			doomed := r.startWorker(t, "doomed", events.ConsumerSnapshotter, tc.maxAttempts, d.work)
			// Stored before the snapshot step: the puller's start, its
			// event and the hand-off.
			killed := runUntilKilled(t, r, "job-2", doomed, d, 2)

			rescuer := r.startWorker(t, "rescuer", events.ConsumerSnapshotter, tc.maxAttempts, rescueWork("snapshot"))
			j := r.waitJob(t, "job-2")
			if j.Status != tc.status || j.Attempts != tc.attempts {
				t.Errorf("job = %s, attempts %d, error %q; want %s in %d attempts", j.Status, j.Attempts, j.Error, tc.status, tc.attempts)
			}
			checkPromptRedelivery(t, rescuer, killed)
			want := append([]string{
				"job:started by puller (attempt 1)", "pull:pulled",
				"snapshot:snapshot step taken over by doomed", "snapshot:early 1", "snapshot:early 3",
				"snapshot:late 1", "snapshot:late 2",
			}, tc.tail...)
			checkEvents(t, r.events(t, "job-2"), want...)
		})
	}
}
