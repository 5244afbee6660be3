package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/domain"
)

// RestoreInput is the body of POST /sites/{uuid}/restores.
type RestoreInput struct {
	SnapshotID  string            `json:"snapshot_id"`
	Paths       []string          `json:"paths"`
	Destination *DestinationInput `json:"destination"`
	Overwrite   bool              `json:"overwrite"`
	DryRun      bool              `json:"dry_run"`
}

// DestinationInput is exactly one of {"local_path": "/abs"} (a folder on
// the Satoru host) or {"to_site": true, "path": "/abs"} (a folder on the
// site's edge host, reached over its pinned ssh).
type DestinationInput struct {
	LocalPath *string `json:"local_path"`
	ToSite    *bool   `json:"to_site"`
	Path      *string `json:"path"`
}

// maxRestorePaths bounds a restore's paths.
const maxRestorePaths = 1000

const destinationHelp = `give {"local_path": "/folder"} or {"to_site": true, "path": "/folder"}`

// ValidateRestore checks a restore request and returns the job's options
// (paths cleaned, snapshot id as given). Errors name the field.
func ValidateRestore(in RestoreInput) (domain.RestoreRequest, *Error) {
	var r domain.RestoreRequest
	if msg := checkSnapshotID(in.SnapshotID); msg != "" {
		return r, invalid("snapshot_id: %s", msg)
	}
	switch {
	case len(in.Paths) == 0:
		return r, invalid("paths: required: the files or folders to restore, as absolute paths inside the snapshot")
	case len(in.Paths) > maxRestorePaths:
		return r, invalid("paths: at most %d, got %d", maxRestorePaths, len(in.Paths))
	}
	names := map[string]int{}
	for i, p := range in.Paths {
		if msg := checkPath(p); msg != "" {
			return r, invalid("paths[%d]: %s", i, msg)
		}
		p = path.Clean(p)
		if p == "/" {
			return r, invalid("paths[%d]: must name a file or folder inside the snapshot (start from the snapshot's root path), not /", i)
		}
		// Each path lands at <destination>/<base name>: two of one name
		// would land on each other.
		base := path.Base(p)
		if j, dup := names[base]; dup {
			return r, invalid("paths[%d]: has the same name %q as paths[%d], and both would be restored to <destination>/%s; restore them separately", i, base, j, base)
		}
		names[base] = i
		r.Paths = append(r.Paths, p)
	}
	d := in.Destination
	if d == nil {
		return r, invalid("destination: required: %s", destinationHelp)
	}
	toSite := d.ToSite != nil && *d.ToSite
	switch {
	case d.LocalPath != nil && (toSite || d.Path != nil):
		return r, invalid("destination: give either local_path, or to_site with path, not both")
	case d.LocalPath != nil:
		if msg := checkPath(*d.LocalPath); msg != "" {
			return r, invalid("destination.local_path: %s", msg)
		}
		r.Destination.LocalPath = path.Clean(*d.LocalPath)
		if r.Destination.LocalPath == "/" {
			return r, invalid("destination.local_path: must not be the root folder")
		}
	case toSite:
		if d.Path == nil || *d.Path == "" {
			return r, invalid("destination.path: required with to_site: the folder on the site to restore into")
		}
		if msg := checkPath(*d.Path); msg != "" {
			return r, invalid("destination.path: %s", msg)
		}
		r.Destination.ToSite, r.Destination.Path = true, path.Clean(*d.Path)
		if r.Destination.Path == "/" {
			return r, invalid("destination.path: must not be the root folder")
		}
	case d.Path != nil:
		return r, invalid("destination.path: only with to_site: true (for a folder on this host use local_path)")
	default:
		return r, invalid("destination: %s", destinationHelp)
	}
	r.SnapshotID, r.Overwrite, r.DryRun = in.SnapshotID, in.Overwrite, in.DryRun
	return r, nil
}

// createRestore checks the request, finds the snapshot among the site's
// (so a site's restore can only use its own snapshots, and a prefix
// becomes the full id) and queues a restore job for the puller.
func (s *server) createRestore(ctx context.Context, siteUUID string, in RestoreInput) (JobAccepted, error) {
	req, verr := ValidateRestore(in)
	if verr != nil {
		return JobAccepted{}, verr
	}
	if _, err := s.store.GetSite(ctx, siteUUID); err != nil {
		return JobAccepted{}, storeError(err, siteNotFound(siteUUID), "")
	}
	if s.repo == nil {
		return JobAccepted{}, errNoRepo
	}
	list, err := s.listSnapshots(ctx, siteUUID)
	if err != nil {
		return JobAccepted{}, err
	}
	var match []SnapshotView
	for _, sn := range list.Snapshots {
		if strings.HasPrefix(sn.ID, req.SnapshotID) {
			match = append(match, sn)
		}
	}
	switch len(match) {
	case 0:
		return JobAccepted{}, notFound("snapshot_id: site %s has no snapshot %q (list them with GET /api/v1/sites/%s/snapshots)", siteUUID, req.SnapshotID, siteUUID)
	case 1:
	default:
		return JobAccepted{}, invalid("snapshot_id: %q matches %d snapshots of the site; give more digits", req.SnapshotID, len(match))
	}
	snap := match[0]
	req.SnapshotID = snap.ID
	for i, p := range req.Paths {
		if !insideAny(p, snap.Paths) {
			return JobAccepted{}, invalid("paths[%d]: %q is not inside the snapshot, whose root is %s", i, clip(p), strings.Join(snap.Paths, ", "))
		}
	}
	return s.enqueue(ctx, domain.Job{
		ID:        s.newID(),
		SiteUUID:  siteUUID,
		Type:      domain.JobRestore,
		Status:    domain.StatusQueued,
		CreatedAt: s.now().UTC(),
		Restore:   &req,
	})
}

// insideAny reports whether p is one of roots or below one.
func insideAny(p string, roots []string) bool {
	for _, r := range roots {
		if p == r || strings.HasPrefix(p, strings.TrimRight(r, "/")+"/") {
			return true
		}
	}
	return false
}

func (s *server) handleCreateRestore(c echo.Context) error {
	var in RestoreInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	out, err := s.createRestore(c.Request().Context(), c.Param("site_uuid"), in)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, fmt.Sprintf("%s/jobs/%s", BasePath, out.JobID))
	return c.JSON(http.StatusAccepted, out)
}
