package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/restore"
)

const (
	snapA = "aaaaaaaa11111111111111111111111111111111111111111111111111111111"
	snapB = "bbbbbbbb22222222222222222222222222222222222222222222222222222222"
	root  = "/var/lib/satoru/backups/id-1"
)

// fakeRepo is an in-memory Repository: snapshots by tag, one folder, one
// file.
type fakeRepo struct {
	snaps   []restic.Snapshot
	err     error // returned by every call when set
	dumpErr error // returned by Dump after writing dumpOut
	dumpOut string
	tags    [][]string
	dumps   []string
}

func (f *fakeRepo) Snapshots(_ context.Context, tags ...string) ([]restic.Snapshot, error) {
	f.tags = append(f.tags, tags)
	if f.err != nil {
		return nil, f.err
	}
	var out []restic.Snapshot
	for _, s := range f.snaps {
		if len(tags) == 1 && s.Tags[0] == tags[0] {
			out = append(out, s)
		}
	}
	return out, nil
}

func (f *fakeRepo) node(id, p string) (restic.Node, error) {
	if f.err != nil {
		return restic.Node{}, f.err
	}
	if !strings.HasPrefix(snapA, id) {
		return restic.Node{}, fmt.Errorf("restic ls: %w", restic.ErrSnapshotNotFound)
	}
	switch p {
	case "/", root:
		return restic.Node{Name: "id-1", Type: "dir", Path: p}, nil
	case root + "/f.txt":
		return restic.Node{Name: "f.txt", Type: "file", Path: p, Size: 5}, nil
	case root + "/link":
		return restic.Node{Name: "link", Type: "symlink", Path: p}, nil
	}
	return restic.Node{}, fmt.Errorf("restic ls: %w", restic.ErrPathNotFound)
}

func (f *fakeRepo) List(_ context.Context, id, dir string) (restic.Listing, error) {
	n, err := f.node(id, dir)
	if err != nil {
		return restic.Listing{}, err
	}
	if !n.IsDir() {
		return restic.Listing{}, fmt.Errorf("restic ls: %w", restic.ErrNotDir)
	}
	return restic.Listing{Dir: &n, Entries: []restic.Node{
		{Name: "f.txt", Type: "file", Path: root + "/f.txt", Size: 5, MTime: testNow},
		{Name: "t1", Type: "dir", Path: root + "/t1", MTime: testNow},
	}}, nil
}

func (f *fakeRepo) Stat(_ context.Context, id, p string) (restic.Node, error) { return f.node(id, p) }

func (f *fakeRepo) Dump(_ context.Context, id, p string, w io.Writer, archive string) error {
	f.dumps = append(f.dumps, id+" "+p+" "+archive)
	if _, err := f.node(id, p); err != nil {
		return err
	}
	if f.dumpOut != "" {
		if _, err := io.WriteString(w, f.dumpOut); err != nil {
			return err
		}
	}
	return f.dumpErr
}

func repoHarness(t *testing.T) (*harness, *fakeRepo) {
	t.Helper()
	repo := &fakeRepo{snaps: []restic.Snapshot{
		{ID: snapA, ShortID: snapA[:8], Time: testNow.Add(-time.Hour), Tags: []string{domain.SiteTag("id-1"), domain.JobTag("j-old")}, Paths: []string{root},
			Summary: &restic.SnapshotSummary{TotalBytesProcessed: 100, TotalFilesProcessed: 3, FilesNew: 3, DataAdded: 90}},
		{ID: snapB, ShortID: snapB[:8], Time: testNow, Tags: []string{domain.SiteTag("id-1"), domain.JobTag("j-new")}, Paths: []string{root}},
		{ID: "cccccccc", ShortID: "cccccccc", Time: testNow, Tags: []string{domain.SiteTag("other")}, Paths: []string{"/x"}},
	}}
	h := newHarness(t, func(d *Deps) { d.Repo = repo })
	h.createSite(`{"name":"a","host":"h","user":"u"}`)
	return h, repo
}

