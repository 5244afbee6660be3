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
// the first attempt's rsync is receiving: the failure is transient, so
// the job is retried after a backoff, the failed attempt's leftovers are
// removed and reported, and the second attempt pulls and snapshots the
// whole folder.
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
	// Cut once received files wait in a partial folder: mid-transfer.
	deadline := time.Now().Add(60 * time.Second)
	for !hasPartialFile(staging) {
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
		{"pull_cleanup", "", "staging holds the last complete pull"},
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
