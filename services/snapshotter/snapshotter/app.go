// Package app wires the snapshotter service: it takes backup jobs handed
// over by the puller and snapshots the site's staging into the local
// restic repository, and runs retention jobs (restic forget --prune with
// the configured policy, scoped to one site's snapshots).
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/policy"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/repoguard"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/staging"
	"github.com/satoru/satoru/shared/store"
)

// Settings are the snapshotter's knobs, taken from config by the caller.
type Settings struct {
	Worker      string
	Concurrency int
	AckWait     time.Duration
	Heartbeat   time.Duration
	LeaseRetry  time.Duration
	MaxAttempts int
	// RetryBase is job_retry_base_seconds: the first wait before the next
	// attempt of a job whose repository was locked.
	RetryBase     time.Duration
	StagingRoot   string
	Repo          restic.Repo
	SnapshotLimit time.Duration
	ProgressEvery time.Duration
	// Retention is restic_retention_policy; a retention job fails while
	// it is unset (zero keeps nothing).
	Retention config.RetentionPolicy
	// RetentionLimit bounds one retention job's restic runs; zero means
	// no limit beyond the job's own.
	RetentionLimit time.Duration
	// Offsite is the offsite repository a check job checks too; its
	// Repository is "" when none is configured.
	Offsite restic.Repo
	// CheckSubset is restic_check_read_data_subset; CheckLimit bounds
	// one repository's check (0: the job's own limit only).
	CheckSubset string
	CheckLimit  time.Duration
	// VerifyRoot is the private folder (under data_dir) verify jobs
	// restore into; VerifyLimit bounds one verify job (0: the job's own).
	VerifyRoot  string
	VerifyLimit time.Duration
	// SQLiteBin is the sqlite3 binary verify checks databases with; ""
	// means sqlite3 on PATH.
	SQLiteBin string
	// VerifyHeadroom is the free space a verify's restore must leave on
	// VerifyRoot's disk (staging_min_free_bytes / _percent).
	VerifyHeadroom disk.Headroom
}

// Deps are the snapshotter's collaborators.
type Deps struct {
	Settings Settings
	Store    *store.Store
	Infra    *bus.Infra
	Registry prometheus.Registerer
	Log      *slog.Logger
	// Notify is told every job's final outcome (webhook); nil for none.
	Notify func(ctx context.Context, job domain.Job, out jobrun.Outcome)
}

// Run consumes snapshot and retention requests until ctx ends.
func Run(ctx context.Context, d Deps) error {
	s, err := New(d)
	if err != nil {
		return err
	}
	return Serve(ctx, d, s)
}

// New builds the snapshotter of d: a worker node also hands its
// puller's backups to it in process (Pick as the puller's local
// snapshot step) while Serve consumes the requests other processes send.
func New(d Deps) (*Snapshotter, error) {
	id, err := staging.ID(d.Settings.StagingRoot)
	if err != nil {
		return nil, fmt.Errorf("snapshotter: %w", err)
	}
	guard, err := repoguard.New(d.Infra, d.Settings.Worker, d.Log)
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{Store: d.Store, Repo: guard.Track(d.Settings.Repo), Guard: guard, StagingRoot: d.Settings.StagingRoot,
		StagingID: id, Worker: d.Settings.Worker,
		Limit: d.Settings.SnapshotLimit, ProgressEvery: d.Settings.ProgressEvery,
		Retention: d.Settings.Retention, RetentionLimit: d.Settings.RetentionLimit, Log: d.Log,
		CheckSubset: d.Settings.CheckSubset, CheckLimit: d.Settings.CheckLimit,
		VerifyRoot: d.Settings.VerifyRoot, VerifyLimit: d.Settings.VerifyLimit, SQLiteBin: d.Settings.SQLiteBin,
		VerifyHeadroom: d.Settings.VerifyHeadroom}
	if d.Settings.Offsite.Repository != "" {
		s.Offsite = guard.Track(d.Settings.Offsite, d.Settings.Repo)
	}
	if d.Store != nil {
		s.Checks = d.Store
		s.Targets = d.Store
	}
	if d.Registry != nil {
		s.Metrics = observe.NewSnapshotMetrics(d.Registry)
		s.CheckMetrics = NewCheckMetrics(d.Registry)
		s.VerifyMetrics = observe.NewVerifyMetrics(d.Registry)
	}
	return s, nil
}

