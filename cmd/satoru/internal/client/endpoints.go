package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

// Request bodies. The API refuses unknown fields, so these mirror
// services/api/internal/httpapi exactly.

// SiteInput is the body of POST /sites.
type SiteInput struct {
	Name               string        `json:"name"`
	Host               string        `json:"host"`
	Port               int           `json:"port,omitempty"`
	User               string        `json:"user"`
	SSHKeyPath         string        `json:"ssh_key_path,omitempty"`
	HostKey            string        `json:"host_key,omitempty"`
	TrustOnFirstUse    bool          `json:"trust_on_first_use,omitempty"`
	BandwidthLimitKbps int           `json:"bandwidth_limit_kbps,omitempty"`
	Targets            []TargetInput `json:"targets,omitempty"`
}

// TargetInput is the body of POST /sites/{uuid}/targets.
type TargetInput struct {
	Mode     domain.TargetMode `json:"mode"`
	Path     string            `json:"path"`
	Excludes []string          `json:"excludes,omitempty"`
}

// RestoreInput is the body of POST /sites/{uuid}/restores.
type RestoreInput struct {
	SnapshotID  string                    `json:"snapshot_id"`
	Paths       []string                  `json:"paths"`
	Destination domain.RestoreDestination `json:"destination"`
	Overwrite   bool                      `json:"overwrite,omitempty"`
	DryRun      bool                      `json:"dry_run,omitempty"`
}

// JobQuery filters GET /jobs; zero fields are not sent.
type JobQuery struct {
	SiteUUID string
	Type     string
	Status   string
	Limit    int
}

// Answers. Each embeds Body, so the API's JSON can be printed as is.

// SiteList is the answer of GET /sites.
type SiteList struct {
	Body
	Sites []domain.SiteView `json:"sites"`
}

// SiteDetail is a site with its status and targets.
type SiteDetail struct {
	Body
	domain.SiteView
	Targets []domain.Target `json:"targets"`
}

// Target is the answer of POST /sites/{uuid}/targets.
type Target struct {
	Body
	domain.Target
}

// TargetList is the answer of GET /sites/{uuid}/targets.
type TargetList struct {
	Body
	SiteUUID string          `json:"site_uuid"`
	Targets  []domain.Target `json:"targets"`
}

// Accepted is the answer of the calls that queue a job.
type Accepted struct {
	Body
	JobID  string           `json:"job_id"`
	Status domain.JobStatus `json:"status"`
}

// CancelAccepted is the answer of POST /jobs/{id}/cancel.
type CancelAccepted struct {
	Body
	JobID           string `json:"job_id"`
	CancelRequested bool   `json:"cancel_requested"`
}

// Job is the answer of GET /jobs/{id}.
type Job struct {
	Body
	domain.Job
}

// JobList is the answer of GET /jobs.
type JobList struct {
	Body
	Jobs []domain.Job `json:"jobs"`
}

// JobEvents is the answer of GET /jobs/{id}/events.
type JobEvents struct {
	Body
	JobID  string            `json:"job_id"`
	Events []domain.JobEvent `json:"events"`
}

// Snapshot is one entry of GET /sites/{uuid}/snapshots.
type Snapshot = domain.SnapshotView

// SnapshotList is the answer of GET /sites/{uuid}/snapshots.
type SnapshotList struct {
	Body
	SiteUUID  string     `json:"site_uuid"`
	Snapshots []Snapshot `json:"snapshots"`
}

// SyncView is the answer of GET /sync.
type SyncView struct {
	Body
	domain.SyncState
	Configured              bool   `json:"configured"`
	IntervalSeconds         int64  `json:"interval_seconds"`
	OldestPendingAgeSeconds int64  `json:"oldest_pending_age_seconds"`
	Health                  string `json:"health"`
}

// HealthReport is the answer of GET /health (the parts the CLI shows;
// Raw has all of it).
type HealthReport struct {
	Body
	Status    string    `json:"status"`
	CheckedAt time.Time `json:"checked_at"`
	Problems  []string  `json:"problems"`
	Services  []struct {
		Name  string `json:"name"`
		OK    bool   `json:"ok"`
		Error string `json:"error,omitempty"`
	} `json:"services"`
	Sites struct {
		Total    int                   `json:"total"`
		ByStatus map[domain.Health]int `json:"by_status"`
		Failing  []struct {
			SiteUUID string        `json:"site_uuid"`
			Name     string        `json:"name"`
			Status   domain.Health `json:"status"`
			Message  string        `json:"message,omitempty"`
		} `json:"failing"`
	} `json:"sites"`
	Sync struct {
		Status                  string     `json:"status"`
		LastSuccessAt           *time.Time `json:"last_success_at"`
		SnapshotsPending        int        `json:"snapshots_pending"`
		OldestPendingAgeSeconds int64      `json:"oldest_pending_age_seconds"`
		Error                   string     `json:"error,omitempty"`
	} `json:"sync"`
	Check struct {
		Status        string     `json:"status"`
		LastSuccessAt *time.Time `json:"last_success_at"`
		Error         string     `json:"error,omitempty"`
	} `json:"check"`
	Disks []struct {
		Name        string  `json:"name"`
		Path        string  `json:"path"`
		Status      string  `json:"status"`
		FreeBytes   int64   `json:"free_bytes"`
		TotalBytes  int64   `json:"total_bytes"`
		FreePercent float64 `json:"free_percent"`
		Error       string  `json:"error,omitempty"`
		Note        string  `json:"note,omitempty"`
	} `json:"disks"`
	Liveness *struct {
		Error    string `json:"error,omitempty"`
		Services []struct {
			Service   string `json:"service"`
			Status    string `json:"status"`
			Expected  bool   `json:"expected"`
			Instances []struct {
				Instance string `json:"instance"`
			} `json:"instances"`
		} `json:"services"`
	} `json:"liveness,omitempty"`
	Nodes []struct {
		Node      string `json:"node"`
		Status    string `json:"status"`
		Instances []struct {
			Service  string `json:"service"`
			Instance string `json:"instance"`
			Live     bool   `json:"live"`
		} `json:"instances"`
		LastSeen    time.Time `json:"last_seen"`
		RunningJobs int       `json:"running_jobs"`
		SitesOwned  int       `json:"sites_owned"`
		// Partitions and SitesAssigned: the node's share of the sites.
		Partitions    int `json:"partitions"`
		SitesAssigned int `json:"sites_assigned"`
	} `json:"nodes"`
	NodesError string `json:"nodes_error,omitempty"`
}

