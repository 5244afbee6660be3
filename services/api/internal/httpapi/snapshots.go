package httpapi

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/restic"
)

// Browsing a snapshot: GET /sites/{uuid}/snapshots lists a site's
// snapshots with their root path (paths[0], the site's staging folder,
// e.g. /var/lib/satoru/backups/<site_uuid>). A client starts there with
// GET /snapshots/{id}/tree?path=<root>, descends by each entry's path,
// and fetches any entry with GET /snapshots/{id}/download?path=<path>:
// a file as is, a folder as a tar rooted at that folder. Paths are the
// absolute staging paths stored in the snapshot; an empty path is "/".

// SnapshotView is one snapshot of a site (shared with API clients).
type SnapshotView = domain.SnapshotView

// SnapshotList is the answer of GET /sites/{uuid}/snapshots, newest first.
type SnapshotList struct {
	SiteUUID  string         `json:"site_uuid"`
	Snapshots []SnapshotView `json:"snapshots"`
}

// TreeEntry is one entry of a snapshot folder.
type TreeEntry struct {
	Name  string    `json:"name"`
	Type  string    `json:"type"` // file, dir, symlink, ...
	Path  string    `json:"path"`
	Size  int64     `json:"size"`
	MTime time.Time `json:"mtime"`
}

// Tree is the answer of GET /snapshots/{id}/tree: one folder level.
type Tree struct {
	SnapshotID string      `json:"snapshot_id"`
	Path       string      `json:"path"`
	Entries    []TreeEntry `json:"entries"`
	// Omitted counts entries past the listing cap (restic.MaxListEntries).
	Omitted int `json:"omitted,omitempty"`
}

var errNoRepo = unavailable(nil, "no restic repository is configured for this API")

func (s *server) listSnapshots(ctx context.Context, siteUUID string) (SnapshotList, error) {
	if _, err := s.store.GetSite(ctx, siteUUID); err != nil {
		return SnapshotList{}, storeError(err, siteNotFound(siteUUID), "")
	}
	if s.repo == nil {
		return SnapshotList{}, errNoRepo
	}
	snaps, err := s.repo.Snapshots(ctx, domain.SiteTag(siteUUID))
	if errors.Is(err, restic.ErrNoRepository) {
		snaps, err = nil, nil // nothing backed up yet
	}
	if err != nil {
		return SnapshotList{}, repoError(err, "", "")
	}
	out := make([]SnapshotView, 0, len(snaps))
	for _, sn := range snaps {
		out = append(out, snapshotView(sn))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return SnapshotList{SiteUUID: siteUUID, Snapshots: out}, nil
}

func snapshotView(sn restic.Snapshot) SnapshotView {
	v := SnapshotView{ID: sn.ID, ShortID: sn.ShortID, Time: sn.Time, Hostname: sn.Host,
		Tags: orEmpty(sn.Tags), Paths: orEmpty(sn.Paths), JobID: domain.JobOfTags(sn.Tags)}
	if sm := sn.Summary; sm != nil {
		v.Size, v.Files = sm.TotalBytesProcessed, sm.TotalFilesProcessed
		v.FilesNew, v.FilesChanged, v.FilesUnmodified = sm.FilesNew, sm.FilesChanged, sm.FilesUnmodified
		v.DataAdded = sm.DataAdded
	}
	return v
}

// snapshotParams validates the {id} and ?path= of the browse endpoints.
func snapshotParams(c echo.Context) (string, string, *Error) {
	id := c.Param("id")
	if msg := checkSnapshotID(id); msg != "" {
		return "", "", invalid("id: %s", msg)
	}
	q := c.QueryParams()["path"]
	if len(q) > 1 {
		return "", "", invalid("path: give it at most once")
	}
	p := "/"
	if len(q) == 1 && q[0] != "" {
		if msg := checkPath(q[0]); msg != "" {
			return "", "", invalid("path: %s", msg)
		}
		p = path.Clean(q[0])
	}
	return id, p, nil
}

// checkSnapshotID accepts a restic snapshot id: 8 to 64 lower-case hex
// digits (a unique prefix or the whole id).
func checkSnapshotID(id string) string {
	switch {
	case id == "":
		return "required"
	case len(id) < 8 || len(id) > 64 || strings.Trim(id, "0123456789abcdef") != "":
		return fmt.Sprintf("must be a snapshot id of 8 to 64 lower-case hex digits, got %q", clip(id))
	}
	return ""
}

func (s *server) snapshotTree(ctx context.Context, id, dir string) (Tree, error) {
	if s.repo == nil {
		return Tree{}, errNoRepo
	}
	l, err := s.repo.List(ctx, id, dir)
	if err != nil {
		return Tree{}, repoError(err, id, dir)
	}
	out := Tree{SnapshotID: id, Path: dir, Entries: make([]TreeEntry, 0, len(l.Entries)), Omitted: l.Omitted}
	for _, n := range l.Entries {
		out.Entries = append(out.Entries, TreeEntry{Name: n.Name, Type: n.Type, Path: n.Path, Size: n.Size, MTime: n.MTime})
	}
	return out, nil
}

// repoError maps a restic failure: unknown snapshot or path is 404, a
// file where a folder was expected 400, a client gone is passed on, the
// rest is the repository being unavailable (503, cause logged only).
func repoError(err error, id, p string) error {
	var apiErr *Error
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, restic.ErrSnapshotNotFound), errors.Is(err, restic.ErrNoRepository):
		return notFound("snapshot %q not found", clip(id))
	case errors.Is(err, restic.ErrPathNotFound):
		return notFound("snapshot %s has no file or folder %q", clip(id), clip(p))
	case errors.Is(err, restic.ErrNotDir):
		return invalid("path: %q is not a folder; download it with GET /api/v1/snapshots/%s/download?path=...", clip(p), clip(id))
	case errors.Is(err, context.Canceled):
		return err
	}
	return unavailable(err, "the restic repository could not be read; try again later")
}

