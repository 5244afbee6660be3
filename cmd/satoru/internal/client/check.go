package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/satoru/satoru/shared/domain"
)

// CheckView is the answer of GET /check.
type CheckView struct {
	Body
	domain.CheckState
	IntervalSeconds int64       `json:"interval_seconds"`
	Health          string      `json:"health"`
	ActiveJob       *domain.Job `json:"active_job,omitempty"`
}

// DiffEntry is one path of a snapshot diff.
type DiffEntry struct {
	Path     string `json:"path"`
	Type     string `json:"type"`
	Size     int64  `json:"size"`
	OldSize  int64  `json:"old_size,omitempty"`
	Modifier string `json:"modifier"`
}

// SnapshotDiff is the answer of GET /snapshots/{id}/diff.
type SnapshotDiff struct {
	Body
	SnapshotID string      `json:"snapshot_id"`
	Against    string      `json:"against"`
	Added      []DiffEntry `json:"added"`
	Removed    []DiffEntry `json:"removed"`
	Changed    []DiffEntry `json:"changed"`
	Totals     struct {
		Added        int   `json:"added"`
		Removed      int   `json:"removed"`
		Changed      int   `json:"changed"`
		AddedBytes   int64 `json:"added_bytes"`
		RemovedBytes int64 `json:"removed_bytes"`
		ChangedBytes int64 `json:"changed_bytes"`
	} `json:"totals"`
	Truncated bool `json:"truncated"`
}

// CreateCheck is POST /check.
func (c *Client) CreateCheck(ctx context.Context) (Accepted, error) {
	var out Accepted
	return out, c.do(ctx, http.MethodPost, c.endpoint(nil, "check"), struct{}{}, &out)
}

// GetCheck is GET /check.
func (c *Client) GetCheck(ctx context.Context) (CheckView, error) {
	var out CheckView
	return out, c.do(ctx, http.MethodGet, c.endpoint(nil, "check"), nil, &out)
}

// SnapshotDiff is GET /snapshots/{id}/diff?against={against}.
func (c *Client) SnapshotDiff(ctx context.Context, id, against string) (SnapshotDiff, error) {
	var out SnapshotDiff
	return out, c.do(ctx, http.MethodGet, c.endpoint(url.Values{"against": {against}}, "snapshots", id, "diff"), nil, &out)
}
