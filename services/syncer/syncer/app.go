// Package app wires the syncer service: it takes restic_sync jobs and
// copies the local restic repository's snapshots to the offsite (B2)
// repository with `restic copy`, then records the offsite state and lag
// in sync_state.
package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/repoguard"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/store"
)

// Settings are the syncer's knobs, taken from config by the caller.
type Settings struct {
	Worker string
	// Concurrency is the number of jobs taken at once. Syncs hold the one
	// repository-level lease, so more than 1 only helps a second sync
	// request wait its turn in this process.
	Concurrency int
	AckWait     time.Duration
	Heartbeat   time.Duration
	LeaseRetry  time.Duration
	MaxAttempts int
	// Local is the local repository (restic_repo_path), the copy's source.
	Local restic.Repo
	// Remote is the offsite repository: Repository = restic_b2_repository,
	// Env = its credentials (RemoteRepo builds it), same password as Local.
	Remote restic.Repo
	// SyncLimit bounds one sync's restic work; 0 means no limit.
	SyncLimit time.Duration
}

// Deps are the syncer's collaborators.
type Deps struct {
	Settings Settings
	Store    *store.Store
	Infra    *bus.Infra
	Registry prometheus.Registerer
	Log      *slog.Logger
	// Notify is told every job's final outcome (webhook); nil for none.
	Notify func(ctx context.Context, job domain.Job, out jobrun.Outcome)
}

// RemoteRepo builds the offsite repository from the local one and config:
// the same binary, password and cache; location = restic_b2_repository;
// the account key id and key (restic_b2_account_id / _key) in the
// environment variables restic's backend for that location reads
// (B2_ACCOUNT_ID/B2_ACCOUNT_KEY for b2:, AWS_ACCESS_KEY_ID/
// AWS_SECRET_ACCESS_KEY for s3:, e.g. B2's S3-compatible endpoint).
// Errors name config keys, never values.
func RemoteRepo(local restic.Repo, repository, keyID, key string) (restic.Repo, error) {
	if repository == "" {
		return restic.Repo{}, errors.New("restic_b2_repository is not set")
	}
	env, err := restic.CredentialsEnv(repository, keyID, key)
	if err != nil {
		return restic.Repo{}, fmt.Errorf("restic_b2_repository %s with restic_b2_account_id/restic_b2_account_key: %w",
			restic.RedactLocation(repository), err)
	}
	remote := local
	remote.Repository = repository
	remote.Env = env
	return remote, nil
}

// Run consumes restic_sync requests until ctx ends. Without an offsite
// repository (Settings.Remote.Repository empty) it still runs and fails
// each sync job with a message that says so, rather than leaving jobs
// queued that nothing would ever take.
func Run(ctx context.Context, d Deps) error {
	guard, err := repoguard.New(d.Infra, d.Settings.Worker, d.Log)
	if err != nil {
		return err
	}
	s := &Syncer{Store: d.Store, Local: guard.Track(d.Settings.Local), Remote: guard.Track(d.Settings.Remote, d.Settings.Local),
		Limit: d.Settings.SyncLimit, Metrics: NewMetrics(d.Registry), Guard: guard}
	if st, err := d.Store.GetSyncState(ctx, domain.OffsiteSyncStateID); err == nil {
		s.Metrics.observe(st)
	} else if d.Log != nil {
		// The sync metrics then start empty until the next sync.
		d.Log.Warn("cannot seed the offsite sync metrics", "err", err)
	}
	concurrency := d.Settings.Concurrency
	if concurrency < 1 {
		concurrency = 1
	}
	if d.Settings.Remote.Repository == "" {
		d.Log.Warn("syncer started without an offsite repository (restic_b2_repository); sync jobs will fail")
	} else {
		d.Log.Info("syncer offsite", "local", restic.RedactLocation(d.Settings.Local.Repository),
			"offsite", restic.RedactLocation(d.Settings.Remote.Repository))
	}
	return jobrun.Service{
		Name:        domain.ServiceSyncer,
		Consumer:    events.ConsumerSyncer,
		Infra:       d.Infra,
		Store:       d.Store,
		IsNotFound:  func(err error) bool { return errors.Is(err, store.ErrNotFound) },
		Worker:      d.Settings.Worker,
		Concurrency: concurrency,
		AckWait:     d.Settings.AckWait,
		Heartbeat:   d.Settings.Heartbeat,
		LeaseRetry:  d.Settings.LeaseRetry,
		MaxAttempts: d.Settings.MaxAttempts,
		Registry:    d.Registry,
		Log:         d.Log,
		Pick:        s.Pick,
		Notify:      d.Notify,
	}.Run(ctx)
}

// Metrics are the syncer's gauges: a last-success timestamp and a
// last-status gauge for alerting, and the offsite lag.
type Metrics struct {
	LastSuccess   prometheus.Gauge
	LastOK        prometheus.Gauge
	Pending       prometheus.Gauge
	OldestPending prometheus.Gauge
	Copied        prometheus.Counter
}

// NewMetrics registers the syncer's metrics on reg (nil: unregistered),
// reusing collectors already there.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		LastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{Name: "satoru_sync_last_success_timestamp_seconds",
			Help: "When the last successful offsite sync finished (Unix time)."}),
		LastOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "satoru_sync_last_status_success",
			Help: "1 if the last offsite sync attempt succeeded, 0 if it failed."}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "satoru_sync_snapshots_pending",
			Help: "Local snapshots with no offsite copy, as of the last successful sync."}),
		OldestPending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "satoru_sync_oldest_pending_timestamp_seconds",
			Help: "Time of the oldest local snapshot with no offsite copy (Unix time); 0 when none is pending."}),
		Copied: prometheus.NewCounter(prometheus.CounterOpts{Name: "satoru_sync_snapshots_copied_total",
			Help: "Snapshots copied offsite by this process."}),
	}
	if reg == nil {
		return m
	}
	m.LastSuccess = observe.Register(reg, m.LastSuccess)
	m.LastOK = observe.Register(reg, m.LastOK)
	m.Pending = observe.Register(reg, m.Pending)
	m.OldestPending = observe.Register(reg, m.OldestPending)
	m.Copied = observe.Register(reg, m.Copied)
	return m
}

// observe sets the gauges from a sync state.
func (m *Metrics) observe(st domain.SyncState) {
	if m == nil || st.LastAttemptAt == nil {
		return
	}
	if st.LastSuccessAt != nil {
		m.LastSuccess.Set(float64(st.LastSuccessAt.UnixMilli()) / 1000)
	}
	ok := 0.0
	if st.Status == domain.HealthSuccess {
		ok = 1
	}
	m.LastOK.Set(ok)
	m.Pending.Set(float64(st.SnapshotsPending))
	oldest := 0.0
	if st.OldestPendingAt != nil {
		oldest = float64(st.OldestPendingAt.UnixMilli()) / 1000
	}
	m.OldestPending.Set(oldest)
}
