package jobrun_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
)

// Staging ids of the test's nodes.
const (
	stagingA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	stagingB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// nodeWith serves the snapshot step in process with snap, on staging.
func nodeWith(staging string, snap jobrun.Work) func(*jobrun.Executor) {
	return func(x *jobrun.Executor) {
		x.Staging = staging
		x.Local = map[string]func(domain.Job) (jobrun.Work, error){
			events.StepSnapshot: func(domain.Job) (jobrun.Work, error) { return snap, nil },
		}
	}
}

// jobsInStream is how many requests the job stream holds (a work queue
// keeps a request until it is acked).
func (r *rig) jobsInStream(t *testing.T) uint64 {
	t.Helper()
	str, err := r.in.JS.Stream(t.Context(), events.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// noSnapshotRequests starts a snapshotter that fails the test if any
// snapshot request reaches it: the in-process hand-off publishes none.
func (r *rig) noSnapshotRequests(t *testing.T) *atomic.Int32 {
	t.Helper()
	var got atomic.Int32
	r.startWorker(t, "bus-snapshotter", events.ConsumerSnapshotter, 3, func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		got.Add(1)
		return jobrun.Outcome{Status: domain.StatusFailed, Error: "snapshot request published for an in-process hand-off"}
	})
	return &got
}

// TestLocalHandOffRunsTheSnapshotInProcess: a node that serves the
// snapshot step runs it right after the pull, on the same delivery: the
// job is handed off as over the bus (summary, targets, hand-off time,
// "taken over" event) but no snapshot request is published, and the
// backup request stays in the stream until the job has finished.
func TestLocalHandOffRunsTheSnapshotInProcess(t *testing.T) {
	r := newRig(t)
	busSnaps := r.noSnapshotRequests(t)
	r.queue(t, "job-l", "site-l", domain.JobBackup)
	var held atomic.Uint64
	snap := func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		held.Store(r.jobsInStream(t))
		if h := job.HandOff; h == nil || h.Staging != stagingA || h.Worker != "node-a" || !h.Local {
			t.Errorf("snapshot step sees hand-off %+v, want local from node-a on %s", h, stagingA)
		}
		if job.Summary["pulled"] != 1 || len(job.Targets) != 1 || job.Step != events.StepSnapshot {
			t.Errorf("snapshot step sees summary %v, targets %v, step %q", job.Summary, job.Targets, job.Step)
		}
		rec.Add(ctx, domain.JobEvent{Step: "snapshot", Message: "snapped"})
		return jobrun.Outcome{Status: domain.StatusSuccess, Summary: job.Summary, Targets: job.Targets}
	}
	node := r.startWorkerWith(t, "node-a", events.ConsumerPuller, 3, handOffWork, nodeWith(stagingA, snap))

	j := r.waitJob(t, "job-l")
	if j.Status != domain.StatusSuccess || j.Worker != "node-a" || j.Attempts != 1 {
		t.Fatalf("job = %s on %s, attempts %d, error %q; want success on node-a in attempt 1", j.Status, j.Worker, j.Attempts, j.Error)
	}
	for _, k := range []string{"pulled", "backup_seconds", "handoff_seconds", "snapshot_seconds", "queue_seconds"} {
		if _, ok := j.Summary[k]; !ok {
			t.Errorf("summary lacks %s: %v", k, j.Summary)
		}
	}
	if j.HandOff == nil || !j.HandOff.Local || j.HandOff.Staging != stagingA {
		t.Errorf("job's hand-off = %+v, want local on %s", j.HandOff, stagingA)
	}
	checkEvents(t, r.events(t, "job-l"),
		"job:started by node-a (attempt 1)", "pull:pulled",
		"snapshot:snapshot step taken over by node-a", "snapshot:snapped", "job:finished: success")
	if n := held.Load(); n != 1 {
		t.Errorf("while the snapshot ran the stream held %d requests, want the unacked backup request (1)", n)
	}
	// Acked after the finish: the stream empties.
	deadline := time.Now().Add(2 * time.Second)
	for r.jobsInStream(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream still holds %d requests after the job finished", r.jobsInStream(t))
		}
		time.Sleep(20 * time.Millisecond)
	}
	node.mu.Lock()
	deliveries := len(node.deliveries)
	node.mu.Unlock()
	if deliveries != 1 || busSnaps.Load() != 0 {
		t.Errorf("node got %d deliveries, the bus snapshotter %d; want 1 and 0", deliveries, busSnaps.Load())
	}
}