// Sites.

// ListSites is GET /sites.
func (c *Client) ListSites(ctx context.Context) (SiteList, error) {
	var out SiteList
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "sites"), nil, &out)
}

// GetSite is GET /sites/{uuid}.
func (c *Client) GetSite(ctx context.Context, uuid string) (SiteDetail, error) {
	var out SiteDetail
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "sites", uuid), nil, &out)
}

// CreateSite is POST /sites.
func (c *Client) CreateSite(ctx context.Context, in SiteInput) (SiteDetail, error) {
	var out SiteDetail
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "sites"), in, &out)
}

// DeleteSite is DELETE /sites/{uuid}.
func (c *Client) DeleteSite(ctx context.Context, uuid string) error {
	return c.do(ctx, http.MethodDelete, c.endpoint(nil, "sites", uuid), nil, nil)
}

// Targets.

// AddTarget is POST /sites/{uuid}/targets.
func (c *Client) AddTarget(ctx context.Context, siteUUID string, in TargetInput) (Target, error) {
	var out Target
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "sites", siteUUID, "targets"), in, &out)
}

// ListTargets is GET /sites/{uuid}/targets.
func (c *Client) ListTargets(ctx context.Context, siteUUID string) (TargetList, error) {
	var out TargetList
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "sites", siteUUID, "targets"), nil, &out)
}

// DeleteTarget is DELETE /sites/{uuid}/targets/{hash}.
func (c *Client) DeleteTarget(ctx context.Context, siteUUID, targetHash string) error {
	return c.do(ctx, http.MethodDelete, c.endpoint(nil, "sites", siteUUID, "targets", targetHash), nil, nil)
}

// Jobs.

// CreateJob is POST /sites/{uuid}/jobs.
func (c *Client) CreateJob(ctx context.Context, siteUUID string, typ domain.JobType) (Accepted, error) {
	var out Accepted
	body := struct {
		Type domain.JobType `json:"type"`
	}{typ}
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "sites", siteUUID, "jobs"), body, &out)
}

// ListJobs is GET /jobs.
func (c *Client) ListJobs(ctx context.Context, q JobQuery) (JobList, error) {
	v := url.Values{}
	for k, s := range map[string]string{"site_uuid": q.SiteUUID, "type": q.Type, "status": q.Status} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out JobList
	return out, c.do(ctx, http.MethodGet, c.endpoint(v, "jobs"), nil, &out)
}

// GetJob is GET /jobs/{id}.
func (c *Client) GetJob(ctx context.Context, id string) (Job, error) {
	var out Job
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "jobs", id), nil, &out)
}

// JobEvents is GET /jobs/{id}/events.
func (c *Client) JobEvents(ctx context.Context, id string) (JobEvents, error) {
	var out JobEvents
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "jobs", id, "events"), nil, &out)
}

// CancelJob is POST /jobs/{id}/cancel.
func (c *Client) CancelJob(ctx context.Context, id string) (CancelAccepted, error) {
	var out CancelAccepted
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "jobs", id, "cancel"), nil, &out)
}

// Snapshots and restores.

// ListSnapshots is GET /sites/{uuid}/snapshots.
func (c *Client) ListSnapshots(ctx context.Context, siteUUID string) (SnapshotList, error) {
	var out SnapshotList
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "sites", siteUUID, "snapshots"), nil, &out)
}

// CreateRestore is POST /sites/{uuid}/restores.
func (c *Client) CreateRestore(ctx context.Context, siteUUID string, in RestoreInput) (Accepted, error) {
	var out Accepted
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "sites", siteUUID, "restores"), in, &out)
}

// Offsite sync and health.

// CreateSync is POST /sync.
func (c *Client) CreateSync(ctx context.Context) (Accepted, error) {
	var out Accepted
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "sync"), struct{}{}, &out)
}

// GetSync is GET /sync.
func (c *Client) GetSync(ctx context.Context) (SyncView, error) {
	var out SyncView
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "sync"), nil, &out)
}

// Health is GET /health.
func (c *Client) Health(ctx context.Context) (HealthReport, error) {
	var out HealthReport
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "health"), nil, &out)
}