// Serve runs s as the service until ctx ends: tests hand in their own
// Snapshotter.
func Serve(ctx context.Context, d Deps, s *Snapshotter) error {
	if d.Registry != nil {
		if s.Metrics == nil {
			s.Metrics = observe.NewSnapshotMetrics(d.Registry)
		}
		if s.VerifyMetrics == nil {
			s.VerifyMetrics = observe.NewVerifyMetrics(d.Registry)
		}
		seedLastSuccess(ctx, d)
		if s.CheckMetrics == nil {
			s.CheckMetrics = NewCheckMetrics(d.Registry)
		}
		if s.Checks != nil {
			if st, err := s.Checks.GetCheckState(ctx); err == nil {
				s.CheckMetrics.Observe(st)
			}
		}
	}
	s.cleanVerifyRoot()
	// Before the first job: open (or initialise, once across every
	// process) the repository and clear what a crash left; then keep
	// clearing dead processes' locks every heartbeat.
	s.prepareRepo(ctx)
	lctx, stop := context.WithCancel(ctx)
	locksDone := make(chan struct{})
	go func() {
		defer close(locksDone)
		s.watchLocks(lctx, d.Settings.Heartbeat)
	}()
	defer func() { stop(); <-locksDone }()
	// A job queued before a maintenance window opened waits it out.
	var hold func(context.Context, domain.Job) (time.Time, string, error)
	if d.Store != nil {
		hold = policy.HoldFor(d.Store, func(err error) bool { return errors.Is(err, store.ErrNotFound) }, time.Now)
	}
	return jobrun.Service{
		Name:        domain.ServiceSnapshotter,
		Consumer:    events.ConsumerSnapshotter,
		Infra:       d.Infra,
		Store:       d.Store,
		IsNotFound:  func(err error) bool { return errors.Is(err, store.ErrNotFound) },
		Worker:      d.Settings.Worker,
		Concurrency: d.Settings.Concurrency,
		AckWait:     d.Settings.AckWait,
		Heartbeat:   d.Settings.Heartbeat,
		LeaseRetry:  d.Settings.LeaseRetry,
		RetryBase:   d.Settings.RetryBase,
		MaxAttempts: d.Settings.MaxAttempts,
		Registry:    d.Registry,
		Log:         d.Log,
		Pick:        s.Pick,
		Notify:      d.Notify,
		Staging:     s.StagingID,
		Hold:        hold,
	}.Run(ctx)
}

// Store is what the snapshotter reads and writes besides the job.
type Store interface {
	GetSiteStatus(ctx context.Context, uuid string) (domain.SiteStatus, error)
	PutSiteStatus(ctx context.Context, st domain.SiteStatus) error
}

// Snapshotter snapshots staging into the restic repository and applies
// the retention policy to it.
type Snapshotter struct {
	Store       Store
	Repo        restic.Repo
	StagingRoot string
	// StagingID is StagingRoot's id (shared/staging): a backup is
	// snapshotted only when its pull was made on this staging.
	StagingID string
	// Worker is this instance's name, for the guard's message.
	Worker        string
	Limit         time.Duration
	ProgressEvery time.Duration
	// Retention and RetentionLimit: see Settings.
	Retention      config.RetentionPolicy
	RetentionLimit time.Duration
	// VerifyRoot, VerifyLimit, SQLiteBin: see Settings. Targets lists a
	// site's targets, for verify's SQLite checks.
	VerifyRoot     string
	VerifyLimit    time.Duration
	SQLiteBin      string
	VerifyHeadroom disk.Headroom
	Targets        TargetLister
	Now            func() time.Time
	// Metrics count the data added; nil records nothing.
	Metrics *observe.SnapshotMetrics
	// VerifyMetrics are the verify gauges; nil records nothing.
	VerifyMetrics *observe.VerifyMetrics

	// Offsite, CheckSubset, CheckLimit: see Settings. Checks keeps the
	// check's state; CheckMetrics are its gauges (nil: none).
	Offsite      restic.Repo
	CheckSubset  string
	CheckLimit   time.Duration
	Checks       CheckStore
	CheckMetrics *CheckMetrics

	// Guard guards the repository across processes (one init, dead
	// processes' locks cleared); nil only in tests of one snapshotter.
	Guard *repoguard.Guard
	Log   *slog.Logger

	// initialised remembers a repository known to exist: checking costs a
	// restic run with key derivation (~0.5 s) per backup otherwise.
	initialised atomic.Bool
	// repoLock: backups share it, retention (prune) holds it alone.
	repoLock repoLock
}

