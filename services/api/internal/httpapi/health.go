package httpapi

import (
	"fmt"
	"sort"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/domain"
)

// The aggregate health of GET /api/v1/health, built by plain functions
// of their inputs and a clock, so each rule is tested without a store,
// a filesystem or the time of day.

// Overall statuses.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
)

// Sync health statuses.
const (
	SyncOK            = "ok"
	SyncStale         = "stale"
	SyncFailed        = "failed"
	SyncNotConfigured = "not_configured"
)

// Disk statuses.
const (
	DiskOK    = "ok"
	DiskLow   = "low"
	DiskError = "error"
	// DiskRemote is a repository at a backend URL (s3:, rest:, ...): it
	// has no local free space, so none is reported or judged.
	DiskRemote = "remote"
)

// DefaultSyncInterval stands in for an unset sync interval (the config
// default of restic_sync_interval_hours).
const DefaultSyncInterval = 24 * time.Hour

// HealthReport is the answer of GET /health.
type HealthReport struct {
	Status    string    `json:"status"`
	CheckedAt time.Time `json:"checked_at"`
	// Problems say why the status is degraded, one line each.
	Problems []string      `json:"problems"`
	Services []CheckResult `json:"services"`
	Sites    SitesHealth   `json:"sites"`
	Sync     SyncHealth    `json:"sync"`
	// Check is the repository check (restic check).
	Check CheckHealth  `json:"check"`
	Disks []DiskHealth `json:"disks"`
	// Liveness lists the services and their live instances; left out
	// when the API has no liveness source (Deps.Services).
	Liveness *LivenessHealth `json:"liveness,omitempty"`
	// Nodes are the worker nodes (stagings) seen within the node record
	// retention, live or gone; empty without a liveness source.
	Nodes []NodeHealth `json:"nodes"`
	// NodesError is set when the node records could not be read; Nodes
	// then lists the live nodes only.
	NodesError string `json:"nodes_error,omitempty"`
}

// Service liveness statuses.
const (
	ServiceUp   = "up"
	ServiceDown = "down"
)

// LivenessHealth is which service instances are alive, from the entries
// they keep in the NATS KV bucket SATORU_SERVICES.
type LivenessHealth struct {
	// Error is set when the entries could not be read; Services then
	// shows every expected service as down.
	Error    string          `json:"error,omitempty"`
	Services []ServiceHealth `json:"services"`
}

// ServiceHealth is one service with its live instances: up with at least
// one, down with none.
type ServiceHealth struct {
	Service   string           `json:"service"`
	Status    string           `json:"status"`
	Expected  bool             `json:"expected"`
	Instances []InstanceHealth `json:"instances"`
}

// InstanceHealth is one live instance and its last heartbeat.
type InstanceHealth struct {
	Instance            string    `json:"instance"`
	Version             string    `json:"version"`
	StartedAt           time.Time `json:"started_at"`
	HeartbeatAt         time.Time `json:"heartbeat_at"`
	HeartbeatAgeSeconds int64     `json:"heartbeat_age_seconds"`
}

// SitesHealth counts sites by health status and lists those that need
// attention (failed or warning).
type SitesHealth struct {
	Total    int                   `json:"total"`
	ByStatus map[domain.Health]int `json:"by_status"`
	Failing  []FailingSite         `json:"failing"`
}

// FailingSite is a site whose last backup failed or only partly worked.
type FailingSite struct {
	SiteUUID  string        `json:"site_uuid"`
	Name      string        `json:"name"`
	Status    domain.Health `json:"status"`
	Message   string        `json:"message,omitempty"`
	UpdatedAt *time.Time    `json:"updated_at,omitempty"`
}

// SyncHealth is the offsite copy's health.
type SyncHealth struct {
	Status                  string     `json:"status"`
	LastSuccessAt           *time.Time `json:"last_success_at"`
	LastAttemptAt           *time.Time `json:"last_attempt_at,omitempty"`
	SnapshotsPending        int        `json:"snapshots_pending"`
	OldestPendingAgeSeconds int64      `json:"oldest_pending_age_seconds"`
	IntervalSeconds         int64      `json:"interval_seconds"`
	Error                   string     `json:"error,omitempty"`
}

// DiskCheck is a path whose free space is watched, with its minimum (a
// zero limit is not checked).
type DiskCheck struct {
	// Name is the config key the path comes from, e.g. "staging_root".
	Name           string
	Path           string
	MinFreeBytes   int64
	MinFreePercent int
	// Remote marks a repository at a backend URL (Path is then its
	// redacted location): nothing local to measure.
	Remote bool
}

