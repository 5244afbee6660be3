// Package httpapi is Satoru's REST API over Echo: routes, authentication,
// request decoding and validation, and the mapping of errors to the
// {"error":{"code","message"}} envelope. Handlers are thin: they decode,
// call one plain function of this package and map its error.
package httpapi

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/restore"
	"github.com/satoru/satoru/shared/store"
)

// Store is what the API reads and writes. The API writes sites and
// targets and creates jobs; it never writes a job after creating it.
//
// Errors: GetSite, GetJob, ReplaceSite, DeleteSite and DeleteTarget wrap
// store.ErrNotFound for a missing document; CreateSite and ReplaceSite
// wrap store.ErrConflict for a taken name, AddTarget for a target the site
// already has. DeleteSite also removes the site's targets and status.
// GetSiteStatus of a site no worker has touched is not an error.
type Store interface {
	CreateSite(ctx context.Context, s domain.Site) error
	GetSite(ctx context.Context, uuid string) (domain.Site, error)
	ListSites(ctx context.Context) ([]domain.Site, error)
	ReplaceSite(ctx context.Context, s domain.Site) error
	DeleteSite(ctx context.Context, uuid string) error
	GetSiteStatus(ctx context.Context, uuid string) (domain.SiteStatus, error)
	ListSiteStatuses(ctx context.Context) (map[string]domain.SiteStatus, error)

	AddTarget(ctx context.Context, t domain.Target) error
	ListTargets(ctx context.Context, siteUUID string) ([]domain.Target, error)
	DeleteTarget(ctx context.Context, siteUUID, hash string) error

	InsertJob(ctx context.Context, j domain.Job) error
	GetJob(ctx context.Context, id string) (domain.Job, error)
	ListJobs(ctx context.Context, f store.JobFilter) ([]domain.Job, error)
	ListEvents(ctx context.Context, jobID string) ([]domain.JobEvent, error)

	// GetSyncState reads the offsite repository's sync state; one never
	// synced comes back with status "unknown", not an error.
	GetSyncState(ctx context.Context, id string) (domain.SyncState, error)
}

// JobFinisher is optional: when the Store also implements it, a job whose
// request could not be published is marked failed with the reason, so no
// queued job is left that no worker will ever see. (*store.Store has it.)
// It is the only write the API makes to a job after creating it, and it
// happens only when no worker can hold the job.
type JobFinisher interface {
	FinishJob(ctx context.Context, id string, status domain.JobStatus, errMsg string, summary map[string]any, at time.Time) error
}

// Dispatcher hands work to the workers. Publish must be idempotent per job
// id (Nats-Msg-Id = job_id), because the API retries it.
type Dispatcher interface {
	Publish(ctx context.Context, r events.JobRequest) error
	RequestCancel(ctx context.Context, jobID string) error
}

// Repository reads the local restic repository for the snapshot, browse
// and download endpoints and to check a restore's snapshot. restic.Repo
// satisfies it. Errors wrap restic.ErrSnapshotNotFound,
// restic.ErrPathNotFound and restic.ErrNotDir where they apply.
type Repository interface {
	// Snapshots lists the snapshots carrying all of tags.
	Snapshots(ctx context.Context, tags ...string) ([]restic.Snapshot, error)
	// List is one folder level of a snapshot.
	List(ctx context.Context, snapshotID, dir string) (restic.Listing, error)
	// Stat is the node at a path of a snapshot ("/" is the root folder).
	Stat(ctx context.Context, snapshotID, path string) (restic.Node, error)
	// Dump streams a file (archive "") or a folder as an archive to w.
	Dump(ctx context.Context, snapshotID, path string, w io.Writer, archive string) error
}

// Liveness lists the live service instances: the entries each running
// service keeps in the NATS KV bucket SATORU_SERVICES (bus.Announce).
// *bus.Infra satisfies it.
type Liveness interface {
	Services(ctx context.Context) ([]bus.Instance, error)
}

// NodeRecords lists the last value of every service instance that ran
// on a worker node, live or not (bucket SATORU_NODES, bus.AnnounceNode).
// *bus.Infra satisfies it.
type NodeRecords interface {
	NodeRecords(ctx context.Context) ([]bus.Instance, error)
	// PartitionOwners maps each job stream partition to the node whose
	// consumer holds it (bus.PartitionOwners).
	PartitionOwners(ctx context.Context) (map[int]string, error)
}

