package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

// NoteForcedWindow starts the policy note of a job started by hand with
// "force" inside one of its site's maintenance windows: it may start
// there.
const NoteForcedWindow = "forced inside maintenance window"

// SiteReader reads a site by uuid.
type SiteReader interface {
	GetSite(ctx context.Context, uuid string) (domain.Site, error)
}

// HoldFor is the workers' side of maintenance windows: no job starts
// inside one. The API refuses a manual job there unless forced, and the
// scheduler queues none; this catches what was queued before a window
// opened (a job waiting for its site, a retry). It returns when the
// window ends and why, or a zero time for a job that may start.
// Restores are never held (as in the API), nor repository-level jobs, nor
// a job forced into the window. isNotFound tells a deleted site (no
// hold: the job fails on its own).
func HoldFor(sites SiteReader, isNotFound func(error) bool, now func() time.Time) func(ctx context.Context, job domain.Job) (time.Time, string, error) {
	return func(ctx context.Context, job domain.Job) (time.Time, string, error) {
		if job.SiteUUID == "" || job.Type == domain.JobRestore || strings.Contains(job.PolicyNote, NoteForcedWindow) {
			return time.Time{}, "", nil
		}
		site, err := sites.GetSite(ctx, job.SiteUUID)
		switch {
		case err != nil && isNotFound != nil && isNotFound(err):
			return time.Time{}, "", nil
		case err != nil:
			return time.Time{}, "", fmt.Errorf("policy: read site %s: %w", job.SiteUUID, err)
		case site.Policy == nil || len(site.Policy.MaintenanceWindows) == 0:
			return time.Time{}, "", nil
		}
		ws, err := ParseWindows(site.Policy.MaintenanceWindows)
		if err != nil {
			// Stored windows were validated; one that no longer parses
			// (a zone gone from the database) holds nothing.
			return time.Time{}, "", nil
		}
		w, end, in := ws.At(now())
		if !in {
			return time.Time{}, "", nil
		}
		return end, fmt.Sprintf("site %q is in maintenance window %s until %s; the job starts after it", site.Name, w.Label(), end.UTC().Format(time.RFC3339)), nil
	}
}