// DiskSpace is what statfs says about a filesystem (disk.Stat).
type DiskSpace = disk.Space

// DiskHealth is one watched path's headroom.
type DiskHealth struct {
	Name           string  `json:"name"`
	Path           string  `json:"path"`
	Status         string  `json:"status"`
	FreeBytes      int64   `json:"free_bytes"`
	TotalBytes     int64   `json:"total_bytes"`
	FreePercent    float64 `json:"free_percent"`
	MinFreeBytes   int64   `json:"min_free_bytes"`
	MinFreePercent int     `json:"min_free_percent"`
	Error          string  `json:"error,omitempty"`
	// Note says why a remote repository has no figures.
	Note string `json:"note,omitempty"`
}

// SummarizeSites counts sites by the health in their status (a site no
// worker has touched is unknown) and lists the failed and warning ones,
// failed first, then by name.
func SummarizeSites(sites []domain.Site, statuses map[string]domain.SiteStatus) SitesHealth {
	out := SitesHealth{
		Total: len(sites),
		ByStatus: map[domain.Health]int{
			domain.HealthSuccess: 0, domain.HealthWarning: 0, domain.HealthFailed: 0, domain.HealthUnknown: 0,
		},
		Failing: []FailingSite{},
	}
	for _, site := range sites {
		st := statuses[site.UUID]
		h := st.Health.Status
		switch h {
		case domain.HealthSuccess, domain.HealthWarning, domain.HealthFailed:
		default:
			h = domain.HealthUnknown
		}
		out.ByStatus[h]++
		if h == domain.HealthFailed || h == domain.HealthWarning {
			f := FailingSite{SiteUUID: site.UUID, Name: site.Name, Status: h, Message: st.Health.Message}
			if !st.Health.UpdatedAt.IsZero() {
				at := st.Health.UpdatedAt
				f.UpdatedAt = &at
			}
			out.Failing = append(out.Failing, f)
		}
	}
	sort.SliceStable(out.Failing, func(i, j int) bool {
		a, b := out.Failing[i], out.Failing[j]
		if a.Status != b.Status {
			return a.Status == domain.HealthFailed
		}
		return a.Name < b.Name
	})
	return out
}

// SyncHealthAt judges the offsite copy at now: not_configured without an
// offsite repository; failed when the last attempt failed; stale when no
// sync succeeded within twice the interval (never is stale too); else ok.
func SyncHealthAt(st domain.SyncState, configured bool, interval time.Duration, now time.Time) SyncHealth {
	if interval <= 0 {
		interval = DefaultSyncInterval
	}
	h := SyncHealth{
		LastSuccessAt:    st.LastSuccessAt,
		LastAttemptAt:    st.LastAttemptAt,
		SnapshotsPending: st.SnapshotsPending,
		IntervalSeconds:  int64(interval / time.Second),
		Error:            st.Error,
	}
	if st.OldestPendingAt != nil {
		if age := now.Sub(*st.OldestPendingAt); age > 0 {
			h.OldestPendingAgeSeconds = int64(age / time.Second)
		}
	}
	switch {
	case !configured:
		h.Status = SyncNotConfigured
	case st.Status == domain.HealthFailed:
		h.Status = SyncFailed
	case st.LastSuccessAt == nil || now.Sub(*st.LastSuccessAt) > 2*interval:
		h.Status = SyncStale
	default:
		h.Status = SyncOK
	}
	return h
}

// DiskHealthOf judges one path's headroom from its measured space (or the
// error measuring it) against its minimum.
func DiskHealthOf(d DiskCheck, space DiskSpace, err error) DiskHealth {
	h := DiskHealth{Name: d.Name, Path: d.Path, MinFreeBytes: d.MinFreeBytes, MinFreePercent: d.MinFreePercent}
	if d.Remote {
		h.Status, h.Note = DiskRemote, "a restic repository at a backend URL has no local free space to check"
		h.MinFreeBytes, h.MinFreePercent = 0, 0
		return h
	}
	if err != nil {
		h.Status, h.Error = DiskError, err.Error()
		return h
	}
	h.FreeBytes, h.TotalBytes = space.FreeBytes, space.TotalBytes
	if space.TotalBytes > 0 {
		// One decimal, rounded down; floats: free*1000 could overflow
		// int64 on exabyte volumes.
		h.FreePercent = float64(int64(float64(space.FreeBytes)/float64(space.TotalBytes)*1000)) / 10
	}
	h.Status = DiskOK
	// The puller's rule: what it would refuse a backup for is low here.
	if (disk.Headroom{MinFreeBytes: d.MinFreeBytes, MinFreePercent: d.MinFreePercent}).Judge(d.Path, space) != nil {
		h.Status = DiskLow
	}
	return h
}

