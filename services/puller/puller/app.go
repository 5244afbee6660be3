// Package app wires the puller service: it consumes preflight (and later
// backup and restore) job requests and runs them against the sites.
package puller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/services/puller/internal/preflight"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/policy"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/repoguard"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/restore"
	"github.com/satoru/satoru/shared/staging"
	"github.com/satoru/satoru/shared/store"
)

// Settings are the puller's knobs, taken from config by the caller.
type Settings struct {
	Worker         string
	Concurrency    int
	AckWait        time.Duration
	Heartbeat      time.Duration
	LeaseRetry     time.Duration
	RetryBase      time.Duration
	MaxAttempts    int
	ConnectTimeout time.Duration
	PreflightLimit time.Duration
	// PreflightReuse is how long a site's passed checks stand for its
	// next backups on this worker (0 = never).
	PreflightReuse time.Duration
	KnownHostsDir  string
	RemoteTmpDir   string
	ResticBin      string
	Backup         BackupSettings
	// Protected are Satoru's own paths a local restore may not write into
	// (data_dir, secret files); staging_root, the repository and the ssh
	// control folder are always protected.
	Protected []restore.Area
}

// Deps are the puller's collaborators.
type Deps struct {
	Settings Settings
	Store    *store.Store
	Infra    *bus.Infra
	Registry prometheus.Registerer
	Log      *slog.Logger
	// Restic is the local repository restore jobs read.
	Restic restic.Repo
	// Notify is told every job's final outcome (webhook); nil for none.
	Notify func(ctx context.Context, job domain.Job, out jobrun.Outcome)
	// Local picks the work of the steps this process continues itself:
	// on a worker node, the snapshot of each backup it pulled (see
	// jobrun.Executor.Local); nil hands every backup over the bus.
	Local map[string]func(domain.Job) (jobrun.Work, error)
}

// Run consumes puller job requests until ctx ends.
func Run(ctx context.Context, d Deps) error {
	// Restores' restic runs are recorded like the snapshotter's, so a
	// lock left by one killed with this process is cleared at once.
	stagingID, err := staging.ID(d.Settings.Backup.StagingRoot)
	if err != nil {
		return fmt.Errorf("puller: %w", err)
	}
	guard, err := repoguard.New(d.Infra, d.Settings.Worker, d.Log)
	if err != nil {
		return err
	}
	p := &Puller{Store: d.Store, Checker: NewChecker(d.Settings), PreflightLimit: d.Settings.PreflightLimit,
		Backup: d.Settings.Backup, RsyncPath: lookPath("rsync"), Restic: guard.Track(d.Restic), Protected: d.Settings.Protected}
	if d.Registry != nil {
		p.Metrics = observe.NewPullMetrics(d.Registry)
		disks := observe.NewDiskMetrics(d.Registry)
		for _, path := range d.Settings.Backup.headroomPaths() {
			disks.Watch(path, d.Settings.Backup.MinFreeBytes, d.Settings.Backup.MinFreePercent)
		}
	}
	// Masters kept for a site's next job end with the service, not up to
	// ControlPersist later.
	defer p.closeMasters()
	if d.Store != nil && d.Settings.KnownHostsDir != "" {
		sctx, stop := context.WithCancel(ctx)
		swept := make(chan struct{})
		go func() {
			defer close(swept)
			log := d.Log
			if log == nil {
				log = slog.New(slog.DiscardHandler)
			}
			sweepKnownHosts(sctx, d.Settings.KnownHostsDir, d.Store, log.With("service", domain.ServicePuller))
		}()
		defer func() { stop(); <-swept }()
	}
	// A job queued before a maintenance window opened waits it out.
	var hold func(context.Context, domain.Job) (time.Time, string, error)
	if d.Store != nil {
		hold = policy.HoldFor(d.Store, func(err error) bool { return errors.Is(err, store.ErrNotFound) }, time.Now)
	}
	return jobrun.Service{
		Name:        domain.ServicePuller,
		Consumer:    events.ConsumerPuller,
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
		Pick:        p.Pick,
		Notify:      d.Notify,
		Staging:     stagingID,
		Local:       d.Local,
		// Each worker node takes only its own sites (shared/affinity).
		Partitioned:       true,
		PartitionsChanged: partitionsGauge(d.Registry),
		Hold:              hold,
	}.Run(ctx)
}

// headroom is the free space staging and the repository must keep
// (staging_min_free_bytes / staging_min_free_percent).
func (b BackupSettings) headroom() disk.Headroom {
	return disk.Headroom{MinFreeBytes: b.MinFreeBytes, MinFreePercent: b.MinFreePercent}
}

// headroomPaths are the folders whose free space is checked and watched:
// staging, and the repository when it is a local folder (a backend URL has
// no local free space; statting it would measure a folder named after it).
func (b BackupSettings) headroomPaths() []string {
	paths := []string{b.StagingRoot}
	if dir, ok := restic.LocalPath(b.RepoPath); ok {
		paths = append(paths, dir)
	}
	return paths
}