func TestListSnapshots(t *testing.T) {
	h, repo := repoHarness(t)
	rec := h.do("GET", "/api/v1/sites/id-1/snapshots", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("list = %d %s", rec.Code, rec.Body)
	}
	got := decode[SnapshotList](t, rec)
	if len(got.Snapshots) != 2 || got.Snapshots[0].ID != snapB || got.Snapshots[1].ID != snapA {
		t.Fatalf("snapshots = %+v, want B then A (newest first)", got.Snapshots)
	}
	a := got.Snapshots[1]
	if a.JobID != "j-old" || a.Size != 100 || a.Files != 3 || a.DataAdded != 90 || a.Paths[0] != root {
		t.Errorf("snapshot A = %+v", a)
	}
	if !reflect.DeepEqual(repo.tags, [][]string{{domain.SiteTag("id-1")}}) {
		t.Errorf("restic called with tags %v, want one call with the site tag", repo.tags)
	}
	wantError(t, h.do("GET", "/api/v1/sites/nope/snapshots", ""), 404, CodeNotFound, `site "nope" not found`)

	repo.err = restic.ErrNoRepository
	rec = h.do("GET", "/api/v1/sites/id-1/snapshots", "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"snapshots":[]`) {
		t.Errorf("no repository yet = %d %s, want an empty list", rec.Code, rec.Body)
	}
	repo.err = &restic.Error{Op: "snapshots", Code: 12}
	wantError(t, h.do("GET", "/api/v1/sites/id-1/snapshots", ""), 503, CodeUnavailable, "could not be read")

	none := newHarness(t)
	none.createSite(`{"name":"a","host":"h","user":"u"}`)
	wantError(t, none.do("GET", "/api/v1/sites/id-1/snapshots", ""), 503, CodeUnavailable, "no restic repository")
}

func TestSnapshotTree(t *testing.T) {
	h, _ := repoHarness(t)
	rec := h.do("GET", "/api/v1/snapshots/"+snapA+"/tree?path="+root, "")
	if rec.Code != http.StatusOK {
		t.Fatalf("tree = %d %s", rec.Code, rec.Body)
	}
	tr := decode[Tree](t, rec)
	if tr.Path != root || len(tr.Entries) != 2 || tr.Entries[0].Name != "f.txt" || tr.Entries[0].Size != 5 || tr.Entries[1].Type != "dir" {
		t.Errorf("tree = %+v", tr)
	}
	for _, tc := range []struct {
		name, url string
		status    int
		code, msg string
	}{
		{"bad id", "/api/v1/snapshots/XYZ/tree", 400, CodeInvalidArgument, "id: must be a snapshot id"},
		{"short id", "/api/v1/snapshots/abc/tree", 400, CodeInvalidArgument, "id: must be a snapshot id"},
		{"relative path", "/api/v1/snapshots/" + snapA + "/tree?path=rel", 400, CodeInvalidArgument, "path: must be an absolute path"},
		{"newline in path", "/api/v1/snapshots/" + snapA + "/tree?path=/a%0Ab", 400, CodeInvalidArgument, "path: must be an absolute path"},
		{"two paths", "/api/v1/snapshots/" + snapA + "/tree?path=/a&path=/b", 400, CodeInvalidArgument, "path: give it at most once"},
		{"unknown snapshot", "/api/v1/snapshots/dddddddd/tree", 404, CodeNotFound, `snapshot "dddddddd" not found`},
		{"unknown path", "/api/v1/snapshots/" + snapA + "/tree?path=/nope", 404, CodeNotFound, `has no file or folder "/nope"`},
		{"a file", "/api/v1/snapshots/" + snapA + "/tree?path=" + root + "/f.txt", 400, CodeInvalidArgument, "is not a folder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, h.do("GET", tc.url, ""), tc.status, tc.code, tc.msg)
		})
	}
}