// EventSource follows the job step events of stream SATORU_EVENTS for
// GET /events/stream (see bus.FollowEvents for the filter's meaning).
// *bus.Infra satisfies it.
type EventSource interface {
	FollowEvents(ctx context.Context, f bus.EventFilter) (bus.EventFeed, error)
}

// ScheduleLister lists the scheduler's schedules for GET /schedules.
// *store.Store satisfies it.
type ScheduleLister interface {
	ListSchedules(ctx context.Context) ([]store.Schedule, error)
}

// Checker is one readiness check (store ping, NATS connected).
type Checker interface {
	Name() string
	Check(ctx context.Context) error
}

// Deps is everything the API needs. New fills the zero fields it can:
// Log discards, Now is time.Now, NewID must be set by the caller (app
// does), Registry gets a fresh registry.
type Deps struct {
	Store      Store
	Dispatcher Dispatcher
	// Token is the admin bearer token. Empty means every /api/v1 request
	// is refused (fail closed).
	Token    string
	Registry *prometheus.Registry
	Ready    []Checker
	Log      *slog.Logger
	Now      func() time.Time
	NewID    func() string

	// OffsiteConfigured says restic_b2_repository is set. Without it
	// POST /sync is refused (409) and the sync health is "not_configured".
	OffsiteConfigured bool
	// SyncInterval is restic_sync_interval_hours: the offsite copy is
	// stale when no sync succeeded within twice it (0 means 24 h).
	SyncInterval time.Duration
	// CheckInterval is restic_check_interval_hours: the repository check
	// is stale when none succeeded within twice it; 0 = never scheduled
	// (then only a failed check is judged).
	CheckInterval time.Duration
	// Disks are the paths whose free space /health reports against their
	// configured minimum (staging_root and restic_repo_path with
	// staging_min_free_bytes / staging_min_free_percent).
	Disks []DiskCheck
	// Repo is the local restic repository; nil makes the snapshot,
	// browse, download and restore endpoints answer 503.
	Repo Repository
	// DiskSpace reads the space of the filesystem holding a path; nil
	// means statfs (disk.Stat).
	DiskSpace func(path string) (DiskSpace, error)
	// Services, when set, makes GET /health list the live service
	// instances and degrade when an expected service has none; nil leaves
	// liveness out of the report.
	Services Liveness
	// ExpectedServices are the services that must have a live instance;
	// nil means domain.Services().
	ExpectedServices []string
	// Nodes, with Services, makes GET /health list the worker nodes that
	// have gone away too; without it only live nodes are listed.
	Nodes NodeRecords

	// SiteListMaxAge is how old the snapshot of all sites and statuses
	// that GET /sites and GET /health answer from may be before it is
	// read again (in the background; see sitecache.go). 0 means
	// DefaultSiteListMaxAge (2 s); negative reads the store on every
	// request. The API's own site writes always show at once; statuses
	// written by the workers show in the list up to this late.
	SiteListMaxAge time.Duration
	// Context, when set, is the server's lifetime: the site list reads
	// that run apart from requests stop when it ends, and so do open
	// event streams (a graceful shutdown waits for requests in flight,
	// which a stream never finishes by itself). nil means
	// context.Background (each read still ends within 30 s).
	Context context.Context

	// Events, when set, serves GET /events/stream; nil answers 503.
	Events EventSource
	// StreamPing is how long an event stream may be idle before a
	// ": ping" comment is sent; 0 means DefaultStreamPing.
	StreamPing time.Duration
	// Schedules, when set, serves GET /schedules; nil answers 503.
	Schedules ScheduleLister
	// RestoreGuard, when set, refuses at once (400) a restore whose
	// local_path overlaps Satoru's own files, symlinks followed on this
	// host. Set it only where the puller shares this host's filesystem
	// (satoru up); the puller checks every restore again either way.
	RestoreGuard *restore.Guard
	// SiteDeleted, when set, is called after a site was deleted, to remove
	// what this host keeps of it (its known_hosts file, in satoru up);
	// its error is logged. Workers elsewhere sweep such files themselves.
	SiteDeleted func(ctx context.Context, siteUUID string) error
}