func (s *Snapshotter) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Pick returns the work for a job this service continues or runs.
func (s *Snapshotter) Pick(job domain.Job) (jobrun.Work, error) {
	switch job.Type {
	case domain.JobBackup:
		return s.snapshot, nil
	case domain.JobRetention:
		return s.applyRetention, nil
	case domain.JobCheck:
		return s.runCheck, nil
	case domain.JobVerify:
		return s.verify, nil
	}
	return nil, fmt.Errorf("snapshotter: job type %q is not supported by this version", job.Type)
}

// snapshot is the backup job's second half, after the puller's pull:
// one restic backup of the site's staging folder, leaving out the
// targets whose pull failed, then the site's health.
func (s *Snapshotter) snapshot(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	summary := job.Summary
	if summary == nil {
		summary = map[string]any{}
	}
	fail := func(msg string) jobrun.Outcome {
		s.recordHealth(ctx, rec, job, domain.HealthFailed, msg, false)
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg, Summary: summary}
	}
	if err := s.checkStaging(job); err != nil {
		rec.Add(ctx, domain.JobEvent{Step: "snapshot", Level: domain.LevelError, Message: err.Error()})
		return fail(err.Error())
	}
	plan := planSnapshot(ctx, job, rec, s.StagingRoot)
	if plan.pulled+plan.warned == 0 {
		return fail("no target was pulled; nothing to snapshot")
	}
	s.recoverRepo(ctx, rec, "snapshot", false)

	// The shared side of the repository lock: backups run side by side,
	// but not while this process prunes.
	release, err := s.repoLock.Shared(ctx, func() {
		rec.Add(ctx, domain.JobEvent{Step: "snapshot", Message: "waiting for retention (restic prune) in this process to finish"})
	})
	if err != nil {
		return fail("snapshot: waiting for the repository: " + err.Error())
	}
	defer release()

	sctx, cancel := jobrun.WithLimit(ctx, s.Limit)
	defer cancel()
	sum, incomplete, err := s.backup(ctx, sctx, job, rec, plan, release)
	if err != nil {
		out := fail(err.Error())
		// Locked past --retry-lock by another process (a prune, a check
		// elsewhere): the next attempt may find the repository free.
		out.Retry = errors.Is(err, restic.ErrLocked)
		return out
	}
	s.recordSnapshot(ctx, job, rec, sum, summary)

	status, msg := plan.status(sum.SnapshotID, incomplete)
	health := domain.HealthSuccess
	if status == domain.StatusWarning {
		health = domain.HealthWarning
	}
	s.recordHealth(ctx, rec, job, health, msg, true)
	return jobrun.Outcome{Status: status, Error: msg, Summary: summary, Targets: plan.targets}
}

// ErrOtherStaging marks a backup whose pull was made on another staging
// folder than this snapshotter's: its folder here is not the job's data
// (empty, or another node's older pull), so it is never snapshotted.
var ErrOtherStaging = errors.New("snapshot refused")

// checkStaging lets a backup be snapshotted only from the staging its
// pull wrote. A job whose hand-off recorded no staging (handed off by a
// version before staging ids) is refused too: nothing shows this folder
// holds its pull.
func (s *Snapshotter) checkStaging(job domain.Job) error {
	const fix = "run the puller and the snapshotter of a node in one process (`satoru worker`) or on one staging_root"
	h := job.HandOff
	if h == nil || h.Staging == "" {
		return fmt.Errorf("%w: the pull of this job recorded no staging (handed off by an older version); this snapshotter's staging is %s (%s, worker %s): nothing shows its folder holds this job's data; %s",
			ErrOtherStaging, s.StagingID, s.StagingRoot, s.Worker, fix)
	}
	if h.Staging != s.StagingID {
		return fmt.Errorf("%w: the pull of this job was made on staging %s (worker %s); this snapshotter's staging is %s (%s, worker %s): its folder is not this job's data; %s",
			ErrOtherStaging, h.Staging, h.Worker, s.StagingID, s.StagingRoot, s.Worker, fix)
	}
	return nil
}

// snapshotPlan is what one backup snapshots: the site's staging folder
// without the targets whose pull failed.
type snapshotPlan struct {
	siteDir                string
	targets                []domain.TargetRun
	excludes               []string
	pulled, failed, warned int
}

