package node

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/testkit"
)

// TestRestoreGuardWithRealSymlinks restores through real symlinks into
// Satoru's own folders, through the API and straight through the store
// and queue (as a local user who reached them would), and checks that
// nothing lands there; and that a symlink written by one restore does not
// redirect the next.
func TestRestoreGuardWithRealSymlinks(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	repoDir, err := filepath.Abs(n.Config.ResticRepoPath)
	if err != nil {
		t.Fatal(err)
	}
	dataDir, _ := filepath.Abs(n.Config.DataDir)

	// Snapshot 1 holds lnk -> the repository; snapshot 2 holds lnk as a
	// folder with a file named like the repository's config.
	src := filepath.Join(edge.Dir, "srv")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(repoDir, filepath.Join(src, "lnk")); err != nil {
		t.Fatal(err)
	}
	site := c.registerSite(edge, siteOpts{name: "edge-guard", targets: []map[string]any{{"mode": "directory", "path": src}}})
	dirPath := filepath.Join(n.Config.StagingRoot, site) + "/" + domain.TargetHash(domain.ModeDirectory, src)
	dirHash := filepath.Base(dirPath)
	backup := func() string {
		t.Helper()
		id := c.startJob(site, "backup")
		if j := c.waitJob(id, 120*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
		}
		var out struct {
			Snapshots []snapshotView `json:"snapshots"`
		}
		c.do("GET", "/api/v1/sites/"+site+"/snapshots", nil, &out)
		for _, s := range out.Snapshots {
			if s.JobID == id {
				return s.ID
			}
		}
		t.Fatalf("no snapshot of backup %s", id)
		return ""
	}
	snap1 := backup()
	if err := os.Remove(filepath.Join(src, "lnk")); err != nil {
		t.Fatal(err)
	}
	mkdir(t, filepath.Join(src, "lnk"))
	if err := os.WriteFile(filepath.Join(src, "lnk", "config"), []byte("not a restic config\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap2 := backup()

	repoConfig, err := os.ReadFile(filepath.Join(repoDir, "config"))
	if err != nil {
		t.Fatal(err)
	}
	repoUntouched := func(t *testing.T) {
		t.Helper()
		if got, err := os.ReadFile(filepath.Join(repoDir, "config")); err != nil || !bytes.Equal(got, repoConfig) {
			t.Fatalf("the repository's config changed (%v)", err)
		}
		if entries, _ := os.ReadDir(repoDir); len(entries) == 0 {
			t.Fatal("repository emptied")
		}
		for _, stray := range []string{"a.txt", dirHash, "lnk"} {
			if _, err := os.Lstat(filepath.Join(repoDir, stray)); err == nil {
				t.Fatalf("a restore wrote %s into the repository", stray)
			}
		}
	}

	outside := t.TempDir()
	toRepo, toData := filepath.Join(outside, "to-repo"), filepath.Join(outside, "to-data")
	if err := os.Symlink(repoDir, toRepo); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dataDir, toData); err != nil {
		t.Fatal(err)
	}

	t.Run("the API refuses a local_path through a symlink into Satoru's folders", func(t *testing.T) {
		c := c.with(t)
		for _, tc := range []struct{ dest, key string }{
			{toRepo, "restic_repo_path"},
			{filepath.Join(toRepo, "data"), "restic_repo_path"},
			{filepath.Join(toData, "store", "new"), "data_dir"},
			{filepath.Join(toData, "new", "deeper"), "data_dir"},
			{filepath.Join(dataDir, "nats"), "data_dir"},
		} {
			_, code, e := c.restore(site, map[string]any{"snapshot_id": snap1, "paths": []string{dirPath},
				"destination": map[string]any{"local_path": tc.dest}, "overwrite": true})
			if code != http.StatusBadRequest || !strings.HasPrefix(e.Error.Message, "destination.local_path: "+tc.dest) || !strings.Contains(e.Error.Message, tc.key) {
				t.Errorf("restore into %s: %d %q, want 400 naming %s", tc.dest, code, e.Error.Message, tc.key)
			}
		}
		repoUntouched(t)
	})

	t.Run("the puller re-checks a job that did not come through the API", func(t *testing.T) {
		c := c.with(t)
		for _, tc := range []struct {
			name string
			req  domain.RestoreRequest
			want string
		}{
			{"through a symlink to the repository", domain.RestoreRequest{SnapshotID: snap2, Paths: []string{dirPath},
				Destination: domain.RestoreDestination{LocalPath: toRepo}, Overwrite: true}, "restic_repo_path"},
			{"into data_dir", domain.RestoreRequest{SnapshotID: snap2, Paths: []string{dirPath},
				Destination: domain.RestoreDestination{LocalPath: filepath.Join(dataDir, "store")}, Overwrite: true}, "data_dir"},
			{"a path with ..", domain.RestoreRequest{SnapshotID: snap2, Paths: []string{dirPath},
				Destination: domain.RestoreDestination{LocalPath: outside + "/../" + filepath.Base(outside) + "/x"}}, "clean path"},
			{"a short snapshot id", domain.RestoreRequest{SnapshotID: snap2[:8], Paths: []string{dirPath},
				Destination: domain.RestoreDestination{LocalPath: filepath.Join(outside, "y")}}, "full 64-digit"},
		} {
			id := uuid.NewString()
			job := domain.Job{ID: id, SiteUUID: site, Type: domain.JobRestore, Status: domain.StatusQueued, CreatedAt: time.Now().UTC(), Restore: &tc.req}
			if err := n.Store.InsertJob(context.Background(), job); err != nil {
				t.Fatal(err)
			}
			if err := n.Infra.Publish(context.Background(), events.JobRequest{V: events.JobRequestV1, JobID: id, SiteUUID: site, Type: string(domain.JobRestore)}); err != nil {
				t.Fatal(err)
			}
			j := c.waitJob(id, 60*time.Second)
			if j.Status != domain.StatusFailed || !strings.Contains(j.Error, tc.want) {
				t.Errorf("%s: %s %q, want failed naming %q", tc.name, j.Status, j.Error, tc.want)
			}
		}
		repoUntouched(t)
		if _, err := os.Lstat(filepath.Join(outside, "y")); err == nil {
			t.Error("the refused job created its destination")
		}
	})

	t.Run("an existing empty folder needs overwrite", func(t *testing.T) {
		c := c.with(t)
		empty := filepath.Join(outside, "empty")
		mkdir(t, empty)
		id, code, e := c.restore(site, map[string]any{"snapshot_id": snap2, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": empty}})
		if code != http.StatusAccepted {
			t.Fatalf("restore: %d %+v", code, e)
		}
		if j := c.waitJob(id, 60*time.Second); j.Status != domain.StatusFailed || !strings.Contains(j.Error, "already exists") || !strings.Contains(j.Error, `"overwrite": true`) {
			t.Fatalf("restore into an existing empty folder: %s %q, want refused", j.Status, j.Error)
		}
		if entries, _ := os.ReadDir(empty); len(entries) != 0 {
			t.Fatalf("the refused restore wrote %v", entries)
		}
		id, _, _ = c.restore(site, map[string]any{"snapshot_id": snap2, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": empty}, "overwrite": true})
		if j := c.waitJob(id, 60*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("with overwrite: %s %q", j.Status, j.Error)
		}
		if b, _ := os.ReadFile(filepath.Join(empty, dirHash, "a.txt")); string(b) != "alpha\n" {
			t.Errorf("restored a.txt = %q", b)
		}
	})

	t.Run("a symlink restored by one restore does not redirect the next", func(t *testing.T) {
		c := c.with(t)
		dest := filepath.Join(outside, "restored")
		id, code, e := c.restore(site, map[string]any{"snapshot_id": snap1, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": dest}})
		if code != http.StatusAccepted {
			t.Fatalf("restore: %d %+v", code, e)
		}
		if j := c.waitJob(id, 60*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("restore 1: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
		}
		lnk := filepath.Join(dest, dirHash, "lnk")
		if target, err := os.Readlink(lnk); err != nil || target != repoDir {
			t.Fatalf("restore 1 did not restore the symlink: %q %v", target, err)
		}
		if fi, err := os.Stat(dest); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("destination mode %v (%v), want 0700", fi.Mode().Perm(), err)
		}
		if left, _ := filepath.Glob(filepath.Join(outside, ".satoru-restore-*")); len(left) != 0 {
			t.Errorf("temporary folders left beside the destination: %v", left)
		}

		// Through the restored symlink: refused, it leads into the repository.
		_, code, e = c.restore(site, map[string]any{"snapshot_id": snap2, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": filepath.Join(lnk, "sub")}, "overwrite": true})
		if code != http.StatusBadRequest || !strings.Contains(e.Error.Message, "restic_repo_path") {
			t.Errorf("restore through the restored symlink: %d %q, want 400 naming restic_repo_path", code, e.Error.Message)
		}

		// Over it with overwrite: the symlink is replaced by the folder,
		// the repository's config is not written through it.
		id, _, _ = c.restore(site, map[string]any{"snapshot_id": snap2, "paths": []string{dirPath},
			"destination": map[string]any{"local_path": dest}, "overwrite": true})
		if j := c.waitJob(id, 60*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("restore 2: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
		}
		if fi, err := os.Lstat(lnk); err != nil || !fi.IsDir() {
			t.Fatalf("lnk after restore 2: %v %v, want a folder", fi, err)
		}
		if b, _ := os.ReadFile(filepath.Join(lnk, "config")); string(b) != "not a restic config\n" {
			t.Errorf("lnk/config = %q", b)
		}
		repoUntouched(t)
	})
}
