package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/testkit"
)

// edgeTree builds the awkward tree the backup must carry unchanged.
func edgeTree(t *testing.T, root string) {
	t.Helper()
	files := map[string]string{
		"a.txt":                        "alpha\n",
		"nested/deeper/deepest/x.conf": "x=1\n",
		"with space/file name.txt":     "spaces\n",
		"café ☕/ünïcödé.txt":           "unicode\n",
		`quo'te/dou"ble.txt`:           "quotes\n",
		"small/changeme.txt":           "version 1\n",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		mkdir(t, filepath.Dir(p))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdir(t, filepath.Join(root, "empty folder"))
	if err := os.Symlink("a.txt", filepath.Join(root, "link-to-a")); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 20<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
}

// sameTree fails unless got holds exactly want's files, symlinks and
// folders with the same content.
func sameTree(t *testing.T, want, got string) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(want, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(want, p)
		q := filepath.Join(got, rel)
		seen++
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			a, _ := os.Readlink(p)
			b, err := os.Readlink(q)
			if err != nil || a != b {
				t.Errorf("symlink %s: got %q (%v), want %q", rel, b, err, a)
			}
		case d.IsDir():
			if fi, err := os.Stat(q); err != nil || !fi.IsDir() {
				t.Errorf("folder %s missing in restore: %v", rel, err)
			}
		default:
			a, _ := os.ReadFile(p)
			b, err := os.ReadFile(q)
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("file %s differs in restore (%v)", rel, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 10 {
		t.Fatalf("walked only %d entries of %s", seen, want)
	}
}

func rows(t *testing.T, path string) []string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	r, err := db.Query("SELECT id, v FROM t ORDER BY id")
	if err != nil {
		t.Fatalf("query %s: %v", path, err)
	}
	defer r.Close()
	var out []string
	for r.Next() {
		var id int
		var v string
		if err := r.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprint(id, v))
	}
	return out
}

func integrity(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		t.Fatalf("integrity_check %s: %v", path, err)
	}
	return res
}

// backupNode starts `satoru up` for backup tests.
func backupNode(t *testing.T, extra ...string) (*Node, *client) {
	t.Helper()
	n, _ := startNode(t, loadConfig(t, testEnv(t.TempDir(), extra...)), All)
	return n, newClient(t, n)
}