// planSnapshot sorts the job's targets by how their pull went. A failed
// target's older staging copy is left out, so the snapshot never presents
// stale data as this run's; the others are marked as in the snapshot.
func planSnapshot(ctx context.Context, job domain.Job, rec *jobrun.Recorder, stagingRoot string) snapshotPlan {
	p := snapshotPlan{
		siteDir: filepath.Join(stagingRoot, job.SiteUUID),
		targets: job.Targets,
		// Partial folders a pull failed to remove are never site data.
		excludes: []string{remote.RsyncPartialDir},
	}
	for i, t := range p.targets {
		switch t.Status {
		case domain.HealthFailed:
			p.failed++
			p.excludes = append(p.excludes, filepath.Join(p.siteDir, t.TargetHash))
			rec.Add(ctx, domain.JobEvent{Step: "snapshot", Level: domain.LevelWarn, TargetHash: t.TargetHash,
				Message: fmt.Sprintf("target %s %s left out of the snapshot: its pull failed (%s)", t.TargetHash, t.Path, t.Error)})
		case domain.HealthWarning:
			p.warned++
			p.targets[i].InSnapshot = true
		default:
			p.pulled++
			p.targets[i].InSnapshot = true
		}
	}
	return p
}

// status is the job's outcome once snapshot id was made: a warning when
// a target failed or some files could not be read.
func (p snapshotPlan) status(id string, incomplete bool) (domain.JobStatus, string) {
	switch {
	case p.failed > 0:
		return domain.StatusWarning, fmt.Sprintf("%d of %d targets failed and are not in snapshot %s", p.failed, len(p.targets), short(id))
	case p.warned > 0 || incomplete:
		return domain.StatusWarning, fmt.Sprintf("snapshot %s made, but some files could not be read", short(id))
	}
	return domain.StatusSuccess, ""
}

// backup makes sure the repository exists and runs restic backup under
// sctx. incomplete is restic's exit 3 (a snapshot made without some
// files). A failed run that may have left unreferenced data is cleaned
// up, after release, since the clean-up holds the repository alone.
func (s *Snapshotter) backup(ctx, sctx context.Context, job domain.Job, rec *jobrun.Recorder, plan snapshotPlan, release func()) (sum restic.Summary, incomplete bool, err error) {
	if created, err := s.ensureRepo(sctx); err != nil {
		return sum, false, err
	} else if created {
		rec.Add(ctx, domain.JobEvent{Step: "snapshot", Message: "initialised restic repository " + restic.RedactLocation(s.Repo.Repository)})
	}
	sum, err = s.Repo.Backup(sctx, restic.BackupOptions{
		Paths:    []string{plan.siteDir},
		Host:     domain.ResticHost(job.SiteUUID),
		Tags:     domain.SnapshotTags(job.SiteUUID, job.ID),
		Excludes: plan.excludes,
	}, s.progressEvents(ctx, rec))
	incomplete = errors.Is(err, restic.ErrIncomplete)
	if errors.Is(err, restic.ErrNoRepository) {
		s.initialised.Store(false) // removed under us: check (and init) again next time
	}
	if err != nil && !incomplete {
		rec.Add(ctx, domain.JobEvent{Step: "snapshot", Level: domain.LevelError, Message: "restic backup failed: " + err.Error()})
		if leftData(ctx, err) {
			release() // the clean-up holds the repository alone
			s.cleanup(ctx, rec, "snapshot", "a failed backup", false)
		}
		return sum, false, fmt.Errorf("snapshot: %w", err)
	}
	return sum, incomplete, nil
}

// progressEvents turns restic's progress into an event at most every
// ProgressEvery, so a long backup shows it is moving.
func (s *Snapshotter) progressEvents(ctx context.Context, rec *jobrun.Recorder) func(restic.Progress) {
	every := s.ProgressEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	var last time.Time
	return func(p restic.Progress) {
		if time.Since(last) < every {
			return
		}
		last = time.Now()
		rec.Add(ctx, domain.JobEvent{Step: "snapshot_progress", Message: fmt.Sprintf("restic backup %.0f%%: %d of %d bytes",
			p.PercentDone*100, p.BytesDone, p.TotalBytes), Data: map[string]any{"bytes_done": p.BytesDone, "total_bytes": p.TotalBytes}})
	}
}

