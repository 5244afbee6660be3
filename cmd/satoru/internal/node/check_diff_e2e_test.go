package node

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/notify"
	"github.com/satoru/satoru/shared/testkit"
)

type checkView struct {
	domain.CheckState
	Health    string      `json:"health"`
	ActiveJob *domain.Job `json:"active_job"`
}

type diffView struct {
	SnapshotID string `json:"snapshot_id"`
	Against    string `json:"against"`
	Added      []struct {
		Path string `json:"path"`
		Type string `json:"type"`
		Size int64  `json:"size"`
	} `json:"added"`
	Removed []struct {
		Path string `json:"path"`
		Size int64  `json:"size"`
	} `json:"removed"`
	Changed []struct {
		Path    string `json:"path"`
		Size    int64  `json:"size"`
		OldSize int64  `json:"old_size"`
	} `json:"changed"`
	Totals struct {
		Added, Removed, Changed int
		AddedBytes              int64 `json:"added_bytes"`
		RemovedBytes            int64 `json:"removed_bytes"`
		ChangedBytes            int64 `json:"changed_bytes"`
	} `json:"totals"`
}

// twoSnapshots backs up a site twice with known changes in between:
// gone.txt removed, grow.txt grown from 2 to 8 bytes, new/added.txt (10
// bytes) added. It returns the site, the staging folder of its target
// as stored in the snapshots, and the snapshot ids, oldest first.
func twoSnapshots(t *testing.T, c *client, n *Node, edge *testkit.EdgeHost, name string) (site, root string, ids [2]string) {
	t.Helper()
	src := filepath.Join(edge.Dir, "files-"+name)
	write := func(rel, data string) {
		t.Helper()
		p := filepath.Join(src, rel)
		mkdir(t, filepath.Dir(p))
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("keep.txt", "same")
	write("gone.txt", "12345")
	write("grow.txt", "ab")
	site = c.registerSite(edge, siteOpts{name: name, targets: []map[string]any{{"mode": "directory", "path": src}}})
	backup := func() {
		t.Helper()
		if j := c.waitJob(c.startJob(site, "backup"), 120*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("backup: %s %q", j.Status, j.Error)
		}
	}
	backup()
	if err := os.Remove(filepath.Join(src, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	write("grow.txt", "abcdefgh")
	write("new/added.txt", "0123456789")
	backup()
	var list struct {
		Snapshots []struct {
			ID string `json:"id"`
		} `json:"snapshots"`
	}
	if code := c.do("GET", "/api/v1/sites/"+site+"/snapshots", nil, &list); code != http.StatusOK || len(list.Snapshots) != 2 {
		t.Fatalf("snapshots: %d %+v", code, list)
	}
	// Newest first.
	ids = [2]string{list.Snapshots[1].ID, list.Snapshots[0].ID}
	root = filepath.Join(n.Config.StagingRoot, site, domain.TargetHash(domain.ModeDirectory, src))
	return site, root, ids
}

// TestSnapshotDiffThroughAPI: GET /snapshots/{id}/diff?against= lists
// the known added, removed and changed files with their sizes.
func TestSnapshotDiffThroughAPI(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t)
	_, root, ids := twoSnapshots(t, c, n, edge, "edge-diff")

	var d diffView
	if code := c.do("GET", "/api/v1/snapshots/"+ids[1]+"/diff?against="+ids[0], nil, &d); code != http.StatusOK {
		t.Fatalf("diff: %d", code)
	}
	if d.SnapshotID != ids[1] || d.Against != ids[0] {
		t.Errorf("diff of %s against %s, want %s against %s", d.SnapshotID, d.Against, ids[1], ids[0])
	}
	if len(d.Added) != 2 || d.Added[0].Path != root+"/new/" || d.Added[0].Type != "dir" ||
		d.Added[1].Path != root+"/new/added.txt" || d.Added[1].Size != 10 {
		t.Errorf("added = %+v", d.Added)
	}
	if len(d.Removed) != 1 || d.Removed[0].Path != root+"/gone.txt" || d.Removed[0].Size != 5 {
		t.Errorf("removed = %+v", d.Removed)
	}
	if len(d.Changed) != 1 || d.Changed[0].Path != root+"/grow.txt" || d.Changed[0].Size != 8 || d.Changed[0].OldSize != 2 {
		t.Errorf("changed = %+v", d.Changed)
	}
	if d.Totals.Added != 2 || d.Totals.Removed != 1 || d.Totals.Changed != 1 ||
		d.Totals.AddedBytes != 10 || d.Totals.RemovedBytes != 5 || d.Totals.ChangedBytes != 6 {
		t.Errorf("totals = %+v", d.Totals)
	}

	// The other way round, added and removed swap.
	var back diffView
	c.do("GET", "/api/v1/snapshots/"+ids[0]+"/diff?against="+ids[1], nil, &back)
	if len(back.Removed) != 2 || len(back.Added) != 1 || back.Added[0].Path != root+"/gone.txt" {
		t.Errorf("reverse diff = %+v", back)
	}

	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if code := c.do("GET", "/api/v1/snapshots/"+ids[1]+"/diff?against=deadbeef00", nil, &e); code != http.StatusNotFound ||
		!strings.Contains(e.Error.Message, "deadbeef00") {
		t.Errorf("unknown against: %d %+v", code, e)
	}
	if code := c.do("GET", "/api/v1/snapshots/"+ids[1]+"/diff", nil, &e); code != http.StatusBadRequest || !strings.Contains(e.Error.Message, "against") {
		t.Errorf("no against: %d %+v", code, e)
	}

	// The CLI: satoru snapshots diff <id> <against>.
	env := []string{"SATORU_API_URL=http://" + n.APIAddr, "SATORU_API_TOKEN=" + testToken}
	r := satoruCLI(t, env, "snapshots", "diff", ids[1][:8], ids[0][:8])
	expect(t, r, 0, "+ "+root+"/new/added.txt  (10 B)", "- "+root+"/gone.txt  (5 B)", "M "+root+"/grow.txt  (2 B -> 8 B)",
		"added 2 (10 B), removed 1 (5 B), changed 1 (+6 bytes)")
	r = satoruCLI(t, env, "snapshots", "diff", ids[1][:8], "deadbeef00")
	if r.code != 1 || !strings.Contains(r.stderr, "deadbeef00") {
		t.Errorf("CLI diff against an unknown snapshot: %s", r)
	}
}

// TestRepositoryCheckThroughAPI: POST /check on a healthy repository
// passes and GET /check, /health and /metrics say so; after pack files
// are corrupted the check fails naming the repository and restic's
// message, health degrades with that reason, the metric drops to 0 and
// the webhook is told.
func TestRepositoryCheckThroughAPI(t *testing.T) {
	var (
		mu  sync.Mutex
		got []notify.Event
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var e notify.Event
		_ = json.Unmarshal(b, &e)
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	}))
	defer srv.Close()
	edge := testkit.StartEdgeHost(t)
	n, c := backupNode(t, "SATORU_RESTIC_CHECK_READ_DATA_SUBSET=100%", "SATORU_WEBHOOK_URL="+srv.URL, "SATORU_JOB_MAX_ATTEMPTS=1")
	twoSnapshots(t, c, n, edge, "edge-check")

	runCheck := func() domain.Job {
		t.Helper()
		var q struct {
			JobID string `json:"job_id"`
		}
		if code := c.do("POST", "/api/v1/check", nil, &q); code != http.StatusAccepted {
			t.Fatalf("POST /check: %d", code)
		}
		return c.waitJob(q.JobID, 120*time.Second)
	}
	type health struct {
		Status   string   `json:"status"`
		Problems []string `json:"problems"`
		Check    struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		} `json:"check"`
	}
	metric := func(name string) (float64, bool) {
		for k, v := range samples(t, scrape(t, n)) {
			if strings.HasPrefix(k, name+"{") && strings.Contains(k, `repository="local"`) {
				return v, true
			}
		}
		return 0, false
	}

	var h health
	c.do("GET", "/api/v1/health", nil, &h)
	if h.Check.Status != "never" {
		t.Errorf("health check before any check: %+v", h.Check)
	}
	// The first check through the CLI, waiting for it.
	env := []string{"SATORU_API_URL=http://" + n.APIAddr, "SATORU_API_TOKEN=" + testToken}
	r := satoruCLI(t, env, "check", "now", "--wait")
	if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "local repository "+n.Config.ResticRepoPath+": no errors") {
		t.Fatalf("satoru check now --wait: %s", r)
	}
	var v checkView
	if code := c.do("GET", "/api/v1/check", nil, &v); code != http.StatusOK || v.Status != domain.HealthSuccess || v.Health != "ok" ||
		v.Subset != "100%" || len(v.Repositories) != 1 || v.Repositories[0].Name != "local" || v.LastSuccessAt == nil {
		t.Fatalf("GET /check: %d %+v", code, v)
	}
	c.do("GET", "/api/v1/health", nil, &h)
	if h.Check.Status != "ok" {
		t.Errorf("health check after a passing check: %+v", h.Check)
	}
	if val, ok := metric("satoru_repo_check_status"); !ok || val != 1 {
		t.Errorf("satoru_repo_check_status{local} = %v (%v), want 1", val, ok)
	}
	if val, _ := metric("satoru_repo_check_last_success_timestamp_seconds"); val < float64(time.Now().Add(-5*time.Minute).Unix()) {
		t.Errorf("satoru_repo_check_last_success_timestamp_seconds{local} = %v", val)
	}

	r = satoruCLI(t, env, "check", "status")
	expectLine(t, r, "health:", "ok")
	expectLine(t, r, "read data subset:", "100%")
	expectLine(t, r, "local:", "success "+n.Config.ResticRepoPath)

	repoDir := n.Config.ResticRepoPath
	corruptRepo(t, repoDir)
	j := runCheck()
	if j.Status != domain.StatusFailed {
		t.Fatalf("check of a corrupted repository: %s", j.Status)
	}
	for _, want := range []string{"local repository " + repoDir, "repository contains errors"} {
		if !strings.Contains(j.Error, want) {
			t.Errorf("check error %q lacks %q", j.Error, want)
		}
	}
	c.do("GET", "/api/v1/health", nil, &h)
	if h.Status != "degraded" || h.Check.Status != "failed" || !strings.Contains(h.Check.Error, "local repository") {
		t.Errorf("health after a failed check: %+v", h)
	}
	found := false
	for _, p := range h.Problems {
		found = found || strings.HasPrefix(p, "repository check failed: local repository "+repoDir)
	}
	if !found {
		t.Errorf("health problems %q do not give the failed check", h.Problems)
	}
	r = satoruCLI(t, env, "check", "status")
	expectLine(t, r, "health:", "failed")
	expectLine(t, r, "local:", "failed "+repoDir, "repository contains errors")
	r = satoruCLI(t, env, "health")
	if r.code != 1 || !strings.Contains(r.stdout, "problem: repository check failed: local repository "+repoDir) {
		t.Errorf("satoru health after a failed check: %s", r)
	}
	if val, ok := metric("satoru_repo_check_status"); !ok || val != 0 {
		t.Errorf("satoru_repo_check_status{local} = %v (%v), want 0", val, ok)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		var failed *notify.Event
		for i := range got {
			if got[i].JobType == "check" && got[i].Event == notify.JobFailed {
				failed = &got[i]
			}
		}
		mu.Unlock()
		if failed != nil {
			if failed.JobID != j.ID {
				t.Errorf("webhook event %+v, want job %s", failed, j.ID)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no job_failed webhook for the check; got %+v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// corruptRepo overwrites bytes of every pack file of a local repository.
func corruptRepo(t *testing.T, repoDir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(repoDir, "data"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if err := os.Chmod(p, 0o600); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		n++
		_, err = f.WriteAt([]byte("corrupted-by-test-corrupted-by-test"), 4)
		return err
	})
	if err != nil || n == 0 {
		t.Fatalf("corrupt packs: %d files, %v", n, err)
	}
}

// TestRepositoryCheckWithOffsite: with an offsite repository (an S3
// stand-in) the check covers it too, after the local one, and names it by
// its redacted location.
func TestRepositoryCheckWithOffsite(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	s3 := testkit.StartS3(t, "AKIASATORUTEST", "s3cr3t-key-for-tests")
	s3.Bucket(t, "offsite")
	repoURL := s3.Repository("offsite", "satoru")
	_, c := backupNode(t,
		"SATORU_RESTIC_B2_REPOSITORY="+repoURL,
		"SATORU_RESTIC_B2_ACCOUNT_ID=AKIASATORUTEST",
		"SATORU_RESTIC_B2_ACCOUNT_KEY=s3cr3t-key-for-tests",
	)
	src := filepath.Join(edge.Dir, "files")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "doc.txt"), []byte("check me offsite\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	site := c.registerSite(edge, siteOpts{name: "edge-check-offsite", targets: []map[string]any{{"mode": "directory", "path": src}}})
	if j := c.waitJob(c.startJob(site, "backup"), 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q", j.Status, j.Error)
	}
	var q struct {
		JobID string `json:"job_id"`
	}
	if code := c.do("POST", "/api/v1/sync", nil, &q); code != http.StatusAccepted {
		t.Fatalf("POST /sync: %d", code)
	}
	if j := c.waitJob(q.JobID, 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("sync: %s %q", j.Status, j.Error)
	}
	if code := c.do("POST", "/api/v1/check", nil, &q); code != http.StatusAccepted {
		t.Fatalf("POST /check: %d", code)
	}
	if j := c.waitJob(q.JobID, 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("check: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(q.JobID)))
	}
	var v checkView
	c.do("GET", "/api/v1/check", nil, &v)
	if len(v.Repositories) != 2 || v.Repositories[0].Name != "local" || v.Repositories[1].Name != "offsite" ||
		v.Repositories[1].Status != domain.HealthSuccess || v.Repositories[1].Repository != repoURL || v.Subset != "5%" {
		t.Errorf("GET /check = %+v", v)
	}
	if !hasEvent(c.events(q.JobID), "check", domain.LevelInfo, "offsite repository "+repoURL+": no errors") {
		t.Errorf("no event for the offsite check:\n%s", dumpEvents(c.events(q.JobID)))
	}
	for _, ev := range c.events(q.JobID) {
		if strings.Contains(ev.Message, "s3cr3t-key-for-tests") {
			t.Errorf("event shows the offsite key: %s", ev.Message)
		}
	}
}
