package client

import (
	"context"
	"net/http"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

// CodeMaintenanceWindow: a manual job was refused inside one of the
// site's maintenance windows (send force to start it anyway).
const CodeMaintenanceWindow = "maintenance_window"

// PolicyView is the answer of GET and PUT /sites/{uuid}/policy.
type PolicyView struct {
	Body
	SiteUUID     string            `json:"site_uuid"`
	Policy       domain.SitePolicy `json:"policy"`
	InWindow     string            `json:"in_window,omitempty"`
	WindowEndsAt *time.Time        `json:"window_ends_at,omitempty"`
	NextCronRuns []time.Time       `json:"next_cron_runs,omitempty"`
}

// GetPolicy is GET /sites/{uuid}/policy.
func (c *Client) GetPolicy(ctx context.Context, siteUUID string) (PolicyView, error) {
	var out PolicyView
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "sites", siteUUID, "policy"), nil, &out)
}

// PutPolicy is PUT /sites/{uuid}/policy: it replaces the whole policy.
func (c *Client) PutPolicy(ctx context.Context, siteUUID string, p domain.SitePolicy) (PolicyView, error) {
	var out PolicyView
	return out, c.do(ctx, http.MethodPut, c.endpoint(nil, "sites", siteUUID, "policy"), p, &out)
}

// CreateJobForced is POST /sites/{uuid}/jobs with "force": true: the job
// starts even inside a maintenance window of the site.
func (c *Client) CreateJobForced(ctx context.Context, siteUUID string, typ domain.JobType) (Accepted, error) {
	var out Accepted
	body := struct {
		Type  domain.JobType `json:"type"`
		Force bool           `json:"force"`
	}{typ, true}
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "sites", siteUUID, "jobs"), body, &out)
}