func TestDownload(t *testing.T) {
	t.Run("a file as is", func(t *testing.T) {
		h, repo := repoHarness(t)
		repo.dumpOut = "hello"
		rec := h.do("GET", "/api/v1/snapshots/"+snapA+"/download?path="+root+"/f.txt", "")
		if rec.Code != 200 || rec.Body.String() != "hello" {
			t.Fatalf("download = %d %q", rec.Code, rec.Body)
		}
		hd := rec.Header()
		if hd.Get("Content-Type") != "application/octet-stream" || hd.Get("Content-Disposition") != `attachment; filename=f.txt` || hd.Get("Content-Length") != "5" {
			t.Errorf("headers = %v", hd)
		}
		if !reflect.DeepEqual(repo.dumps, []string{snapA + " " + root + "/f.txt "}) {
			t.Errorf("dumps = %q", repo.dumps)
		}
	})
	t.Run("a folder as tar", func(t *testing.T) {
		h, repo := repoHarness(t)
		repo.dumpOut = "tarbytes"
		rec := h.do("GET", "/api/v1/snapshots/"+snapA+"/download?path="+root, "")
		if rec.Code != 200 || rec.Body.String() != "tarbytes" {
			t.Fatalf("download = %d %q", rec.Code, rec.Body)
		}
		if ct, cd := rec.Header().Get("Content-Type"), rec.Header().Get("Content-Disposition"); ct != "application/x-tar" || cd != `attachment; filename=id-1.tar` {
			t.Errorf("Content-Type %q, Content-Disposition %q", ct, cd)
		}
		if repo.dumps[0] != snapA+" "+root+" tar" {
			t.Errorf("dumps = %q", repo.dumps)
		}
	})
	t.Run("errors before the first byte are the envelope", func(t *testing.T) {
		h, repo := repoHarness(t)
		wantError(t, h.do("GET", "/api/v1/snapshots/dddddddd/download?path=/x", ""), 404, CodeNotFound, "not found")
		wantError(t, h.do("GET", "/api/v1/snapshots/"+snapA+"/download?path=/nope", ""), 404, CodeNotFound, "has no file or folder")
		wantError(t, h.do("GET", "/api/v1/snapshots/"+snapA+"/download?path="+root+"/link", ""), 400, CodeInvalidArgument, "is a symlink")
		repo.dumpErr = errors.New("restic dump: exit 1: boom")
		rec := h.do("GET", "/api/v1/snapshots/"+snapA+"/download?path="+root+"/f.txt", "")
		wantError(t, rec, 503, CodeUnavailable, "could not be read")
		if rec.Header().Get("Content-Disposition") != "" || rec.Header().Get("Content-Length") == "5" {
			t.Errorf("download headers left on an error: %v", rec.Header())
		}
	})
}