// LivenessOf groups the live instances by service: the expected services
// first, in their order, then any other service seen, by name; instances
// by name. An expected service without an instance is down. readErr is
// the error reading the instances, if any.
func LivenessOf(instances []bus.Instance, readErr error, expected []string, now time.Time) *LivenessHealth {
	out := &LivenessHealth{Services: []ServiceHealth{}}
	if readErr != nil {
		out.Error = readErr.Error()
		instances = nil
	}
	idx := map[string]int{}
	for _, name := range expected {
		if _, dup := idx[name]; dup {
			continue
		}
		idx[name] = len(out.Services)
		out.Services = append(out.Services, ServiceHealth{Service: name, Expected: true, Instances: []InstanceHealth{}})
	}
	var extra []string
	byService := map[string][]InstanceHealth{}
	for _, in := range instances {
		if _, ok := idx[in.Service]; !ok && byService[in.Service] == nil {
			extra = append(extra, in.Service)
		}
		age := int64(0)
		if d := now.Sub(in.HeartbeatAt); d > 0 {
			age = int64(d / time.Second)
		}
		byService[in.Service] = append(byService[in.Service], InstanceHealth{Instance: in.Instance, Version: in.Version,
			StartedAt: in.StartedAt, HeartbeatAt: in.HeartbeatAt, HeartbeatAgeSeconds: age})
	}
	sort.Strings(extra)
	for _, name := range extra {
		idx[name] = len(out.Services)
		out.Services = append(out.Services, ServiceHealth{Service: name})
	}
	for i := range out.Services {
		sv := &out.Services[i]
		sv.Instances = byService[sv.Service]
		if sv.Instances == nil {
			sv.Instances = []InstanceHealth{}
		}
		sort.Slice(sv.Instances, func(a, b int) bool { return sv.Instances[a].Instance < sv.Instances[b].Instance })
		sv.Status = ServiceDown
		if len(sv.Instances) > 0 {
			sv.Status = ServiceUp
		}
	}
	return out
}

// Judge sets r.Status and r.Problems from its parts: degraded when a
// service check failed, the service liveness could not be read or an
// expected service has no live instance, a node that owns sites is gone
// (or the node records cannot be read), a site failed or warned, the offsite copy failed
// or is stale, the repository check failed or is stale, or a disk is low or cannot be measured. An offsite copy
// that is not configured is not a problem.
func Judge(r *HealthReport) {
	r.Problems = []string{}
	for _, c := range r.Services {
		if !c.OK {
			r.Problems = append(r.Problems, fmt.Sprintf("service check %s: %s", c.Name, c.Error))
		}
	}
	if l := r.Liveness; l != nil {
		if l.Error != "" {
			r.Problems = append(r.Problems, "service liveness unknown: "+l.Error)
		} else {
			for _, sv := range l.Services {
				if sv.Expected && sv.Status == ServiceDown {
					r.Problems = append(r.Problems, fmt.Sprintf("service %s has no live instance", sv.Service))
				}
			}
		}
	}
	r.Problems = append(r.Problems, nodeProblems(r.Nodes, r.NodesError)...)
	if n := r.Sites.ByStatus[domain.HealthFailed]; n > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d site(s) failed their last backup", n))
	}
	if n := r.Sites.ByStatus[domain.HealthWarning]; n > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d site(s) have warnings from their last backup", n))
	}
	switch r.Sync.Status {
	case SyncFailed:
		r.Problems = append(r.Problems, "offsite sync failed: "+r.Sync.Error)
	case SyncStale:
		if r.Sync.LastSuccessAt == nil {
			r.Problems = append(r.Problems, "offsite sync has never succeeded")
		} else {
			r.Problems = append(r.Problems, fmt.Sprintf("offsite sync is stale: last success %s, more than twice the interval of %s ago",
				r.Sync.LastSuccessAt.UTC().Format(time.RFC3339), time.Duration(r.Sync.IntervalSeconds)*time.Second))
		}
	}
	r.Problems = append(r.Problems, checkProblems(r.Check)...)
	for _, d := range r.Disks {
		switch d.Status {
		case DiskLow:
			r.Problems = append(r.Problems, fmt.Sprintf("%s %s: %d bytes (%.1f%%) free, below the minimum", d.Name, d.Path, d.FreeBytes, d.FreePercent))
		case DiskError:
			r.Problems = append(r.Problems, fmt.Sprintf("%s %s: free space unknown: %s", d.Name, d.Path, d.Error))
		}
	}
	r.Status = HealthOK
	if len(r.Problems) > 0 {
		r.Status = HealthDegraded
	}
}
