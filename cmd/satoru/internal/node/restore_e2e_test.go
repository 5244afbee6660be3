package node

import (
	"archive/tar"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// get fetches a path of the API raw, for downloads.
func (c *client) get(path string) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp, body
}

// restore starts a restore and returns its job id, or the error status
// and envelope.
func (c *client) restore(site string, body map[string]any) (string, int, apiError) {
	c.t.Helper()
	var out struct {
		JobID string `json:"job_id"`
	}
	var e apiError
	code := c.do("POST", "/api/v1/sites/"+site+"/restores", body, &out)
	if code != http.StatusAccepted {
		c.do("POST", "/api/v1/sites/"+site+"/restores", body, &e)
		return "", code, e
	}
	return out.JobID, code, e
}

type snapshotView struct {
	ID      string    `json:"id"`
	ShortID string    `json:"short_id"`
	Time    time.Time `json:"time"`
	Tags    []string  `json:"tags"`
	JobID   string    `json:"job_id"`
	Paths   []string  `json:"paths"`
	Size    int64     `json:"size"`
	Files   int64     `json:"files"`
}

type treeEntry struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
}

func TestRestoreThroughAPI(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	src := filepath.Join(edge.Dir, "srv")
	edgeTree(t, src)
	db := filepath.Join(edge.Dir, "app.db")
	makeSQLite(t, db)
	site := c.registerSite(edge, siteOpts{name: "edge-restore", targets: []map[string]any{
		{"mode": "directory", "path": src},
		{"mode": "sqlite_dump", "path": db},
	}})
	stagingDir := filepath.Join(n.Config.StagingRoot, site)
	dirHash := domain.TargetHash(domain.ModeDirectory, src)
	dbHash := domain.TargetHash(domain.ModeSQLiteDump, db)
	dirPath := stagingDir + "/" + dirHash
	dbPath := stagingDir + "/" + dbHash + "/app.db"

	backup := c.startJob(site, "backup")
	if j := c.waitJob(backup, 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(backup)))
	}

	var snap snapshotView
	t.Run("list snapshots", func(t *testing.T) {
		c := c.with(t)
		var out struct {
			Snapshots []snapshotView `json:"snapshots"`
		}
		if code := c.do("GET", "/api/v1/sites/"+site+"/snapshots", nil, &out); code != http.StatusOK {
			t.Fatalf("list snapshots: %d", code)
		}
		if len(out.Snapshots) != 1 {
			t.Fatalf("snapshots = %+v, want one", out.Snapshots)
		}
		snap = out.Snapshots[0]
		if len(snap.ID) != 64 || snap.JobID != backup || snap.Files < 8 || snap.Size < 20<<20 || len(snap.Paths) != 1 || snap.Paths[0] != stagingDir {
			t.Errorf("snapshot = %+v (want job %s, root %s)", snap, backup, stagingDir)
		}
		var e apiError
		if code := c.do("GET", "/api/v1/sites/nope/snapshots", nil, &e); code != http.StatusNotFound {
			t.Errorf("unknown site: %d %+v", code, e)
		}
	})
	if snap.ID == "" {
		t.Fatal("no snapshot to work with")
	}

	t.Run("browse the tree from the root path", func(t *testing.T) {
		c := c.with(t)
		var tree struct {
			Path    string      `json:"path"`
			Entries []treeEntry `json:"entries"`
		}
		if code := c.do("GET", "/api/v1/snapshots/"+snap.ID+"/tree?path="+url.QueryEscape(snap.Paths[0]), nil, &tree); code != http.StatusOK {
			t.Fatalf("tree of root: %d", code)
		}
		if len(tree.Entries) != 2 {
			t.Fatalf("root entries = %+v, want the two target folders", tree.Entries)
		}
		if code := c.do("GET", "/api/v1/snapshots/"+snap.ID+"/tree?path="+url.QueryEscape(dirPath), nil, &tree); code != http.StatusOK {
			t.Fatalf("tree of target: %d", code)
		}
		byName := map[string]treeEntry{}
		for _, e := range tree.Entries {
			byName[e.Name] = e
		}
		if byName["big.bin"].Size != 20<<20 || byName["big.bin"].Type != "file" || byName["nested"].Type != "dir" ||
			byName["link-to-a"].Type != "symlink" || byName["café ☕"].Type != "dir" {
			t.Errorf("target entries = %+v", tree.Entries)
		}
		if _, deep := byName["deeper"]; deep {
			t.Error("tree is not one level: nested/deeper listed")
		}
		var e apiError
		if code := c.do("GET", "/api/v1/snapshots/"+snap.ID+"/tree?path="+url.QueryEscape(dirPath+"/nope"), nil, &e); code != http.StatusNotFound {
			t.Errorf("missing folder: %d %+v", code, e)
		}
		if code := c.do("GET", "/api/v1/snapshots/0123456789abcdef/tree", nil, &e); code != http.StatusNotFound {
			t.Errorf("unknown snapshot: %d %+v", code, e)
		}
	})

	t.Run("download a file byte-identical", func(t *testing.T) {
		c := c.with(t)
		resp, body := c.get("/api/v1/snapshots/" + snap.ID + "/download?path=" + url.QueryEscape(dirPath+"/big.bin"))
		want, _ := os.ReadFile(filepath.Join(src, "big.bin"))
		if resp.StatusCode != 200 || !bytes.Equal(body, want) {
			t.Fatalf("download = %d, %d bytes (want %d identical)", resp.StatusCode, len(body), len(want))
		}
		if cd := resp.Header.Get("Content-Disposition"); !strings.Contains(cd, "big.bin") {
			t.Errorf("Content-Disposition = %q", cd)
		}
		resp, body = c.get("/api/v1/snapshots/" + snap.ID + "/download?path=" + url.QueryEscape(dirPath+"/nope.txt"))
		if resp.StatusCode != 404 || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("missing file = %d %s", resp.StatusCode, body)
		}
	})

	t.Run("download a folder as tar", func(t *testing.T) {
		c := c.with(t)
		resp, body := c.get("/api/v1/snapshots/" + snap.ID + "/download?path=" + url.QueryEscape(dirPath))
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-tar" {
			t.Fatalf("download = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		out := t.TempDir()
		tr := tar.NewReader(bytes.NewReader(body))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(out, h.Name)
			switch h.Typeflag {
			case tar.TypeDir:
				mkdir(t, p)
			case tar.TypeSymlink:
				mkdir(t, filepath.Dir(p))
				if err := os.Symlink(h.Linkname, p); err != nil {
					t.Fatal(err)
				}
			case tar.TypeReg:
				mkdir(t, filepath.Dir(p))
				b, _ := io.ReadAll(tr)
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
		sameTree(t, src, out)
	})

	local := filepath.Join(t.TempDir(), "restored")
	t.Run("restore to a local folder", func(t *testing.T) {
		c := c.with(t)
		id, code, e := c.restore(site, map[string]any{"snapshot_id": snap.ShortID, "paths": []string{dirPath, dbPath},
			"destination": map[string]any{"local_path": local}})
		if code != http.StatusAccepted {
			t.Fatalf("restore: %d %+v", code, e)
		}
		j := c.waitJob(id, 120*time.Second)
		if j.Status != domain.StatusSuccess || j.Type != domain.JobRestore || j.Restore == nil || j.Restore.SnapshotID != snap.ID {
			t.Fatalf("restore job: %s %q %+v\n%s", j.Status, j.Error, j.Restore, dumpEvents(c.events(id)))
		}
		sameTree(t, src, filepath.Join(local, dirHash))
		restoredDB := filepath.Join(local, "app.db")
		if res := integrity(t, restoredDB); res != "ok" {
			t.Errorf("restored database integrity: %s", res)
		}
		if got, want := rows(t, restoredDB), rows(t, db); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("restored rows %v, want %v", got, want)
		}
		for _, p := range []string{local, filepath.Join(local, dirHash, "nested")} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("%s: mode %v (%v), want 0700", p, fi.Mode().Perm(), err)
			}
		}
		if fi, err := os.Stat(filepath.Join(local, dirHash, "a.txt")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("a.txt: mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
		left, _ := os.ReadDir(filepath.Join(n.Config.StagingRoot, ".restore"))
		if len(left) != 0 {
			t.Errorf("restore temp folders left: %v", left)
		}
	})

	t.Run("a non-empty folder is refused without overwrite", func(t *testing.T) {
		c := c.with(t)
		before, _ := os.ReadFile(filepath.Join(local, dirHash, "a.txt"))
		if err := os.WriteFile(filepath.Join(local, dirHash, "a.txt"), []byte("changed locally\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		id, code, e := c.restore(site, map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": local}})
		if code != http.StatusAccepted {
			t.Fatalf("restore: %d %+v", code, e)
		}
		j := c.waitJob(id, 60*time.Second)
		if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "is not empty") || !strings.Contains(j.Error, `"overwrite": true`) {
			t.Fatalf("second restore: %s %q, want failed naming the non-empty folder and overwrite", j.Status, j.Error)
		}
		if got, _ := os.ReadFile(filepath.Join(local, dirHash, "a.txt")); string(got) != "changed locally\n" {
			t.Errorf("the refused restore wrote a.txt: %q", got)
		}

		// A dry run with overwrite lists the change and writes nothing.
		id, code, e = c.restore(site, map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": local}, "overwrite": true, "dry_run": true})
		if code != http.StatusAccepted {
			t.Fatalf("dry run: %d %+v", code, e)
		}
		j = c.waitJob(id, 60*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("dry run: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
		}
		if !dryRunLists(c.events(id), dirHash+"/a.txt") {
			t.Errorf("dry run does not list a.txt:\n%s", dumpEvents(c.events(id)))
		}
		if got, _ := os.ReadFile(filepath.Join(local, dirHash, "a.txt")); string(got) != "changed locally\n" {
			t.Errorf("the dry run wrote a.txt: %q", got)
		}

		// With overwrite the file comes back.
		id, _, _ = c.restore(site, map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": local}, "overwrite": true})
		if j := c.waitJob(id, 60*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("overwrite: %s %q", j.Status, j.Error)
		}
		if got, _ := os.ReadFile(filepath.Join(local, dirHash, "a.txt")); !bytes.Equal(got, before) {
			t.Errorf("overwrite restored %q, want %q", got, before)
		}
	})

	t.Run("restore back to the site over ssh", func(t *testing.T) {
		c := c.with(t)
		remoteDir := filepath.Join(edge.Dir, "restored here")
		dry, code, e := c.restore(site, map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath, dbPath},
			"destination": map[string]any{"to_site": true, "path": remoteDir}, "dry_run": true})
		if code != http.StatusAccepted {
			t.Fatalf("dry run: %d %+v", code, e)
		}
		if j := c.waitJob(dry, 120*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("dry run to site: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(dry)))
		}
		if !dryRunLists(c.events(dry), "app.db") || !dryRunLists(c.events(dry), dirHash+"/big.bin") {
			t.Errorf("dry run lists no changes:\n%s", dumpEvents(c.events(dry)))
		}
		if _, err := os.Stat(remoteDir); err == nil {
			t.Fatal("the dry run created the destination on the site")
		}

		id, code, e := c.restore(site, map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath, dbPath},
			"destination": map[string]any{"to_site": true, "path": remoteDir}})
		if code != http.StatusAccepted {
			t.Fatalf("restore: %d %+v", code, e)
		}
		j := c.waitJob(id, 120*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("restore to site: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
		}
		sameTree(t, src, filepath.Join(remoteDir, dirHash))
		if res := integrity(t, filepath.Join(remoteDir, "app.db")); res != "ok" {
			t.Errorf("database restored to the site: %s", res)
		}

		// Again into the now non-empty folder: refused.
		id, _, _ = c.restore(site, map[string]any{"snapshot_id": snap.ID, "paths": []string{dbPath},
			"destination": map[string]any{"to_site": true, "path": remoteDir}})
		if j := c.waitJob(id, 60*time.Second); j.Status != domain.StatusFailed || !strings.Contains(j.Error, "is not empty") {
			t.Errorf("second restore to site: %s %q", j.Status, j.Error)
		}
	})

	t.Run("bad requests name the field", func(t *testing.T) {
		c := c.with(t)
		for _, tc := range []struct {
			body  map[string]any
			code  int
			field string
		}{
			{map[string]any{"snapshot_id": "latest", "paths": []string{dirPath}, "destination": map[string]any{"local_path": "/x"}}, 400, "snapshot_id"},
			{map[string]any{"snapshot_id": snap.ID, "paths": []string{"rel"}, "destination": map[string]any{"local_path": "/x"}}, 400, "paths[0]"},
			{map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath}, "destination": map[string]any{"local_path": "/x", "to_site": true, "path": "/y"}}, 400, "destination"},
			{map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath}, "destination": map[string]any{"to_site": true, "path": "y"}}, 400, "destination.path"},
			{map[string]any{"snapshot_id": "0123456789abcdef", "paths": []string{dirPath}, "destination": map[string]any{"local_path": "/x"}}, 404, "snapshot_id"},
		} {
			_, code, e := c.restore(site, tc.body)
			if code != tc.code || !strings.HasPrefix(e.Error.Message, tc.field) {
				t.Errorf("%v: %d %q, want %d naming %s", tc.body, code, e.Error.Message, tc.code, tc.field)
			}
		}
		var e apiError
		if code := c.do("POST", "/api/v1/sites/"+site+"/jobs", map[string]string{"type": "restore"}, &e); code != 400 {
			t.Errorf("generic restore job: %d %+v, want 400", code, e)
		}
	})
}

// dryRunLists reports whether a restore_dry_run event lists an entry
// ending in name.
func dryRunLists(evs []domain.JobEvent, name string) bool {
	for _, e := range evs {
		if e.Step != "restore_dry_run" {
			continue
		}
		list, _ := e.Data["changes"].([]any)
		for _, l := range list {
			if s, _ := l.(string); strings.HasSuffix(s, name) {
				return true
			}
		}
	}
	return false
}