func TestCreateRestore(t *testing.T) {
	t.Run("queued with its options", func(t *testing.T) {
		h, _ := repoHarness(t)
		h.calls = nil
		body := `{"snapshot_id":"aaaaaaaa","paths":["` + root + `/t1/","` + root + `/f.txt"],"destination":{"local_path":"/srv/r/"},"dry_run":true}`
		rec := h.do("POST", "/api/v1/sites/id-1/restores", body)
		if rec.Code != http.StatusAccepted || strings.TrimSpace(rec.Body.String()) != `{"job_id":"id-2","status":"queued"}` {
			t.Fatalf("restore = %d %s", rec.Code, rec.Body)
		}
		want := domain.Job{ID: "id-2", SiteUUID: "id-1", Type: domain.JobRestore, Status: domain.StatusQueued, CreatedAt: testNow,
			Restore: &domain.RestoreRequest{SnapshotID: snapA, Paths: []string{root + "/t1", root + "/f.txt"},
				Destination: domain.RestoreDestination{LocalPath: "/srv/r"}, DryRun: true}, Trigger: domain.TriggerManual}
		if got := h.store.jobs["id-2"]; !reflect.DeepEqual(got, want) {
			t.Errorf("job = %+v %+v\nwant %+v %+v", got, got.Restore, want, want.Restore)
		}
		if len(h.disp.published) != 1 || h.disp.published[0].Type != "restore" {
			t.Errorf("published %+v", h.disp.published)
		}
	})
	t.Run("to the site", func(t *testing.T) {
		h, _ := repoHarness(t)
		rec := h.do("POST", "/api/v1/sites/id-1/restores", `{"snapshot_id":"`+snapB+`","paths":["`+root+`"],"destination":{"to_site":true,"path":"/srv/x"},"overwrite":true}`)
		if rec.Code != http.StatusAccepted {
			t.Fatalf("restore = %d %s", rec.Code, rec.Body)
		}
		r := h.store.jobs["id-2"].Restore
		if r == nil || !r.Destination.ToSite || r.Destination.Path != "/srv/x" || !r.Overwrite || r.SnapshotID != snapB {
			t.Errorf("restore = %+v", r)
		}
	})
	p := `"paths":["` + root + `/f.txt"]`
	local := `"destination":{"local_path":"/srv/r"}`
	bad := []struct {
		name, site, body string
		status           int
		code, msg        string
	}{
		{"no snapshot", "id-1", `{` + p + `,` + local + `}`, 400, CodeInvalidArgument, "snapshot_id: required"},
		{"snapshot not hex", "id-1", `{"snapshot_id":"latest",` + p + `,` + local + `}`, 400, CodeInvalidArgument, "snapshot_id: must be a snapshot id"},
		{"no paths", "id-1", `{"snapshot_id":"aaaaaaaa",` + local + `}`, 400, CodeInvalidArgument, "paths: required"},
		{"relative path", "id-1", `{"snapshot_id":"aaaaaaaa","paths":["x"],` + local + `}`, 400, CodeInvalidArgument, "paths[0]: must be an absolute path"},
		{"newline in path", "id-1", `{"snapshot_id":"aaaaaaaa","paths":["/a\nb"],` + local + `}`, 400, CodeInvalidArgument, "paths[0]: must be an absolute path"},
		{"NUL in path", "id-1", `{"snapshot_id":"aaaaaaaa","paths":["/a\u0000b"],` + local + `}`, 400, CodeInvalidArgument, "paths[0]: must be an absolute path"},
		{"root path", "id-1", `{"snapshot_id":"aaaaaaaa","paths":["/"],` + local + `}`, 400, CodeInvalidArgument, "paths[0]: must name a file or folder"},
		{"same base name", "id-1", `{"snapshot_id":"aaaaaaaa","paths":["/a/x","/b/x"],` + local + `}`, 400, CodeInvalidArgument, "paths[1]: has the same name"},
		{"no destination", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `}`, 400, CodeInvalidArgument, "destination: required"},
		{"empty destination", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{}}`, 400, CodeInvalidArgument, `destination: give {"local_path"`},
		{"both kinds", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{"local_path":"/a","to_site":true,"path":"/b"}}`, 400, CodeInvalidArgument, "destination: give either local_path, or to_site with path, not both"},
		{"path without to_site", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{"path":"/b"}}`, 400, CodeInvalidArgument, "destination.path: only with to_site"},
		{"to_site without path", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{"to_site":true}}`, 400, CodeInvalidArgument, "destination.path: required"},
		{"relative remote path", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{"to_site":true,"path":"srv"}}`, 400, CodeInvalidArgument, "destination.path: must be an absolute path"},
		{"newline in remote path", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{"to_site":true,"path":"/a\rb"}}`, 400, CodeInvalidArgument, "destination.path: must be an absolute path"},
		{"relative local path", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{"local_path":"srv"}}`, 400, CodeInvalidArgument, "destination.local_path: must be an absolute path"},
		{"local root", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,"destination":{"local_path":"/"}}`, 400, CodeInvalidArgument, "destination.local_path: must not be the root"},
		{"unknown field", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,` + local + `,"delete":true}`, 400, CodeInvalidArgument, `unknown field "delete"`},
		{"overwrite not a bool", "id-1", `{"snapshot_id":"aaaaaaaa",` + p + `,` + local + `,"overwrite":"yes"}`, 400, CodeInvalidArgument, "overwrite: must be true or false"},
		{"unknown site", "nope", `{"snapshot_id":"aaaaaaaa",` + p + `,` + local + `}`, 404, CodeNotFound, `site "nope" not found`},
		{"another site's snapshot", "id-1", `{"snapshot_id":"cccccccc",` + p + `,` + local + `}`, 404, CodeNotFound, `snapshot_id: site id-1 has no snapshot "cccccccc"`},
		{"path outside the snapshot", "id-1", `{"snapshot_id":"aaaaaaaa","paths":["/etc/passwd"],` + local + `}`, 400, CodeInvalidArgument, `paths[0]: "/etc/passwd" is not inside the snapshot`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := repoHarness(t)
			h.calls = nil
			wantError(t, h.do("POST", "/api/v1/sites/"+tc.site+"/restores", tc.body), tc.status, tc.code, tc.msg)
			if len(h.calls) != 0 {
				t.Errorf("a refused restore wrote: %v", h.calls)
			}
		})
	}
}

// With a RestoreGuard (satoru up), a local_path that leads into Satoru's
// own files through a symlink is refused at once, naming the area.
func TestCreateRestoreGuardFollowsSymlinks(t *testing.T) {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, repoDir := filepath.Join(dir, "data"), filepath.Join(dir, "repo")
	for _, d := range []string{data, repoDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(repoDir, filepath.Join(dir, "to-repo")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(data, filepath.Join(dir, "to-data")); err != nil {
		t.Fatal(err)
	}
	guard := &restore.Guard{Areas: []restore.Area{{Key: "data_dir", Path: data}, {Key: "restic_repo_path", Path: repoDir}}}
	p := `"paths":["` + root + `/f.txt"]`
	for _, tc := range []struct{ name, dest, want string }{
		{"symlink to the repository", filepath.Join(dir, "to-repo"), "restic_repo_path"},
		{"new folder under a symlink to data_dir", filepath.Join(dir, "to-data", "new", "deeper"), "data_dir"},
		{"data_dir itself", data, "data_dir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(d *Deps) {
				d.Repo = &fakeRepo{snaps: []restic.Snapshot{{ID: snapA, ShortID: snapA[:8], Time: testNow, Tags: []string{domain.SiteTag("id-1")}, Paths: []string{root}}}}
				d.RestoreGuard = guard
			})
			h.createSite(`{"name":"a","host":"h","user":"u"}`)
			h.calls = nil
			rec := h.do("POST", "/api/v1/sites/id-1/restores", `{"snapshot_id":"aaaaaaaa",`+p+`,"destination":{"local_path":"`+tc.dest+`"}}`)
			wantError(t, rec, 400, CodeInvalidArgument, "destination.local_path: "+tc.dest)
			if !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("message %s does not name %s", rec.Body, tc.want)
			}
			if len(h.calls) != 0 {
				t.Errorf("a refused restore wrote: %v", h.calls)
			}
		})
	}
	h := newHarness(t, func(d *Deps) {
		d.Repo = &fakeRepo{snaps: []restic.Snapshot{{ID: snapA, ShortID: snapA[:8], Time: testNow, Tags: []string{domain.SiteTag("id-1")}, Paths: []string{root}}}}
		d.RestoreGuard = guard
	})
	h.createSite(`{"name":"a","host":"h","user":"u"}`)
	if rec := h.do("POST", "/api/v1/sites/id-1/restores", `{"snapshot_id":"aaaaaaaa",`+p+`,"destination":{"local_path":"`+filepath.Join(dir, "elsewhere")+`"}}`); rec.Code != http.StatusAccepted {
		t.Errorf("a folder outside: %d %s", rec.Code, rec.Body)
	}
}