func (s *server) handleListSnapshots(c echo.Context) error {
	out, err := s.listSnapshots(c.Request().Context(), c.Param("site_uuid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleSnapshotTree(c echo.Context) error {
	id, p, verr := snapshotParams(c)
	if verr != nil {
		return verr
	}
	out, err := s.snapshotTree(c.Request().Context(), id, p)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

// handleDownload streams a file as is, or a folder as a tar rooted at
// the folder, straight from restic's stdout to the client: nothing is
// held in memory or on disk, so memory stays flat whatever the size.
// Errors found before the first byte (unknown snapshot or path) are the
// JSON envelope; a failure mid-stream aborts the connection, so the
// client sees a broken transfer rather than a short file.
func (s *server) handleDownload(c echo.Context) error {
	id, p, verr := snapshotParams(c)
	if verr != nil {
		return verr
	}
	if s.repo == nil {
		return errNoRepo
	}
	ctx := c.Request().Context()
	node, err := s.repo.Stat(ctx, id, p)
	if err != nil {
		return repoError(err, id, p)
	}
	archive, ctype, name := "", "application/octet-stream", node.Name
	switch {
	case node.IsDir():
		archive, ctype, name = "tar", "application/x-tar", path.Base(p)+".tar"
		if p == "/" {
			name = "snapshot-" + id[:8] + ".tar"
		}
	case node.Type != "file":
		return invalid("path: %q is a %s; only files and folders can be downloaded", clip(p), node.Type)
	}
	resp := c.Response()
	h := resp.Header()
	h.Set(echo.HeaderContentType, ctype)
	h.Set(echo.HeaderContentDisposition, mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	if archive == "" {
		h.Set(echo.HeaderContentLength, fmt.Sprint(node.Size))
	}
	err = s.repo.Dump(ctx, id, p, resp, archive)
	if err == nil {
		if !resp.Committed {
			resp.WriteHeader(http.StatusOK) // an empty file
		}
		return nil
	}
	if !resp.Committed {
		h.Del(echo.HeaderContentType)
		h.Del(echo.HeaderContentDisposition)
		h.Del(echo.HeaderContentLength)
		h.Del(echo.HeaderXContentTypeOptions)
		return repoError(err, id, p)
	}
	if ctx.Err() == nil {
		s.log.Error("api: download failed mid-stream", "snapshot", id, "path", p, "request_id", requestID(c), "err", err)
	}
	panic(http.ErrAbortHandler)
}
