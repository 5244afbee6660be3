package snapshotter

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/repoguard"
)

// guarded is a snapshotter with the cross-process guard, as Run builds it.
func (h *harness) guarded(t *testing.T, retryLock time.Duration) *Snapshotter {
	t.Helper()
	s := h.snapshotter(retryLock)
	g, err := repoguard.New(h.infra, "test-snapshotter", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Guard, s.Repo = g, g.Track(s.Repo)
	return s
}

// dirSize is the bytes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// A retention attempt that died after its forget and before its prune
// finished left the forgotten snapshots' data in the repository. The next
// attempt finds nothing more to forget, and prunes anyway.
func TestRetentionRedeliveredPrunesWhatItsCrashedAttemptForgot(t *testing.T) {
	h := newHarness(t)
	h.serve(t, h.guarded(t, 5*time.Second))
	site := uuid.NewString()
	h.backups(t, site, 4, 300_000)
	// The crashed attempt: forget ran (2 of 4 removed), prune never did.
	res, err := h.repo.Forget(t.Context(), RetentionOptions(site, h.policy.Args()))
	if err != nil || res.Removed != 2 {
		t.Fatalf("forget = %+v, %v", res, err)
	}
	before := dirSize(t, filepath.Join(h.repo.Repository, "data"))

	id := uuid.NewString()
	h.submit(t, domain.Job{ID: id, SiteUUID: site, Type: domain.JobRetention, Status: domain.StatusRunning, Attempts: 1,
		CreatedAt: time.Now().UTC()}, string(domain.JobRetention))
	job := h.wait(t, id)
	if job.Status != domain.StatusSuccess || job.Attempts != 2 {
		t.Fatalf("job %s after %d attempts: %s", job.Status, job.Attempts, job.Error)
	}
	if freed := num(job.Summary["bytes_freed"]); freed < 500_000 {
		t.Errorf("bytes_freed = %d, want the two forgotten snapshots' ~600 kB", freed)
	}
	after := dirSize(t, filepath.Join(h.repo.Repository, "data"))
	if before-after < 500_000 {
		t.Errorf("repository data %d -> %d bytes: the forgotten snapshots' data is still there", before, after)
	}
	if err := h.repo.Check(t.Context(), ""); err != nil {
		t.Fatalf("restic check: %v", err)
	}

	// A first attempt that forgets nothing has nothing to prune.
	id = h.submitRetention(t, site)
	job = h.wait(t, id)
	if job.Status != domain.StatusSuccess || job.Summary["pruned"] == true {
		t.Fatalf("job %s, pruned %v: a first attempt that forgot nothing pruned", job.Status, job.Summary["pruned"])
	}
}

// A restic process that held the exclusive lock (a prune) and was killed
// with kill -9 left its lock. The next backup clears it at once instead
// of waiting out --retry-lock (5 minutes in production), and the
// repository checks clean afterwards.
func TestSnapshotClearsALockLeftByAKilledResticAtOnce(t *testing.T) {
	h := newHarness(t)
	s := h.guarded(t, 5*time.Minute)
	site := uuid.NewString()
	h.stage(t, site, 100_000)

	holder := exec.Command(h.repo.Bin, "key", "passwd")
	holder.Env = append(os.Environ(), "RESTIC_REPOSITORY="+h.repo.Repository, "RESTIC_PASSWORD="+h.repo.Password,
		"RESTIC_CACHE_DIR="+t.TempDir())
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = holder.Wait(); close(exited) }()
	t.Cleanup(func() { _ = holder.Process.Kill(); <-exited; stdin.Close() })
	s.Guard.Record("prune", holder.Process.Pid, h.repo.Repository)
	deadline := time.Now().Add(20 * time.Second)
	for lockFiles(t, h.repo.Repository) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("restic key passwd took no lock")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = holder.Process.Kill()
	<-exited
	if lockFiles(t, h.repo.Repository) != 1 {
		t.Fatal("the killed restic left no lock: the test proves nothing")
	}

	start := time.Now()
	h.serve(t, s)
	job := h.wait(t, h.submitSnapshot(t, site))
	took := time.Since(start)
	if job.Status != domain.StatusSuccess {
		t.Fatalf("backup %s: %s", job.Status, job.Error)
	}
	if took > 60*time.Second {
		t.Errorf("backup took %s: it waited for the dead process's lock", took)
	}
	if n := lockFiles(t, h.repo.Repository); n != 0 {
		t.Errorf("%d lock(s) left", n)
	}
	if err := h.repo.Check(t.Context(), ""); err != nil {
		t.Fatalf("restic check: %v", err)
	}
}

// A backup cut short (here by its step timeout) wrote packs that no index
// references; the clean-up after the failure removes them, so a full disk
// does not stay full. On a busy machine restic may not have written a
// pack by the first limit: the test then tries a longer one.
func TestFailedBackupLeavesNoUnreferencedData(t *testing.T) {
	h := newHarness(t)
	s := h.guarded(t, 5*time.Second)
	h.serve(t, s)
	for _, limit := range []time.Duration{1500 * time.Millisecond, 3 * time.Second, 6 * time.Second} {
		s.Limit = limit
		site := uuid.NewString()
		h.stage(t, site, 400<<20)

		job := h.wait(t, h.submitSnapshot(t, site))
		if job.Status != domain.StatusFailed {
			t.Fatalf("backup %s: want failed by its %s limit (%s)", job.Status, limit, job.Error)
		}
		ev := h.event(t, job.ID, func(e domain.JobEvent) bool {
			return strings.HasPrefix(e.Message, "repository cleaned up after a failed backup")
		})
		if num(ev.Data["bytes_freed"]) == 0 {
			t.Logf("limit %s: the backup was cut before it wrote data (%s); trying a longer one", limit, ev.Message)
			continue
		}
		// The repository held nothing before: every pack left would be debris.
		if n := dirSize(t, filepath.Join(h.repo.Repository, "data")); n != 0 {
			t.Errorf("%d bytes of packs left in the repository", n)
		}
		if err := h.repo.Check(t.Context(), ""); err != nil {
			t.Fatalf("restic check: %v", err)
		}
		return
	}
	t.Fatal("no backup wrote data before its limit: the test proves nothing")
}

func lockFiles(t *testing.T, repo string) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repo, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if len(e.Name()) == 64 && strings.Trim(e.Name(), "0123456789abcdef") == "" {
			n++
		}
	}
	return n
}