// TestLocalHandOffKilledBeforeTheSnapshotPullsAgain: a node killed after
// its pull, while its snapshot step runs, never acked the backup
// request: it comes back to another node, which pulls again (a new
// attempt) and snapshots its own pull; no snapshot request ever goes
// to the bus, so no other staging is snapshotted.
func TestLocalHandOffKilledBeforeTheSnapshotPullsAgain(t *testing.T) {
	r := newRig(t)
	busSnaps := r.noSnapshotRequests(t)
	r.queue(t, "job-k", "site-k", domain.JobBackup)
	d := newDoomedWork("snapshot")
	doomed := r.startWorkerWith(t, "node-a", events.ConsumerPuller, 3, handOffWork, nodeWith(stagingA, d.work))
	// Stored before the snapshot step: the start and the pull's event.
	killed := runUntilKilled(t, r, "job-k", doomed, d, 2)

	var pulls atomic.Int32
	pullAgain := func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		pulls.Add(1)
		if job.HandOff != nil || job.Targets != nil {
			t.Errorf("the new attempt's pull sees the last attempt's hand-off %+v, targets %v", job.HandOff, job.Targets)
		}
		return handOffWork(ctx, job, rec)
	}
	var snapped atomic.Value
	snap := func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		snapped.Store(*job.HandOff)
		return rescueWork("snapshot")(ctx, job, rec)
	}
	rescuer := r.startWorkerWith(t, "node-b", events.ConsumerPuller, 3, pullAgain, nodeWith(stagingB, snap))
	j := r.waitJob(t, "job-k")
	if j.Status != domain.StatusSuccess || j.Worker != "node-b" || j.Attempts != 2 {
		t.Fatalf("job = %s on %s, attempts %d, error %q; want success on node-b in attempt 2", j.Status, j.Worker, j.Attempts, j.Error)
	}
	checkPromptRedelivery(t, rescuer, killed)
	if pulls.Load() != 1 {
		t.Errorf("node-b pulled %d times, want 1", pulls.Load())
	}
	if h, _ := snapped.Load().(domain.HandOff); h.Staging != stagingB || h.Worker != "node-b" {
		t.Errorf("node-b snapshotted the pull of %+v, want its own", h)
	}
	checkEvents(t, r.events(t, "job-k"),
		"job:started by node-a (attempt 1)", "pull:pulled",
		"snapshot:snapshot step taken over by node-a", "snapshot:early 1", "snapshot:late 2",
		"job:started by node-b (attempt 2)", "pull:pulled",
		"snapshot:snapshot step taken over by node-b", "snapshot:done by the rescuer", "job:finished: success")
	if busSnaps.Load() != 0 {
		t.Errorf("%d snapshot requests reached the bus", busSnaps.Load())
	}
}

// TestBusHandOffCarriesTheStaging: without a local snapshot step the job
// is handed over the bus, and the request and the job name the staging
// and worker that pulled.
func TestBusHandOffCarriesTheStaging(t *testing.T) {
	r := newRig(t)
	r.queue(t, "job-b", "site-b", domain.JobBackup)
	r.startWorkerWith(t, "puller-a", events.ConsumerPuller, 3, handOffWork, func(x *jobrun.Executor) { x.Staging = stagingA })
	seen := make(chan domain.HandOff, 1)
	r.startWorker(t, "snapshotter-a", events.ConsumerSnapshotter, 3, func(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
		if job.HandOff != nil {
			seen <- *job.HandOff
		}
		return jobrun.Outcome{Status: domain.StatusSuccess}
	})
	j := r.waitJob(t, "job-b")
	if j.Status != domain.StatusSuccess {
		t.Fatalf("job = %s: %s", j.Status, j.Error)
	}
	h := recv(t, seen, "the snapshot step's hand-off")
	if h.Staging != stagingA || h.Worker != "puller-a" || h.Local {
		t.Errorf("hand-off = %+v, want from puller-a on %s over the bus", h, stagingA)
	}
}
