package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/notify"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/testkit"
)

// makeBigSQLite makes a database of many pages, so one page can be
// damaged while the file still opens.
func makeBigSQLite(t *testing.T, path string) {
	t.Helper()
	sql := "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); " +
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 400) " +
		"INSERT INTO t(v) SELECT printf('%0500d', i) FROM n; CREATE INDEX tv ON t(v);"
	if out, err := exec.Command("sqlite3", path, sql).CombinedOutput(); err != nil {
		t.Fatalf("sqlite3: %v: %s", err, out)
	}
}

// corruptPages writes garbage over pages 3 to 5 of a database: its header
// stays valid, so sqlite3 opens it and PRAGMA integrity_check finds the
// damage.
func corruptPages(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := make([]byte, 3*4096)
	for i := range junk {
		junk[i] = byte(i*7 + 13)
	}
	if _, err := f.WriteAt(junk, 2*4096); err != nil {
		t.Fatal(err)
	}
}

func (c *client) siteStatus(site string) domain.SiteStatus {
	c.t.Helper()
	var view struct {
		Status domain.SiteStatus `json:"status"`
	}
	if code := c.do("GET", "/api/v1/sites/"+site, nil, &view); code != http.StatusOK {
		c.t.Fatalf("get site %s: %d", site, code)
	}
	return view.Status
}

func (c *client) runJob(site, typ string) domain.Job {
	c.t.Helper()
	id := c.startJob(site, typ)
	j := c.waitJob(id, 120*time.Second)
	if j.Summary == nil {
		j.Summary = map[string]any{}
	}
	j.Summary["_events"] = dumpEvents(c.events(id))
	return j
}