func restoreSnapshot(t *testing.T, n *Node, snapshotID string) string {
	t.Helper()
	repo, err := ResticRepo(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := repo.Restore(context.Background(), snapshotID, dst); err != nil {
		t.Fatalf("restic restore %s: %v", snapshotID, err)
	}
	return dst
}

func summaryInt(j domain.Job, key string) int64 {
	switch v := j.Summary[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	}
	return -1
}

func TestBackupThroughAPI(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	src := filepath.Join(edge.Dir, "srv")
	edgeTree(t, src)
	db := filepath.Join(edge.Dir, "app.db")
	makeSQLite(t, db)
	tmp := filepath.Join(edge.Dir, "remote-tmp")
	mkdir(t, tmp)
	site := c.registerSite(edge, siteOpts{name: "edge-backup", targets: []map[string]any{
		{"mode": "directory", "path": src},
		{"mode": "sqlite_dump", "path": db},
	}})
	_ = tmp
	stagingDir := filepath.Join(n.Config.StagingRoot, site)
	dirHash := domain.TargetHash(domain.ModeDirectory, src)
	dbHash := domain.TargetHash(domain.ModeSQLiteDump, db)

	id := c.startJob(site, "backup")
	j := c.waitJob(id, 120*time.Second)
	if j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
	}
	snap, _ := j.Summary["snapshot_id"].(string)
	if snap == "" || summaryInt(j, "files_new") < 8 {
		t.Fatalf("summary lacks the snapshot: %v", j.Summary)
	}
	evs := c.events(id)
	for _, step := range []string{"ssh_connect", "headroom", "pull", "snapshot"} {
		if !hasEvent(evs, step, domain.LevelInfo, "") {
			t.Errorf("no %s event:\n%s", step, dumpEvents(evs))
		}
	}
	if !hasEvent(evs, "pull", domain.LevelInfo, dirHash) || !hasEvent(evs, "pull", domain.LevelInfo, dbHash) {
		t.Errorf("want a pull event per target:\n%s", dumpEvents(evs))
	}

	t.Run("restore is byte-identical and the database matches", func(t *testing.T) {
		dst := restoreSnapshot(t, n, snap)
		sameTree(t, src, filepath.Join(dst, stagingDir, dirHash))
		restoredDB := filepath.Join(dst, stagingDir, dbHash, "app.db")
		if got, want := rows(t, restoredDB), rows(t, db); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("restored rows %v, want %v", got, want)
		}
		if res := integrity(t, restoredDB); res != "ok" {
			t.Errorf("restored database integrity: %s", res)
		}
	})

	t.Run("site and target status", func(t *testing.T) {
		var view struct {
			Status  domain.SiteStatus `json:"status"`
			Targets []domain.Target   `json:"targets"`
		}
		c := c.with(t)
		c.do("GET", "/api/v1/sites/"+site, nil, &view)
		if view.Status.Health.Status != domain.HealthSuccess || view.Status.LastSuccessAt == nil || view.Status.LastJobID != id {
			t.Errorf("site status: %+v", view.Status)
		}
		for _, tg := range view.Targets {
			if tg.LastScan == nil || tg.LastScan.Status != domain.HealthSuccess || tg.LastScan.Files == 0 {
				t.Errorf("target %s last_scan: %+v", tg.Path, tg.LastScan)
			}
		}
	})

	t.Run("staging and repository are private", func(t *testing.T) {
		for _, root := range []string{stagingDir, n.Config.ResticRepoPath} {
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.Type()&fs.ModeSymlink != 0 {
					return err
				}
				fi, _ := d.Info()
				perm := fi.Mode().Perm()
				switch {
				case d.IsDir() && perm != 0o700:
					t.Errorf("folder %s: mode %v, want 0700", p, perm)
				// restic makes its pack files read-only (0400): stricter is fine.
				case !d.IsDir() && (perm&0o077 != 0 || perm&0o400 == 0):
					t.Errorf("file %s: mode %v, want 0600 or stricter", p, perm)
				}
				return nil
			})
		}
	})

	t.Run("no remote temp files are left", func(t *testing.T) {
		left, _ := filepath.Glob(filepath.Join("/tmp", ".satoru-dump.*"))
		if len(left) > 0 {
			t.Errorf("remote temp files left: %v", left)
		}
	})

	t.Run("second backup moves only the change", func(t *testing.T) {
		c := c.with(t)
		if err := os.WriteFile(filepath.Join(src, "small/changeme.txt"), []byte("version 2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		id2 := c.startJob(site, "backup")
		j2 := c.waitJob(id2, 120*time.Second)
		if j2.Status != domain.StatusSuccess {
			t.Fatalf("second backup: %s %q", j2.Status, j2.Error)
		}
		var dirRun domain.TargetRun
		for _, r := range j2.Targets {
			if r.TargetHash == dirHash {
				dirRun = r
			}
		}
		if dirRun.Transferred <= 0 || dirRun.Transferred > 256<<10 {
			t.Errorf("rsync transferred %d bytes for a one-line change, want a little", dirRun.Transferred)
		}
		if added := summaryInt(j2, "data_added"); added < 0 || added > 1<<20 {
			t.Errorf("restic added %d bytes for a one-line change", added)
		}
		snap2, _ := j2.Summary["snapshot_id"].(string)
		dst := restoreSnapshot(t, n, snap2)
		got, _ := os.ReadFile(filepath.Join(dst, stagingDir, dirHash, "small/changeme.txt"))
		if string(got) != "version 2\n" {
			t.Errorf("new snapshot has %q, want the change", got)
		}
	})
}

func TestBackupWithAMissingTargetWarns(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	good := filepath.Join(edge.Dir, "good")
	mkdir(t, good)
	if err := os.WriteFile(filepath.Join(good, "keep.txt"), []byte("kept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(edge.Dir, "gone")
	site := c.registerSite(edge, siteOpts{name: "edge-partial", targets: []map[string]any{
		{"mode": "directory", "path": good},
		{"mode": "directory", "path": missing},
	}})
	id := c.startJob(site, "backup")
	j := c.waitJob(id, 120*time.Second)
	evs := c.events(id)
	if j.Status != domain.StatusWarning {
		t.Fatalf("backup with one missing target: %s %q, want warning\n%s", j.Status, j.Error, dumpEvents(evs))
	}
	missingHash := domain.TargetHash(domain.ModeDirectory, missing)
	if !hasEvent(evs, "pull", domain.LevelError, missing) || !hasEvent(evs, "snapshot", domain.LevelWarn, missingHash) {
		t.Errorf("events should name the missing target %s (%s):\n%s", missing, missingHash, dumpEvents(evs))
	}
	snap, _ := j.Summary["snapshot_id"].(string)
	dst := restoreSnapshot(t, n, snap)
	staging := filepath.Join(dst, n.Config.StagingRoot, site)
	if b, err := os.ReadFile(filepath.Join(staging, domain.TargetHash(domain.ModeDirectory, good), "keep.txt")); err != nil || string(b) != "kept\n" {
		t.Errorf("the good target is not in the snapshot: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(staging, missingHash)); err == nil {
		t.Errorf("the failed target appears in the snapshot")
	}
	var view struct {
		Status domain.SiteStatus `json:"status"`
	}
	c.do("GET", "/api/v1/sites/"+site, nil, &view)
	if view.Status.Health.Status != domain.HealthWarning {
		t.Errorf("site health %q, want warning", view.Status.Health.Status)
	}
}

func TestBackupFailsBelowHeadroom(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t, "SATORU_STAGING_MIN_FREE_BYTES=9000000000000000") // 9 PB
	dir := filepath.Join(edge.Dir, "d")
	mkdir(t, dir)
	site := c.registerSite(edge, siteOpts{name: "edge-full", targets: []map[string]any{{"mode": "directory", "path": dir}}})
	id := c.startJob(site, "backup")
	j := c.waitJob(id, 60*time.Second)
	if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "headroom") || !strings.Contains(j.Error, n.Config.StagingRoot) {
		t.Fatalf("got %s %q, want failed with a headroom message naming %s", j.Status, j.Error, n.Config.StagingRoot)
	}
	if entries, _ := os.ReadDir(filepath.Join(n.Config.StagingRoot, site)); len(entries) > 0 {
		t.Errorf("nothing should be pulled below the headroom, found %v", entries)
	}
}

func TestBackupOfALiveDatabase(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	db := filepath.Join(edge.Dir, "live.db")
	makeSQLite(t, db)
	site := c.registerSite(edge, siteOpts{name: "edge-live", targets: []map[string]any{{"mode": "sqlite_dump", "path": db}}})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var inserted atomic.Int64
	wg.Add(1)
	go func() { // a writer inserting rows in a loop, as a live site would
		defer wg.Done()
		w, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Error(err)
			return
		}
		defer w.Close()
		for ctx.Err() == nil {
			if _, err := w.Exec("INSERT INTO t(v) VALUES (?)", strings.Repeat("x", 200)); err == nil {
				inserted.Add(1)
			}
		}
	}()
	var snaps []string
	for i := 0; i < 2; i++ {
		id := c.startJob(site, "backup")
		j := c.waitJob(id, 120*time.Second)
		if j.Status != domain.StatusSuccess {
			cancel()
			wg.Wait()
			t.Fatalf("backup %d of a live database: %s %q\n%s", i, j.Status, j.Error, dumpEvents(c.events(id)))
		}
		snaps = append(snaps, j.Summary["snapshot_id"].(string))
	}
	cancel()
	wg.Wait()
	if inserted.Load() < 10 {
		t.Fatalf("the writer inserted only %d rows; the test did not exercise a live database", inserted.Load())
	}
	for _, s := range snaps {
		dst := restoreSnapshot(t, n, s)
		p := filepath.Join(dst, n.Config.StagingRoot, site, domain.TargetHash(domain.ModeSQLiteDump, db), "live.db")
		if res := integrity(t, p); res != "ok" {
			t.Errorf("snapshot %s: integrity_check %q", s, res)
		}
	}
	if out, err := exec.Command("sh", "-c", "ls -a /tmp | grep -c satoru-dump || true").Output(); err == nil && strings.TrimSpace(string(out)) != "0" {
		t.Errorf("remote dump temp files left in /tmp: %s", out)
	}
	_ = restic.ErrLocked
}

func TestBackupTargetTimeoutKillsThePull(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	_, c := backupNode(t, "SATORU_JOB_TIMEOUT_TARGET_SECONDS=2")
	dir := filepath.Join(edge.Dir, "slow")
	mkdir(t, dir)
	big := make([]byte, 8<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	site := c.registerSite(edge, siteOpts{name: "edge-slow", targets: []map[string]any{{"mode": "directory", "path": dir}}})
	// 64 KiB/s makes the 8 MiB pull take two minutes: far past the 2 s limit.
	if code := c.do("PATCH", "/api/v1/sites/"+site, map[string]any{"bandwidth_limit_kbps": 64}, nil); code != http.StatusOK {
		t.Fatalf("PATCH bandwidth: %d", code)
	}
	start := time.Now()
	id := c.startJob(site, "backup")
	j := c.waitJob(id, 60*time.Second)
	if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "every target failed") {
		t.Fatalf("got %s %q, want failed", j.Status, j.Error)
	}
	if !hasEvent(c.events(id), "pull", domain.LevelError, "timed out") {
		t.Errorf("no event says the pull timed out:\n%s", dumpEvents(c.events(id)))
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the timed-out pull took %s; it was not killed at its limit", took)
	}
	if out, _ := exec.Command("pgrep", "-f", "rsync.*"+dir).Output(); len(out) > 0 {
		t.Errorf("rsync still running after the timeout: pids %s", out)
	}
}