// recordSnapshot puts what restic backup reported into the job's summary,
// its event and the site's metrics.
func (s *Snapshotter) recordSnapshot(ctx context.Context, job domain.Job, rec *jobrun.Recorder, sum restic.Summary, summary map[string]any) {
	data := map[string]any{
		"snapshot_id":           sum.SnapshotID,
		"files_new":             sum.FilesNew,
		"files_changed":         sum.FilesChanged,
		"files_unmodified":      sum.FilesUnmodified,
		"data_added":            sum.DataAdded,
		"total_files_processed": sum.TotalFilesProcessed,
		"total_bytes_processed": sum.TotalBytesProcessed,
	}
	for k, v := range data {
		summary[k] = v
	}
	s.Metrics.Snapshot(job.SiteUUID, sum.DataAdded)
	rec.Add(ctx, domain.JobEvent{Step: "snapshot", Level: domain.LevelInfo, Data: data, Message: fmt.Sprintf(
		"snapshot %s: %d new, %d changed, %d unmodified files; %d bytes added of %d processed",
		short(sum.SnapshotID), sum.FilesNew, sum.FilesChanged, sum.FilesUnmodified, sum.DataAdded, sum.TotalBytesProcessed)})
}

// leftData reports whether a failed restic backup may have written packs
// no index references: it ran and failed (a full disk, a timeout, a
// cancel by request). Not when it never got the repository (locked, wrong
// password, none there) or when the process is shutting down.
func leftData(ctx context.Context, err error) bool {
	switch {
	case errors.Is(err, restic.ErrLocked), errors.Is(err, restic.ErrWrongPassword), errors.Is(err, restic.ErrNoRepository):
		return false
	case ctx.Err() != nil && !errors.Is(context.Cause(ctx), jobrun.ErrCanceled):
		return false
	}
	return true
}

// recordHealth records the backup's outcome on the site. A failed write
// does not change the job's outcome (the snapshot is made or not either
// way) but is a warning event of the job: the site's health shown by the
// API is then older than this job.
func (s *Snapshotter) recordHealth(ctx context.Context, rec *jobrun.Recorder, job domain.Job, h domain.Health, msg string, snapshotted bool) {
	if err := s.putHealth(ctx, job, h, msg, snapshotted); err != nil {
		rec.Add(ctx, domain.JobEvent{Step: "health", Level: domain.LevelWarn,
			Message: fmt.Sprintf("site health (%s) not recorded: %v", h, err)})
	}
}

// putHealth writes the backup's outcome into the site's status.
func (s *Snapshotter) putHealth(ctx context.Context, job domain.Job, h domain.Health, msg string, snapshotted bool) error {
	st, err := s.Store.GetSiteStatus(ctx, job.SiteUUID)
	if err != nil {
		return err
	}
	at := s.now()
	st.SiteUUID = job.SiteUUID
	if msg == "" {
		msg = "backup succeeded"
	}
	st.SetHealth(domain.HealthState{Status: h, Message: msg, UpdatedAt: at})
	st.LastScanAt = &at
	st.LastJobID = job.ID
	if snapshotted && h == domain.HealthSuccess {
		st.LastSuccessAt = &at
	}
	if snapshotted {
		// The staging now holds the site's newest baseline (a warning
		// snapshot too): the site's next pull is incremental only here.
		st.LastStagingID = s.StagingID
	}
	return s.Store.PutSiteStatus(ctx, st)
}

// seedLastSuccess starts each site's last-success gauge at the stored
// value, so a restart does not hide a stale site until its next backup.
// The site's outcome gauges wait for the next backup: the stored health
// is also written by preflight jobs.
func seedLastSuccess(ctx context.Context, d Deps) {
	if d.Store == nil {
		return
	}
	all, err := d.Store.ListSiteStatuses(ctx)
	if err != nil {
		if d.Log != nil {
			d.Log.Warn("cannot seed the sites' last-success metrics", "err", err)
		}
		return
	}
	sites := observe.NewSiteMetrics(d.Registry)
	verify := observe.NewVerifyMetrics(d.Registry)
	for uuid, st := range all {
		if st.LastSuccessAt != nil {
			sites.SeedLastSuccess(uuid, *st.LastSuccessAt)
		}
		if v := st.LastVerify; v != nil {
			ok := v.Status == domain.HealthSuccess
			verify.Seed(uuid, st.LastVerifiedAt, &v.At, &ok)
		}
	}
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