// verifyLeftovers lists what verify jobs left in their folder.
func verifyLeftovers(t *testing.T, n *Node) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(n.Config.DataDir, "verify"))
	if err != nil {
		t.Fatalf("verify folder: %v", err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestVerifyThroughAPI: a verify job restores the site's latest snapshot
// with real restic, compares it with the snapshot's listing, checks the
// SQLite target with sqlite3's PRAGMA integrity_check, and records the
// outcome on the site; a snapshot holding a damaged database fails the
// verify and holds the site's health at failed until a verify succeeds.
func TestVerifyThroughAPI(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	src := filepath.Join(edge.Dir, "srv")
	edgeTree(t, src)
	db := filepath.Join(edge.Dir, "app.db")
	makeBigSQLite(t, db)
	site := c.registerSite(edge, siteOpts{name: "edge-verify", targets: []map[string]any{
		{"mode": "directory", "path": src},
		{"mode": "sqlite_dump", "path": db},
	}})
	dbHash := domain.TargetHash(domain.ModeSQLiteDump, db)

	if j := c.runJob(site, "backup"); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
	}

	t.Run("a good snapshot verifies", func(t *testing.T) {
		c := c.with(t)
		j := c.runJob(site, "verify")
		if j.Status != domain.StatusSuccess {
			t.Fatalf("verify: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
		}
		files, want := summaryInt(j, "files"), summaryInt(j, "expected_files")
		if files < 2 || files != want || summaryInt(j, "bytes") != summaryInt(j, "expected_bytes") || summaryInt(j, "databases_checked") != 1 {
			t.Errorf("summary: %v", j.Summary)
		}
		if ev := j.Summary["_events"].(string); !strings.Contains(ev, dbHash) || !strings.Contains(ev, "integrity_check ok") {
			t.Errorf("no integrity_check event for target %s:\n%s", dbHash, ev)
		}
		st := c.siteStatus(site)
		if st.LastVerify == nil || st.LastVerify.Status != domain.HealthSuccess || st.LastVerify.JobID != j.ID ||
			st.LastVerify.Files != files || st.LastVerifiedAt == nil || st.Health.Status != domain.HealthSuccess {
			t.Errorf("site status after a good verify: %+v last_verify %+v", st, st.LastVerify)
		}
		if left := verifyLeftovers(t, n); len(left) != 0 {
			t.Errorf("verify left %v behind", left)
		}
		fi, err := os.Stat(filepath.Join(n.Config.DataDir, "verify"))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("verify folder mode: %v %v", fi.Mode(), err)
		}
	})

	// A snapshot whose copy of the database is damaged: the staging copy
	// rots after the pull checked it, and the next snapshot takes it.
	staged := filepath.Join(n.Config.StagingRoot, site, dbHash, "app.db")
	corruptPages(t, staged)
	repo, err := ResticRepo(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Backup(context.Background(), restic.BackupOptions{
		Paths: []string{filepath.Join(n.Config.StagingRoot, site)},
		Host:  domain.ResticHost(site),
		Tags:  domain.SnapshotTags(site, "rotted-staging"),
	}, nil); err != nil {
		t.Fatalf("restic backup of the damaged staging: %v", err)
	}

	t.Run("a damaged database fails the verify and the site", func(t *testing.T) {
		c := c.with(t)
		j := c.runJob(site, "verify")
		if j.Status != domain.StatusFailed {
			t.Fatalf("verify of a damaged database: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
		}
		if !strings.Contains(j.Error, dbHash) || !strings.Contains(j.Error, "integrity_check") {
			t.Errorf("error does not name the target and the check: %q", j.Error)
		}
		// integrity_check's own output (or sqlite3's error) is in it.
		if !strings.Contains(j.Error, "Page") && !strings.Contains(j.Error, "page") && !strings.Contains(j.Error, "malformed") {
			t.Errorf("error lacks integrity_check's output: %q", j.Error)
		}
		st := c.siteStatus(site)
		if st.Health.Status != domain.HealthFailed || !strings.HasPrefix(st.Health.Message, domain.VerifyFailedPrefix) ||
			!strings.Contains(st.Health.Message, dbHash) {
			t.Errorf("site health after a failed verify: %+v", st.Health)
		}
		if st.LastVerify == nil || st.LastVerify.Status != domain.HealthFailed || st.LastVerify.JobID != j.ID {
			t.Errorf("last_verify: %+v", st.LastVerify)
		}
		if left := verifyLeftovers(t, n); len(left) != 0 {
			t.Errorf("a failed verify left %v behind", left)
		}
	})

	t.Run("a later backup does not hide it; a good verify clears it", func(t *testing.T) {
		c := c.with(t)
		// The pull replaces the damaged staging copy with a good one.
		if j := c.runJob(site, "backup"); j.Status != domain.StatusSuccess {
			t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
		}
		st := c.siteStatus(site)
		if st.Health.Status != domain.HealthFailed || !strings.Contains(st.Health.Message, "until a verify succeeds") {
			t.Errorf("a backup hid the failed verify: %+v", st.Health)
		}
		j := c.runJob(site, "verify")
		if j.Status != domain.StatusSuccess {
			t.Fatalf("verify after a good backup: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
		}
		st = c.siteStatus(site)
		if st.Health.Status != domain.HealthSuccess || st.HeldHealth != nil || st.LastVerify.Status != domain.HealthSuccess {
			t.Errorf("site after a good verify: health %+v held %+v", st.Health, st.HeldHealth)
		}
	})

	t.Run("CLI runs a verify and shows its outcome", func(t *testing.T) {
		env := []string{"SATORU_API_URL=http://" + n.APIAddr, "SATORU_API_TOKEN=" + testToken}
		r := satoruCLI(t, env, "run", "edge-verify", "verify", "--wait", "--timeout", "2m")
		expect(t, r, 0, "queued verify job for site edge-verify", "integrity_check ok")
		expectLine(t, r, "status:", "success")
		r = satoruCLI(t, env, "sites", "show", "edge-verify")
		expectLine(t, r, "last verify:", "success", "files")
		expectLine(t, r, "last verified:", "20")
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get("http://" + n.APIAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		// The series carry the node label too: match name, site and value.
		found := map[string]bool{}
		for line := range strings.Lines(string(body)) {
			if !strings.Contains(line, `site="`+site+`"`) {
				continue
			}
			switch {
			case strings.HasPrefix(line, "satoru_site_verify_status{") && strings.HasSuffix(strings.TrimSpace(line), "} 1"):
				found["status"] = true
			case strings.HasPrefix(line, "satoru_site_last_verified_timestamp_seconds{") && !strings.HasSuffix(strings.TrimSpace(line), "} 0"):
				found["timestamp"] = true
			}
		}
		if !found["status"] || !found["timestamp"] {
			t.Errorf("metrics lack the site's verify series (%v)", found)
		}
	})
}

// TestVerifyWithoutSnapshotWarns: a site never backed up has nothing to
// verify; the job says so and the site's status is left alone.
func TestVerifyWithoutSnapshotWarns(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	_, c := backupNode(t)
	site := c.registerSite(edge, siteOpts{name: "edge-unverified", targets: []map[string]any{
		{"mode": "directory", "path": edge.Dir},
	}})
	j := c.runJob(site, "verify")
	if j.Status != domain.StatusWarning || !strings.Contains(j.Error, "nothing to verify") {
		t.Fatalf("verify without a snapshot: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
	}
	if st := c.siteStatus(site); st.LastVerify != nil || st.Health.Status == domain.HealthFailed {
		t.Errorf("site status: %+v", st)
	}
}

// resticShim wraps the real restic: after a real `restic restore` it
// does what the file mode names (drop: delete one restored .txt file, as
// a restore that silently lost data would; hang: wait, so the job can
// be canceled while the restored data is on disk). Everything else runs
// restic as is.
func resticShim(t *testing.T) (bin, mode string) {
	t.Helper()
	dir := t.TempDir()
	bin, mode = filepath.Join(dir, "restic"), filepath.Join(dir, "mode")
	script := `#!/bin/sh
case " $* " in
*" restore "*)
  "` + resticBin() + `" "$@" || exit $?
  t=""; prev=""
  for a in "$@"; do [ "$prev" = "--target" ] && t="$a"; prev="$a"; done
  case "$(cat '` + mode + `' 2>/dev/null)" in
    drop) rm -f "$(find "$t" -type f -name '*.txt' | head -n 1)" ;;
    hang) sleep 120 ;;
  esac
  exit 0 ;;
esac
exec "` + resticBin() + `" "$@"
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, mode
}

// TestVerifyMismatchAndCancel: a restore that lands fewer files than the
// snapshot lists fails the verify and the site; a verify canceled while
// its restored copy is on disk removes it and records no verdict.
func TestVerifyMismatchAndCancel(t *testing.T) {
	var (
		mu   sync.Mutex
		hook []notify.Event
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e notify.Event
		if err := json.NewDecoder(r.Body).Decode(&e); err == nil {
			mu.Lock()
			hook = append(hook, e)
			mu.Unlock()
		}
	}))
	defer srv.Close()
	edge := testkit.StartEdgeHost(t)
	shim, mode := resticShim(t)
	n, c := backupNode(t, "SATORU_RESTIC_BIN="+shim, "SATORU_WEBHOOK_URL="+srv.URL+"/hook")
	src := filepath.Join(edge.Dir, "srv")
	edgeTree(t, src)
	site := c.registerSite(edge, siteOpts{name: "edge-mismatch", targets: []map[string]any{{"mode": "directory", "path": src}}})
	if j := c.runJob(site, "backup"); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
	}
	setMode := func(m string) {
		if err := os.WriteFile(mode, []byte(m), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("fewer files restored than listed", func(t *testing.T) {
		c := c.with(t)
		setMode("drop")
		j := c.runJob(site, "verify")
		if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "but the snapshot lists") {
			t.Fatalf("verify of a short restore: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
		}
		if summaryInt(j, "files") != summaryInt(j, "expected_files")-1 {
			t.Errorf("summary: %v", j.Summary)
		}
		st := c.siteStatus(site)
		if st.Health.Status != domain.HealthFailed || !strings.Contains(st.Health.Message, "but the snapshot lists") {
			t.Errorf("site health: %+v", st.Health)
		}
		if left := verifyLeftovers(t, n); len(left) != 0 {
			t.Errorf("verify left %v behind", left)
		}
		// The failure is posted to the webhook like any job's.
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			var got *notify.Event
			for i, e := range hook {
				if e.JobID == j.ID {
					got = &hook[i]
				}
			}
			mu.Unlock()
			if got != nil {
				if got.Event != notify.JobFailed || got.JobType != "verify" || got.SiteUUID != site {
					t.Errorf("webhook event: %+v", *got)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no webhook event for the failed verify %s", j.ID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("cancel removes the restored copy", func(t *testing.T) {
		c := c.with(t)
		setMode("hang")
		before := c.siteStatus(site).LastVerify
		id := c.startJob(site, "verify")
		// Wait until the restored files are on disk.
		deadline := time.Now().Add(60 * time.Second)
		for {
			found := false
			_ = filepath.WalkDir(filepath.Join(n.Config.DataDir, "verify"), func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Name() == "big.bin" {
					found = true
				}
				return nil
			})
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the verify's restore never landed\n%s", dumpEvents(c.events(id)))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if code := c.do("POST", "/api/v1/jobs/"+id+"/cancel", nil, nil); code != http.StatusAccepted {
			t.Fatalf("cancel: %d", code)
		}
		if j := c.waitJob(id, 30*time.Second); j.Status != domain.StatusCanceled {
			t.Fatalf("canceled verify: %s %q", j.Status, j.Error)
		}
		if left := verifyLeftovers(t, n); len(left) != 0 {
			t.Errorf("a canceled verify left %v behind", left)
		}
		if after := c.siteStatus(site).LastVerify; after == nil || before == nil || after.JobID != before.JobID {
			t.Errorf("a canceled verify changed last_verify: %+v -> %+v", before, after)
		}
	})
}

// TestVerifyOnS3Repository: verify restores from the repository as
// configured, here at an s3: URL with its credentials from files, and its
// events never carry the secret.
func TestVerifyOnS3Repository(t *testing.T) {
	const keyID, secret = "AKIASATOVERIFY01", "verify-s3-secret-key-4a7d"
	edge := testkit.StartEdgeHost(t)
	s3 := testkit.StartS3(t, keyID, secret)
	s3.Bucket(t, "verify-repo")
	secrets := t.TempDir()
	idFile, keyFile := filepath.Join(secrets, "repo-id"), filepath.Join(secrets, "repo-key")
	for p, v := range map[string]string{idFile: keyID + "\n", keyFile: secret + "\n"} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, c := backupNode(t, "SATORU_RESTIC_REPO_PATH="+s3.Repository("verify-repo", "satoru"),
		"SATORU_RESTIC_REPO_ACCOUNT_ID_FILE="+idFile, "SATORU_RESTIC_REPO_ACCOUNT_KEY_FILE="+keyFile)
	db := filepath.Join(edge.Dir, "app.db")
	makeSQLite(t, db)
	site := c.registerSite(edge, siteOpts{name: "edge-s3-verify", targets: []map[string]any{{"mode": "sqlite_dump", "path": db}}})
	if j := c.runJob(site, "backup"); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
	}
	j := c.runJob(site, "verify")
	if j.Status != domain.StatusSuccess || summaryInt(j, "files") != 1 || summaryInt(j, "databases_checked") != 1 {
		t.Fatalf("verify on s3: %s %q %v", j.Status, j.Error, j.Summary)
	}
	if ev := j.Summary["_events"].(string); strings.Contains(ev, secret) || !strings.Contains(ev, "integrity_check ok") {
		t.Errorf("verify events:\n%s", ev)
	}
}

// TestVerifyRefusesBelowHeadroom: a restore that would leave data_dir's
// disk below the headroom is not attempted; the job fails saying so and
// the site's status (no verdict) stays as it was.
func TestVerifyRefusesBelowHeadroom(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, stop := startNode(t, loadConfig(t, testEnv(t.TempDir())), All)
	c := newClient(t, n)
	src := filepath.Join(edge.Dir, "srv")
	edgeTree(t, src)
	site := c.registerSite(edge, siteOpts{name: "edge-verify-full", targets: []map[string]any{{"mode": "directory", "path": src}}})
	if j := c.runJob(site, "backup"); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
	}
	// The same node, now asking for more headroom than the disk has: its
	// verify must refuse (the margin keeps other processes' disk use on
	// this machine from changing the answer; TestVerifyCheckSpace covers
	// the restore's size in the sum).
	sp, err := disk.Stat(n.Config.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	cfg := n.Config
	cfg.StagingMinFreeBytes = sp.FreeBytes + 256<<20
	n2, _ := startNode(t, cfg, All)
	c = newClient(t, n2)
	j := c.runJob(site, "verify")
	if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "verify could not run") || !strings.Contains(j.Error, "not enough free disk space") {
		t.Fatalf("verify below headroom: %s %q\n%s", j.Status, j.Error, j.Summary["_events"])
	}
	if st := c.siteStatus(site); st.LastVerify != nil || st.Health.Status != domain.HealthSuccess {
		t.Errorf("a verify that could not run changed the site: %+v", st)
	}
}
