package syncer

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
)

// memStore is an in-memory store for running a sync through
// jobrun.Executor without NATS or the embedded store.
type memStore struct {
	mu     sync.Mutex
	job    domain.Job
	events []domain.JobEvent
	st     domain.SyncState
	hasSt  bool
	getErr error
}

func (m *memStore) GetSyncState(_ context.Context, id string) (domain.SyncState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.getErr != nil {
		return domain.SyncState{}, m.getErr
	}
	if !m.hasSt {
		return domain.SyncState{ID: id, Status: domain.HealthUnknown}, nil
	}
	return m.st, nil
}

func (m *memStore) PutSyncState(_ context.Context, st domain.SyncState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st, m.hasSt = st, true
	return nil
}

func (m *memStore) GetJob(context.Context, string) (domain.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.job, nil
}

func (m *memStore) StartJob(_ context.Context, _, worker string, attempts int, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.job.Status, m.job.Worker, m.job.Attempts, m.job.StartedAt = domain.StatusRunning, worker, attempts, &at
	return nil
}

func (m *memStore) HeartbeatJob(context.Context, string, time.Time) error { return nil }

func (m *memStore) RetryJob(_ context.Context, _ string, errMsg string, next, _ time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.job.Status, m.job.Error, m.job.NextAttemptAt = domain.StatusQueued, errMsg, &next
	return nil
}

func (m *memStore) FinishJobTargets(_ context.Context, _ string, status domain.JobStatus, errMsg string, summary map[string]any, _ []domain.TargetRun, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.job.Status, m.job.Error, m.job.Summary, m.job.FinishedAt = status, errMsg, summary, &at
	return nil
}

func (m *memStore) AppendEvents(_ context.Context, _ string, evs ...domain.JobEvent) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, evs...)
	return nil
}

func (m *memStore) ListEvents(context.Context, string) ([]domain.JobEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]domain.JobEvent(nil), m.events...), nil
}

func (m *memStore) HandOffJob(context.Context, string, map[string]any, []domain.TargetRun, domain.HandOff, time.Time) error {
	return nil
}

func (m *memStore) ContinueJob(context.Context, string, string, string, int, time.Time) error {
	return nil
}

// nopBus grants every lease and drops events.
type nopBus struct{}

func (nopBus) AcquireSite(context.Context, string, bus.LeaseHolder) (*bus.Lease, error) {
	return nil, nil
}
func (nopBus) CancelRequested(context.Context, string) (bool, error) { return false, nil }
func (nopBus) WatchCancel(context.Context, string, func()) error     { return nil }
func (nopBus) PublishEvent(context.Context, events.StepEvent) error  { return nil }
func (nopBus) Publish(context.Context, events.JobRequest) error      { return nil }
func (nopBus) JobEvents(context.Context, string, string) ([]events.StepEvent, error) {
	return nil, nil
}

// runWork runs one restic_sync job through jobrun.Executor with s's work
// and returns the finished job.
func runWork(t *testing.T, s *Syncer) domain.Job {
	t.Helper()
	st, ok := s.Store.(*memStore)
	if !ok {
		t.Fatal("runWork needs a *memStore")
	}
	st.job = domain.Job{ID: "job-1", Type: domain.JobResticSync, Status: domain.StatusQueued, CreatedAt: time.Now().UTC()}
	x := &jobrun.Executor{Store: st, Bus: nopBus{}, Worker: "w", Heartbeat: time.Second, LeaseRetry: time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	data, _ := json.Marshal(events.JobRequest{V: events.JobRequestV1, JobID: "job-1", Type: string(domain.JobResticSync)})
	if err := x.Handle(t.Context(), bus.Delivery{Subject: events.JobSubject("", "restic_sync"), Data: data}, s.Pick); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	return st.job
}
