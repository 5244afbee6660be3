package node

import (
	"crypto/rand"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/testkit"
)

// TestBackupRetriesAPullCutMidTransfer cuts the site's connection while
// the first attempt's rsync is receiving (the site's first pull): the
// failure is transient, so the job is retried after a backoff, the failed
// attempt's files are removed and reported (the folder is empty again),
// and the second attempt pulls and snapshots the whole folder. Cuts of
// later pulls, which keep the last good copy, are in
// services/puller/internal/pull (lastgood_test.go).
func TestBackupRetriesAPullCutMidTransfer(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	proxy := testkit.StartProxy(t, net.JoinHostPort(edge.Host, strconv.Itoa(edge.Port)))
	n, c := backupNode(t)
	src := filepath.Join(edge.Dir, "www")
	for i := range 16 {
		b := make([]byte, 512<<10)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(src, fmt.Sprintf("d%d", i%2), fmt.Sprintf("f%02d.bin", i))
		mkdir(t, filepath.Dir(p))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	site := c.registerSite(edge, siteOpts{name: "edge-cut", port: proxy.Port, targets: []map[string]any{{"mode": "directory", "path": src}}})
	// 8 MiB at 2 MiB/s: four seconds to cut into.
	if code := c.do("PATCH", "/api/v1/sites/"+site, map[string]any{"bandwidth_limit_kbps": 2048}, nil); code != http.StatusOK {
		t.Fatalf("PATCH bandwidth: %d", code)
	}
	hash := domain.TargetHash(domain.ModeDirectory, src)
	staging := filepath.Join(n.Config.StagingRoot, site, hash)

	id := c.startJob(site, "backup")
	// Cut once received files are in staging: mid-transfer. A first pull
	// writes straight into its empty folder (no partial folder).
	deadline := time.Now().Add(60 * time.Second)
	for !hasReceivedFile(staging) {
		if time.Now().After(deadline) {
			t.Fatalf("no partial file appeared in %s\n%s", staging, dumpEvents(c.events(id)))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cut := proxy.Cut(); cut == 0 {
		t.Fatal("no connection to cut")
	}

	j := c.waitJob(id, 120*time.Second)
	evs := c.events(id)
	if j.Status != domain.StatusSuccess || j.Attempts != 2 {
		t.Fatalf("got %s after %d attempts (%q), want success on the second\n%s", j.Status, j.Attempts, j.Error, dumpEvents(evs))
	}
	for _, want := range []struct{ step, level, contains string }{
		{"pull", domain.LevelError, "connection lost"},
		{"pull_cleanup", "", "staging is empty again, as before that first pull"},
		{"retry", "", "next attempt at"},
		{"snapshot", domain.LevelInfo, ""},
	} {
		if !hasEvent(evs, want.step, want.level, want.contains) {
			t.Errorf("no %s event saying %q:\n%s", want.step, want.contains, dumpEvents(evs))
		}
	}
	snap, _ := j.Summary["snapshot_id"].(string)
	dst := restoreSnapshot(t, n, snap)
	sameTree(t, src, filepath.Join(dst, staging))
	if hasPartialFile(staging) {
		t.Errorf("partial files left in %s", staging)
	}
	if _, err := os.Stat(filepath.Join(n.Config.StagingRoot, ".pull", site, hash)); !os.IsNotExist(err) {
		t.Errorf("the pull's work folder is still there (%v)", err)
	}
}

// hasReceivedFile reports whether dir holds any regular file.
func hasReceivedFile(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found
}

// hasPartialFile reports whether a file waits in a partial folder under
// dir.
func hasPartialFile(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.Contains(p, "/"+remote.RsyncPartialDir+"/") {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found
}

// TestBackupRemovesLeftoversOfAKilledPull plants what pulls leave when
// Satoru is SIGKILLed mid-transfer (no cleanup ran): a directory pull's
// work folder with its journal and an rsync temp file, a partial folder
// holding a received file, a folder the pull had created, and a SQLite
// pull's two temp files. The next backup removes them before preflight
// and the headroom check, says so in pull_cleanup events, and snapshots
// the site's data without them. A stray partial folder that no work
// folder accounts for stays in staging, and the snapshotter's exclude
// keeps it out of the snapshot.
func TestBackupRemovesLeftoversOfAKilledPull(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	src := filepath.Join(edge.Dir, "srv")
	edgeTree(t, src)
	db := filepath.Join(edge.Dir, "app.db")
	makeSQLite(t, db)
	site := c.registerSite(edge, siteOpts{name: "edge-killed", targets: []map[string]any{
		{"mode": "directory", "path": src},
		{"mode": "sqlite_dump", "path": db},
	}})
	if j := c.waitJob(c.startJob(site, "backup"), 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("first backup: %s %q", j.Status, j.Error)
	}
	dirHash := domain.TargetHash(domain.ModeDirectory, src)
	dbHash := domain.TargetHash(domain.ModeSQLiteDump, db)
	dirStaging := filepath.Join(n.Config.StagingRoot, site, dirHash)
	dbStaging := filepath.Join(n.Config.StagingRoot, site, dbHash)
	work := filepath.Join(n.Config.StagingRoot, ".pull", site, dirHash)
	plant := func(path string, size int) {
		t.Helper()
		mkdir(t, filepath.Dir(path))
		b := make([]byte, size)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	plant(filepath.Join(work, "tmp", ".big.bin.Xy12Ab"), 1<<20)
	plant(filepath.Join(dirStaging, "nested", remote.RsyncPartialDir, "x.conf"), 10)
	plant(filepath.Join(dirStaging, "fresh", "sub", remote.RsyncPartialDir, "new.txt"), 10)
	plant(filepath.Join(work, "created"), 0)
	if err := os.WriteFile(filepath.Join(work, "created"), []byte("d fresh/\nd fresh/sub/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plant(filepath.Join(dbStaging, ".app.db.gz.tmp"), 4096)
	plant(filepath.Join(dbStaging, "app.db.tmp"), 8192)
	plant(filepath.Join(dbStaging, remote.RsyncPartialDir, "stray"), 10)

	id := c.startJob(site, "backup")
	j := c.waitJob(id, 120*time.Second)
	evs := c.events(id)
	if j.Status != domain.StatusSuccess {
		t.Fatalf("backup after the kill: %s %q\n%s", j.Status, j.Error, dumpEvents(evs))
	}
	first := func(step, contains string) int {
		for _, e := range evs {
			if e.Step == step && strings.Contains(e.Message, contains) {
				return e.Seq
			}
		}
		t.Errorf("no %s event saying %q:\n%s", step, contains, dumpEvents(evs))
		return -1
	}
	cleanDir := first("pull_cleanup", "target "+dirHash+": an earlier pull of this target stopped without cleaning up")
	cleanDB := first("pull_cleanup", "target "+dbHash+": an earlier pull of this database stopped without cleaning up (Satoru was stopped or killed mid-pull): removed 2 temp files (12288 bytes)")
	// The first preflight event: the host key is checked whether or not
	// the remote checks are reused (preflight_reuse_seconds).
	preflight := first("host_key", "")
	headroom := first("headroom", "")
	if cleanDir < 0 || cleanDB < 0 || preflight < 0 || headroom < 0 || max(cleanDir, cleanDB) > min(preflight, headroom) {
		t.Errorf("leftovers removed at events %d and %d, want before preflight (%d) and the headroom check (%d)", cleanDir, cleanDB, preflight, headroom)
	}
	// fresh/sub/ went with fresh/: one folder counted.
	if !hasEvent(evs, "pull_cleanup", "", "2 "+remote.RsyncPartialDir+" folders holding 2 received files (20 bytes), 1 rsync temp file (1048576 bytes), 1 folder or link the pull had created") {
		t.Errorf("the cleanup does not say what it removed:\n%s", dumpEvents(evs))
	}
	if _, err := os.Lstat(work); !os.IsNotExist(err) {
		t.Errorf("work folder still there (%v)", err)
	}
	if hasPartialFile(dirStaging) {
		t.Errorf("partial files left in %s", dirStaging)
	}
	for _, gone := range []string{filepath.Join(dirStaging, "fresh"), filepath.Join(dbStaging, ".app.db.gz.tmp"), filepath.Join(dbStaging, "app.db.tmp")} {
		if _, err := os.Lstat(gone); !os.IsNotExist(err) {
			t.Errorf("%s still there (%v)", gone, err)
		}
	}

	snap, _ := j.Summary["snapshot_id"].(string)
	dst := restoreSnapshot(t, n, snap)
	sameTree(t, src, filepath.Join(dst, dirStaging))
	_ = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == remote.RsyncPartialDir {
			t.Errorf("the snapshot holds %s", p)
		}
		return nil
	})
	entries, err := os.ReadDir(filepath.Join(dst, dbStaging))
	if err != nil || len(entries) != 1 || entries[0].Name() != "app.db" {
		t.Errorf("the database's snapshot folder holds %v (%v), want app.db only", entries, err)
	}
}
