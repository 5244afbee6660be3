package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/affinity"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/repoguard"
	"github.com/satoru/satoru/shared/testkit"
)

// syncBuffer is a log sink a test reads while the node writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The repository itself at an s3: URL (the in-process S3 server), its
// credentials from files: a backup succeeds, the API lists, browses and
// downloads its snapshots, a restore works, retention waits for another
// process's maintenance lease (a backup meanwhile does not), then forgets
// and prunes,
// /health shows the repository as remote without a disk figure, and the
// credentials appear in no job event, API answer or log line.
func TestRepositoryOnS3(t *testing.T) {
	const keyID, secret = "AKIASATOREPO0001", "repo-s3-secret-key-9f2c"
	edge := testkit.StartEdgeHost(t)
	s3 := testkit.StartS3(t, keyID, secret)
	s3.Bucket(t, "shared-repo")
	repoURL := s3.Repository("shared-repo", "satoru")
	secrets := t.TempDir()
	idFile, keyFile := filepath.Join(secrets, "repo-id"), filepath.Join(secrets, "repo-key")
	for p, v := range map[string]string{idFile: keyID + "\n", keyFile: secret + "\n"} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dataDir := t.TempDir()
	cfg := loadConfig(t, testEnv(dataDir,
		"SATORU_RESTIC_REPO_PATH="+repoURL,
		"SATORU_RESTIC_REPO_ACCOUNT_ID_FILE="+idFile,
		"SATORU_RESTIC_REPO_ACCOUNT_KEY_FILE="+keyFile,
		`SATORU_RESTIC_RETENTION_POLICY={"keep_last":1}`,
	))
	// Every log line, debug included, to look for the credentials in.
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	n, err := Start(ctx, cfg, All, log)
	if err != nil {
		cancel()
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := n.Wait(); err != nil {
			t.Errorf("node stopped with error: %v", err)
		}
	})
	c := newClient(t, n)
	var answers []string // every API answer, checked for credentials at the end
	get := func(t *testing.T, path string, out any) {
		t.Helper()
		resp, body := c.with(t).get(path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		answers = append(answers, string(body))
		if out != nil {
			if err := json.Unmarshal(body, out); err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
		}
	}

	src := filepath.Join(edge.Dir, "files")
	mkdir(t, src)
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("doc.txt", "kept in a bucket\n")
	site := c.registerSite(edge, siteOpts{name: "edge-s3-repo", targets: []map[string]any{{"mode": "directory", "path": src}}})
	dirPath := filepath.Join(n.Config.StagingRoot, site, domain.TargetHash(domain.ModeDirectory, src))

	var jobs []string
	backupSite := func(site string, i int) {
		id := c.startJob(site, "backup")
		jobs = append(jobs, id)
		j := c.waitJob(id, 120*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("backup %d: %s %q\n%s", i, j.Status, j.Error, dumpEvents(c.events(id)))
		}
		if !hasEvent(c.events(id), "headroom", domain.LevelInfo, "backend URL") {
			t.Errorf("backup %d: the headroom event does not say the repository is not measured:\n%s", i, dumpEvents(c.events(id)))
		}
	}
	backup := func(i int) { backupSite(site, i) }
	backup(1)
	if n, _ := s3.Objects(t, "shared-repo", "satoru/snapshots/"); n != 1 {
		t.Fatalf("%d snapshot objects in the bucket, want 1", n)
	}
	if _, err := os.Stat(repoURL); err == nil {
		t.Fatalf("a local folder named after the URL was made")
	}

	var snaps struct {
		Snapshots []snapshotView `json:"snapshots"`
	}
	get(t, "/api/v1/sites/"+site+"/snapshots", &snaps)
	if len(snaps.Snapshots) != 1 {
		t.Fatalf("snapshots = %+v, want one", snaps.Snapshots)
	}
	snap := snaps.Snapshots[0]
	var tree struct {
		Entries []treeEntry `json:"entries"`
	}
	get(t, "/api/v1/snapshots/"+snap.ID+"/tree?path="+url.QueryEscape(dirPath), &tree)
	if len(tree.Entries) != 1 || tree.Entries[0].Name != "doc.txt" {
		t.Errorf("tree = %+v, want doc.txt", tree.Entries)
	}
	resp, body := c.get("/api/v1/snapshots/" + snap.ID + "/download?path=" + url.QueryEscape(dirPath+"/doc.txt"))
	if resp.StatusCode != http.StatusOK || string(body) != "kept in a bucket\n" {
		t.Errorf("download = %d %q", resp.StatusCode, body)
	}

	local := filepath.Join(t.TempDir(), "restored")
	id, code, e := c.restore(site, map[string]any{"snapshot_id": snap.ID, "paths": []string{dirPath},
		"destination": map[string]any{"local_path": local}})
	if code != http.StatusAccepted {
		t.Fatalf("restore: %d %+v", code, e)
	}
	jobs = append(jobs, id)
	if j := c.waitJob(id, 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("restore: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(id)))
	}
	if got, err := os.ReadFile(filepath.Join(local, filepath.Base(dirPath), "doc.txt")); err != nil || string(got) != "kept in a bucket\n" {
		t.Errorf("restored doc.txt = %q, %v", got, err)
	}

	// Another process's maintenance (an offsite copy, say) holds the
	// maintenance lease: retention waits for it, saying so, while a backup
	// still runs at once. Then retention (keep_last 1) forgets the first
	// snapshot and prunes the bucket.
	other, err := repoguard.New(n.Infra, "other-process", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	held, err := other.Maintenance(context.Background(), "sync-elsewhere", nil)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			other.Release(held)
		}
	})
	write("doc.txt", "second version\n")
	backup(2)
	ret := c.startJob(site, "retention")
	jobs = append(jobs, ret)
	deadline := time.Now().Add(60 * time.Second)
	for !hasEvent(c.events(ret), "retention", domain.LevelInfo, "waiting for the repository's maintenance lease") {
		if time.Now().After(deadline) {
			t.Fatalf("retention does not wait for the maintenance lease:\n%s", dumpEvents(c.events(ret)))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !hasEvent(c.events(ret), "retention", domain.LevelInfo, "other-process") {
		t.Errorf("the wait does not name the holder:\n%s", dumpEvents(c.events(ret)))
	}
	// Another site: the retention holds this site's lease.
	src2 := filepath.Join(edge.Dir, "more")
	mkdir(t, src2)
	if err := os.WriteFile(filepath.Join(src2, "more.txt"), []byte("more\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	site2 := c.registerSite(edge, siteOpts{name: "edge-s3-repo-2", targets: []map[string]any{{"mode": "directory", "path": src2}}})
	backupSite(site2, 3)
	if j := c.job(ret); j.Status.Terminal() {
		t.Fatalf("retention ended (%s) while another maintenance held the lease", j.Status)
	}
	other.Release(held)
	released = true
	j := c.waitJob(ret, 120*time.Second)
	if j.Status != domain.StatusSuccess || summaryInt(j, "removed") != 1 {
		t.Fatalf("retention: %s %q %v\n%s", j.Status, j.Error, j.Summary, dumpEvents(c.events(ret)))
	}
	if !hasEvent(c.events(ret), "retention", domain.LevelInfo, "prune freed") {
		t.Errorf("retention did not prune:\n%s", dumpEvents(c.events(ret)))
	}
	get(t, "/api/v1/sites/"+site+"/snapshots", &snaps)
	if len(snaps.Snapshots) != 1 || snaps.Snapshots[0].ID == snap.ID {
		t.Errorf("after retention: %+v, want only the second snapshot", snaps.Snapshots)
	}

	var health struct {
		Problems []string `json:"problems"`
		Disks    []struct {
			Name      string `json:"name"`
			Path      string `json:"path"`
			Status    string `json:"status"`
			FreeBytes int64  `json:"free_bytes"`
			Total     int64  `json:"total_bytes"`
			Note      string `json:"note"`
		} `json:"disks"`
	}
	get(t, "/api/v1/health", &health)
	found := false
	for _, d := range health.Disks {
		if d.Name != "restic_repo_path" {
			continue
		}
		found = true
		if d.Status != "remote" || d.FreeBytes != 0 || d.Total != 0 || d.Path != repoURL || !strings.Contains(d.Note, "no local free space") {
			t.Errorf("repository disk = %+v, want remote with no figures", d)
		}
	}
	if !found {
		t.Errorf("no restic_repo_path disk in /health: %+v", health.Disks)
	}
	for _, p := range health.Problems {
		if strings.Contains(p, "restic_repo_path") {
			t.Errorf("/health problem about the remote repository: %s", p)
		}
	}
	get(t, "/api/v1/jobs?site_uuid="+site, nil)
	for _, id := range jobs {
		get(t, "/api/v1/jobs/"+id, nil)
		get(t, "/api/v1/jobs/"+id+"/events", nil)
	}
	get(t, "/api/v1/sync", nil)
	get(t, "/metrics", nil)

	for _, s := range []string{keyID, secret} {
		for i, a := range answers {
			if strings.Contains(a, s) {
				t.Errorf("API answer %d shows a credential: %s", i, a)
			}
		}
		if strings.Contains(logs.String(), s) {
			t.Errorf("the logs show a credential:\n%s", logs.String())
		}
	}
	if len(answers) < 10 || !strings.Contains(strings.Join(answers, ""), repoURL) {
		t.Errorf("the API answers checked do not name the repository; the check proves little")
	}
}

// Two workers (own staging each) joined to a hub share one repository in
// an S3 bucket: both initialise it at start (once, under the init lease),
// then back up one site each (one in each one's partitions) at the same
// time, and the API on the hub,
// which reads the same bucket, lists both snapshots.
func TestWorkersShareAnS3Repository(t *testing.T) {
	const keyID, secret = "AKIASATOREPO0002", "shared-s3-secret-7d41"
	edge := testkit.StartEdgeHost(t)
	s3 := testkit.StartS3(t, keyID, secret)
	s3.Bucket(t, "fleet")
	shared := []string{
		"SATORU_RESTIC_REPO_PATH=" + s3.Repository("fleet", "satoru"),
		"SATORU_RESTIC_REPO_ACCOUNT_ID=" + keyID,
		"SATORU_RESTIC_REPO_ACCOUNT_KEY=" + secret,
		"SATORU_RESTIC_PASSWORD=shared-repo-password",
	}
	dir := t.TempDir()
	hub, _ := startNode(t, loadConfig(t, hubEnv(dir, shared...)), Roles{API: true})
	c := newClient(t, hub)
	var nodes []string
	for _, name := range []string{"w1", "w2"} {
		env := append(append(joinEnv(hub), shared...), "SATORU_JOB_WORKER_CONCURRENCY=1", "SATORU_INSTANCE_NAME="+name)
		w, _ := startNode(t, loadConfig(t, testEnv(filepath.Join(dir, name), env...)), Worker)
		nodes = append(nodes, w.StagingID)
	}
	// Each site goes to the worker that owns its partition (site
	// affinity): register sites until each worker owns one, and wait
	// until the two hold their shares of the partitions.
	var sites, ids []string
	owners := map[string]bool{}
	for i := 0; len(sites) < 2; i++ {
		if i == 16 {
			t.Fatalf("16 sites and no one per worker: %v", owners)
		}
		name := fmt.Sprintf("fleet-%d", i)
		src := filepath.Join(edge.Dir, name)
		mkdir(t, src)
		if err := os.WriteFile(filepath.Join(src, "f.txt"), []byte(name+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		site := c.registerSite(edge, siteOpts{name: name, targets: []map[string]any{{"mode": "directory", "path": src}}})
		if o := affinity.Owner(events.JobPartition(site), nodes); !owners[o] {
			owners[o] = true
			sites = append(sites, site)
		}
	}
	waitNodes(t, c, "the partitions split between the workers", func(h nodesHealth) bool {
		held := map[string]int{}
		for _, n := range h.Nodes {
			held[n.Node] = n.Partitions
		}
		return held[nodes[0]] == len(affinity.Owned(nodes[0], nodes)) && held[nodes[1]] == len(affinity.Owned(nodes[1], nodes))
	})
	for _, site := range sites {
		ids = append(ids, c.startJob(site, "backup"))
	}
	workers := map[string]bool{}
	for i, id := range ids {
		j := c.waitJob(id, 120*time.Second)
		if j.Status != domain.StatusSuccess {
			t.Fatalf("backup %d: %s %q\n%s", i, j.Status, j.Error, dumpEvents(c.events(id)))
		}
		workers[j.Worker] = true
	}
	if len(workers) != 2 {
		t.Errorf("both backups ran on %v; want one per worker", workers)
	}
	if n, _ := s3.Objects(t, "fleet", "satoru/keys/"); n != 1 {
		t.Errorf("%d keys in the bucket, want 1 (one init)", n)
	}
	for _, site := range sites {
		var out struct {
			Snapshots []snapshotView `json:"snapshots"`
		}
		if code := c.do("GET", "/api/v1/sites/"+site+"/snapshots", nil, &out); code != http.StatusOK || len(out.Snapshots) != 1 {
			t.Errorf("snapshots of %s: %d %+v", site, code, out.Snapshots)
		}
	}
}
