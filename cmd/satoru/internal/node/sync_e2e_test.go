package node

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/repoguard"
	"github.com/satoru/satoru/shared/testkit"
)

type syncView struct {
	Configured bool `json:"configured"`
	domain.SyncState
}

func TestOffsiteSyncThroughSatoruUp(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	s3 := testkit.StartS3(t, "AKIASATORUTEST", "s3cr3t-key-for-tests")
	s3.Bucket(t, "offsite")
	repoURL := s3.Repository("offsite", "satoru")
	n, c := backupNode(t,
		"SATORU_RESTIC_B2_REPOSITORY="+repoURL,
		"SATORU_RESTIC_B2_ACCOUNT_ID=AKIASATORUTEST",
		"SATORU_RESTIC_B2_ACCOUNT_KEY=s3cr3t-key-for-tests",
	)
	src := filepath.Join(edge.Dir, "files")
	mkdir(t, src)
	if err := os.WriteFile(filepath.Join(src, "doc.txt"), []byte("offsite me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	site := c.registerSite(edge, siteOpts{name: "edge-offsite", targets: []map[string]any{{"mode": "directory", "path": src}}})
	for i := 0; i < 2; i++ {
		if j := c.waitJob(c.startJob(site, "backup"), 120*time.Second); j.Status != domain.StatusSuccess {
			t.Fatalf("backup %d: %s %q", i, j.Status, j.Error)
		}
	}

	// Another process's retention holds the maintenance lease: the copy
	// waits for it, saying so, and runs once it is released.
	other, err := repoguard.New(n.Infra, "other-process", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	held, err := other.Maintenance(context.Background(), "retention-elsewhere", nil)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			other.Release(held)
		}
	})
	var queued struct {
		JobID string `json:"job_id"`
	}
	if code := c.do("POST", "/api/v1/sync", nil, &queued); code != http.StatusAccepted {
		t.Fatalf("POST /sync: %d", code)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !hasEvent(c.events(queued.JobID), "sync", domain.LevelInfo, "waiting for the repository's maintenance lease: bus: lease repo.maintenance is held by other-process") {
		if time.Now().After(deadline) {
			t.Fatalf("the sync does not wait for the maintenance lease:\n%s", dumpEvents(c.events(queued.JobID)))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if j := c.job(queued.JobID); j.Status.Terminal() {
		t.Fatalf("the sync ended (%s) while another maintenance held the lease", j.Status)
	}
	other.Release(held)
	released = true
	j := c.waitJob(queued.JobID, 120*time.Second)
	if j.Status != domain.StatusSuccess {
		t.Fatalf("sync: %s %q\n%s", j.Status, j.Error, dumpEvents(c.events(queued.JobID)))
	}
	var state syncView
	if code := c.do("GET", "/api/v1/sync", nil, &state); code != http.StatusOK {
		t.Fatalf("GET /sync: %d", code)
	}
	if state.Status != domain.HealthSuccess || state.LastSuccessAt == nil || state.SnapshotsPending != 0 {
		t.Errorf("sync state after a sync: %+v", state)
	}

	// The remote, read with restic's real s3 backend, has every local snapshot.
	local, err := ResticRepo(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	remote := local
	remote.Repository = repoURL
	remote.Env = []string{"AWS_ACCESS_KEY_ID=AKIASATORUTEST", "AWS_SECRET_ACCESS_KEY=s3cr3t-key-for-tests"}
	ctx := context.Background()
	locals, err := local.Snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	remotes, err := remote.Snapshots(ctx)
	if err != nil {
		t.Fatalf("remote snapshots: %v", err)
	}
	offsite := map[string]bool{}
	for _, s := range remotes {
		offsite[s.Original] = true
	}
	for _, s := range locals {
		if !offsite[s.ID] {
			t.Errorf("local snapshot %s is not offsite", s.ShortID)
		}
	}
	dst := t.TempDir()
	if err := remote.Restore(ctx, remotes[0].ID, dst); err != nil {
		t.Fatalf("restore from offsite: %v", err)
	}
	got, _ := os.ReadFile(filepath.Join(dst, n.Config.StagingRoot, site, domain.TargetHash(domain.ModeDirectory, src), "doc.txt"))
	if !bytes.Equal(got, []byte("offsite me\n")) {
		t.Errorf("file restored from offsite: %q", got)
	}

	var health struct {
		Sync struct {
			Status string `json:"status"`
		} `json:"sync"`
	}
	c.do("GET", "/api/v1/health", nil, &health)
	if health.Sync.Status != "ok" {
		t.Errorf("health sync status %q, want ok", health.Sync.Status)
	}

}

func TestOffsiteSyncWithWrongCredentials(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	s3 := testkit.StartS3(t, "AKIASATORUTEST", "s3cr3t-key-for-tests")
	s3.Bucket(t, "offsite")
	repoURL := s3.Repository("offsite", "satoru")
	dir := t.TempDir()
	offsite := func(id, key string) []string {
		return []string{"SATORU_RESTIC_B2_REPOSITORY=" + repoURL, "SATORU_RESTIC_B2_ACCOUNT_ID=" + id, "SATORU_RESTIC_B2_ACCOUNT_KEY=" + key}
	}
	// The hub runs everything but the syncer; syncers with good and with
	// wrong keys join it as separate processes would.
	hub, _ := startNode(t, loadConfig(t, hubEnv(dir, offsite("AKIASATORUTEST", "s3cr3t-key-for-tests")...)),
		Roles{API: true, Puller: true, Snapshotter: true})
	c := newClient(t, hub)
	syncerEnv := func(name, id, key string) []string {
		env := testEnv(filepath.Join(dir, name), offsite(id, key)...)
		return append(append(env, joinEnv(hub)...),
			"SATORU_RESTIC_REPO_PATH="+hub.Config.ResticRepoPath,
			"SATORU_RESTIC_PASSWORD_FILE="+ResticPasswordFile(hub.Config))
	}
	src := filepath.Join(edge.Dir, "files")
	mkdir(t, src)
	site := c.registerSite(edge, siteOpts{name: "edge-offsite-bad", targets: []map[string]any{{"mode": "directory", "path": src}}})
	if j := c.waitJob(c.startJob(site, "backup"), 120*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("backup: %s %q", j.Status, j.Error)
	}
	sync := func() domain.Job {
		var q struct {
			JobID string `json:"job_id"`
		}
		if code := c.do("POST", "/api/v1/sync", nil, &q); code != http.StatusAccepted {
			t.Fatalf("POST /sync: %d", code)
		}
		return c.waitJob(q.JobID, 120*time.Second)
	}

	_, stopGood := startNode(t, loadConfig(t, syncerEnv("good", "AKIASATORUTEST", "s3cr3t-key-for-tests")), Roles{Syncer: true})
	if j := sync(); j.Status != domain.StatusSuccess {
		t.Fatalf("sync with good keys: %s %q", j.Status, j.Error)
	}
	stopGood()
	var before syncView
	c.do("GET", "/api/v1/sync", nil, &before)

	startNode(t, loadConfig(t, syncerEnv("bad", "AKIAWRONG", "wrong-secret-value")), Roles{Syncer: true})
	j := sync()
	if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "credentials") {
		t.Fatalf("sync with wrong keys: %s %q, want failed saying the credentials were refused", j.Status, j.Error)
	}
	var after syncView
	c.do("GET", "/api/v1/sync", nil, &after)
	if after.Status != domain.HealthFailed || after.LastSuccessAt == nil || !after.LastSuccessAt.Equal(*before.LastSuccessAt) {
		t.Errorf("sync state after a refused sync: %+v (before %+v)", after, before)
	}
	for _, e := range c.events(j.ID) {
		if strings.Contains(e.Message, "wrong-secret-value") {
			t.Errorf("the secret key leaked into an event: %s", e.Message)
		}
	}
	if strings.Contains(j.Error, "wrong-secret-value") {
		t.Error("the secret key leaked into the job error")
	}
	var health struct {
		Status string `json:"status"`
		Sync   struct {
			Status string `json:"status"`
		} `json:"sync"`
	}
	c.do("GET", "/api/v1/health", nil, &health)
	if health.Sync.Status != "failed" || health.Status == "ok" {
		t.Errorf("health after a failed sync: %+v", health)
	}
}
