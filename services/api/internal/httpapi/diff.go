package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/restic"
)

// Differ is optional: a Repository that also implements it (restic.Repo
// does) serves GET /snapshots/{id}/diff; without it the route answers 503.
type Differ interface {
	Diff(ctx context.Context, from, to string) (restic.DiffResult, error)
}

// DiffEntry is one path that differs between two snapshots.
type DiffEntry = restic.DiffEntry

// DiffTotals counts a diff's paths and sums their sizes.
type DiffTotals struct {
	Added   int `json:"added"`
	Removed int `json:"removed"`
	Changed int `json:"changed"`
	// AddedBytes, RemovedBytes: the listed files' sizes; ChangedBytes:
	// the changed files' growth (negative when they shrank).
	AddedBytes   int64 `json:"added_bytes"`
	RemovedBytes int64 `json:"removed_bytes"`
	ChangedBytes int64 `json:"changed_bytes"`
	// AddedDataBytes, RemovedDataBytes: restic's statistics, the
	// repository data only the newer (older) snapshot references.
	AddedDataBytes   int64 `json:"added_data_bytes"`
	RemovedDataBytes int64 `json:"removed_data_bytes"`
}

// SnapshotDiff is the answer of GET /snapshots/{id}/diff?against={other}:
// what changed from snapshot Against (the base) to snapshot SnapshotID.
type SnapshotDiff struct {
	SnapshotID string      `json:"snapshot_id"`
	Against    string      `json:"against"`
	Added      []DiffEntry `json:"added"`
	Removed    []DiffEntry `json:"removed"`
	Changed    []DiffEntry `json:"changed"`
	Totals     DiffTotals  `json:"totals"`
	// Truncated: a list stopped at restic.MaxDiffEntries entries; the
	// totals' counts still count every path.
	Truncated bool `json:"truncated"`
}

func (s *server) snapshotDiff(ctx context.Context, id, against string) (SnapshotDiff, error) {
	if s.repo == nil {
		return SnapshotDiff{}, errNoRepo
	}
	d, ok := s.repo.(Differ)
	if !ok {
		return SnapshotDiff{}, unavailable(nil, "this API's repository cannot compare snapshots")
	}
	res, err := d.Diff(ctx, against, id)
	if err != nil {
		if errors.Is(err, restic.ErrSnapshotNotFound) {
			// Name the id restic did not find; both when it did not say.
			missing := against + " or " + id
			for _, x := range []string{id, against} {
				if containsID(err.Error(), x) {
					missing = x
					break
				}
			}
			return SnapshotDiff{}, notFound("snapshot %q not found", clip(missing))
		}
		return SnapshotDiff{}, repoError(err, id, "")
	}
	t := res.Totals
	return SnapshotDiff{SnapshotID: res.To, Against: res.From, Added: res.Added, Removed: res.Removed, Changed: res.Changed,
		Truncated: res.Truncated, Totals: DiffTotals{Added: t.Added, Removed: t.Removed, Changed: t.Changed,
			AddedBytes: t.AddedBytes, RemovedBytes: t.RemovedBytes, ChangedBytes: t.ChangedBytes,
			AddedDataBytes: t.AddedDataBytes, RemovedDataBytes: t.RemovedDataBytes}}, nil
}

// containsID reports whether restic's message names id.
func containsID(msg, id string) bool { return strings.Contains(msg, id) }

func (s *server) handleSnapshotDiff(c echo.Context) error {
	id := c.Param("id")
	if msg := checkSnapshotID(id); msg != "" {
		return invalid("id: %s", msg)
	}
	q := c.QueryParams()["against"]
	if len(q) != 1 {
		return invalid("against: give the id of the snapshot to compare with, once")
	}
	if msg := checkSnapshotID(q[0]); msg != "" {
		return invalid("against: %s", msg)
	}
	out, err := s.snapshotDiff(c.Request().Context(), id, q[0])
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}
