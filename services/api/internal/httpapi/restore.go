package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/restore"
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

// ValidateRestore checks a restore request and returns the job's options
// (paths cleaned, snapshot id as given). The rules are shared/restore's:
// Destination judges the JSON's shape (which destination fields were
// given at all), Validate the values, the same rules the puller checks
// again on the job. Errors name the field.
func ValidateRestore(in RestoreInput) (domain.RestoreRequest, *Error) {
	r := domain.RestoreRequest{SnapshotID: in.SnapshotID, Paths: in.Paths, Overwrite: in.Overwrite, DryRun: in.DryRun}
	if d := in.Destination; d != nil {
		dest, err := restore.Destination(d.LocalPath, d.ToSite, d.Path)
		if err != nil {
			return r, invalid("%s", err.Error())
		}
		r.Destination = dest
	}
	r = restore.Clean(r)
	if err := restore.Validate(r); err != nil {
		return r, invalid("%s", err.Error())
	}
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
	if s.restoreGuard != nil && req.Destination.LocalPath != "" {
		// An early answer for this host; the puller checks again, with
		// symlinks resolved at the time it runs.
		if _, err := s.restoreGuard.Check(req.Destination.LocalPath); err != nil {
			if errors.Is(err, restore.ErrInvalid) {
				return JobAccepted{}, invalid("%s", err.Error())
			}
			return JobAccepted{}, err
		}
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
	if err := restore.InSnapshot(req.Paths, snap.Paths); err != nil {
		return JobAccepted{}, invalid("%s", err.Error())
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

func (s *server) handleCreateRestore(c echo.Context) error {
	var in RestoreInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	if err := checkRestoreAccess(c, in); err != nil {
		return err
	}
	out, err := s.createRestore(c.Request().Context(), c.Param("site_uuid"), in)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, fmt.Sprintf("%s/jobs/%s", BasePath, out.JobID))
	return c.JSON(http.StatusAccepted, out)
}