// NewChecker builds the preflight checker, resolving local tools once.
func NewChecker(s Settings) *preflight.Checker {
	resticPath := restic.FindBin(s.ResticBin)
	tools := []preflight.LocalTool{
		{Name: "ssh", Path: lookPath("ssh")},
		{Name: "rsync", Path: lookPath("rsync")},
		{Name: "restic", Path: resticPath},
		{Name: "gzip", Path: lookPath("gzip")},
	}
	return &preflight.Checker{
		Tools:          tools,
		SSHPath:        tools[0].Path,
		KnownHostsDir:  s.KnownHostsDir,
		ConnectTimeout: s.ConnectTimeout,
		RemoteTmpDir:   s.RemoteTmpDir,
		Reuse:          s.PreflightReuse,
	}
}

func lookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

// Store is what the puller's work reads and writes.
type Store interface {
	GetSite(ctx context.Context, uuid string) (domain.Site, error)
	GetSiteStatus(ctx context.Context, uuid string) (domain.SiteStatus, error)
	PutSiteStatus(ctx context.Context, st domain.SiteStatus) error
	ListTargets(ctx context.Context, siteUUID string) ([]domain.Target, error)
	SetTargetScans(ctx context.Context, siteUUID string, scans map[string]domain.Scan) error
}

// Puller picks the work for a job.
type Puller struct {
	Store          Store
	Checker        *preflight.Checker
	PreflightLimit time.Duration
	Backup         BackupSettings
	RsyncPath      string
	Restic         restic.Repo
	Now            func() time.Time
	// Metrics count pulled bytes and files; nil records nothing.
	Metrics *observe.PullMetrics
	// Protected are the areas local restores stay out of (see guard).
	Protected []restore.Area

	mu            sync.Mutex
	tmpControlDir string
	masters       map[string]remote.SSHConfig // open site masters by control path
}

func (p *Puller) now() time.Time {
	if p.Now != nil {
		return p.Now().UTC()
	}
	return time.Now().UTC()
}

// Pick returns the work for a job type this service runs.
func (p *Puller) Pick(job domain.Job) (jobrun.Work, error) {
	switch job.Type {
	case domain.JobPreflight:
		return p.preflight, nil
	case domain.JobBackup:
		return p.backup, nil
	case domain.JobRestore:
		return p.restore, nil
	}
	return nil, fmt.Errorf("puller: job type %q is not supported by this version", job.Type)
}

// load reads the site, its status and its targets.
func (p *Puller) load(ctx context.Context, job domain.Job) (domain.Site, domain.SiteStatus, []domain.Target, error) {
	site, err := p.Store.GetSite(ctx, job.SiteUUID)
	if err != nil {
		return site, domain.SiteStatus{}, nil, fmt.Errorf("load site %s: %w", job.SiteUUID, err)
	}
	status, err := p.Store.GetSiteStatus(ctx, job.SiteUUID)
	if err != nil {
		return site, status, nil, fmt.Errorf("load status of site %s: %w", job.SiteUUID, err)
	}
	targets, err := p.Store.ListTargets(ctx, job.SiteUUID)
	if err != nil {
		return site, status, nil, fmt.Errorf("load targets of site %s: %w", job.SiteUUID, err)
	}
	return site, status, targets, nil
}

func (p *Puller) preflight(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	site, status, targets, err := p.load(ctx, job)
	if err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
	}
	pctx, cancel := jobrun.WithLimit(ctx, p.PreflightLimit)
	defer cancel()
	in := preflight.Input{Site: site, Status: status, Targets: targets}
	res := p.Checker.Run(pctx, in)
	for _, ev := range res.Events {
		rec.Add(ctx, ev)
	}
	if res.OK() {
		if res.LearnedHostKey != "" {
			in.Status.LearnedHostKey = res.LearnedHostKey
		}
		p.Checker.Passed(in)
	} else {
		p.Checker.Forget(site.UUID)
	}
	if ctx.Err() != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
	}
	if err := rec.Flush(ctx); err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
	}

	at := p.now()
	status.SiteUUID = site.UUID
	status.LastPreflightAt = &at
	status.LastJobID = job.ID
	if res.LearnedHostKey != "" {
		status.LearnedHostKey = res.LearnedHostKey
	}
	summary := map[string]any{"checks": len(res.Events), "failures": len(res.Failures)}
	out := jobrun.Outcome{Status: domain.StatusSuccess, Summary: summary}
	health := domain.HealthState{Status: domain.HealthSuccess, Message: "preflight passed", UpdatedAt: at}
	if !res.OK() {
		out = jobrun.Outcome{Status: domain.StatusFailed, Error: "preflight failed: " + res.Error(), Summary: summary, Retry: res.Transient}
		health = domain.HealthState{Status: domain.HealthFailed, Message: out.Error, UpdatedAt: at}
	}
	status.SetHealth(health)
	if err := p.Store.PutSiteStatus(ctx, status); err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: fmt.Sprintf("record site status: %v", err), Summary: summary}
	}
	return out
}

// partitionsGauge is satoru_node_partitions, set on each change of the
// node's partitions; nil without a registry.
func partitionsGauge(reg prometheus.Registerer) func([]int) {
	if reg == nil {
		return nil
	}
	g := observe.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "satoru_node_partitions",
		Help: "Job stream partitions (of " + strconv.Itoa(events.JobPartitions) + ") whose sites this worker node's puller takes.",
	}))
	return func(parts []int) { g.Set(float64(len(parts))) }
}
