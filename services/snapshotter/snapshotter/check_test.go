package snapshotter

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/repoguard"
)

// TestCheckJobs runs check jobs through the service on real restic
// repositories: a local one and an offsite one.
func TestCheckJobs(t *testing.T) {
	h := newHarness(t)
	offsite := h.repo
	offsite.Repository = filepath.Join(t.TempDir(), "offsite")
	if err := offsite.Init(t.Context()); err != nil {
		t.Fatal(err)
	}
	s := h.guarded(t, 2*time.Second)
	s.Offsite, s.Checks, s.CheckSubset = offsite, h.st, "100%"
	h.serve(t, s)
	h.backups(t, uuid.NewString(), 2, 20_000)

	submitCheck := func() string {
		id := uuid.NewString()
		h.submit(t, domain.Job{ID: id, Type: domain.JobCheck, Status: domain.StatusQueued, CreatedAt: time.Now().UTC()}, string(domain.JobCheck))
		return id
	}
	state := func() domain.CheckState {
		st, err := h.st.GetCheckState(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	var firstSuccess *time.Time
	t.Run("healthy repositories pass, after waiting for the maintenance lease", func(t *testing.T) {
		other, err := repoguard.New(h.infra, "other-host", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		held, err := other.Maintenance(t.Context(), "prune on another host", nil)
		if err != nil {
			t.Fatal(err)
		}
		id := submitCheck()
		deadline := time.Now().Add(30 * time.Second)
		for !h.hasEvent(t, id, func(e domain.JobEvent) bool {
			return strings.Contains(e.Message, "waiting for the repository's maintenance lease")
		}) {
			if time.Now().After(deadline) {
				t.Fatal("the check did not wait for the maintenance lease")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if j, _ := h.st.GetJob(t.Context(), id); j.Status.Terminal() {
			t.Fatalf("check finished while the lease was held: %s", j.Status)
		}
		other.Release(held)
		job := h.wait(t, id)
		if job.Status != domain.StatusSuccess {
			t.Fatalf("check %s: %s", job.Status, job.Error)
		}
		st := state()
		if st.Status != domain.HealthSuccess || st.LastSuccessAt == nil || st.Subset != "100%" || st.LastJobID != id || len(st.Repositories) != 2 {
			t.Fatalf("check_state = %+v", st)
		}
		for i, name := range []string{CheckLocal, CheckOffsite} {
			if r := st.Repositories[i]; r.Name != name || r.Status != domain.HealthSuccess || r.CheckedAt == nil {
				t.Errorf("repository %d = %+v", i, r)
			}
		}
		if got := testutil.ToFloat64(s.CheckMetrics.Status.WithLabelValues(CheckLocal)); got != 1 {
			t.Errorf("satoru_repo_check_status{local} = %v", got)
		}
		if got := testutil.ToFloat64(s.CheckMetrics.LastSuccess.WithLabelValues(CheckOffsite)); got < float64(time.Now().Add(-time.Minute).Unix()) {
			t.Errorf("satoru_repo_check_last_success_timestamp_seconds{offsite} = %v", got)
		}
		firstSuccess = st.LastSuccessAt
	})

	t.Run("a corrupted pack fails naming the repository and restic's message", func(t *testing.T) {
		corruptPacks(t, h.repo.Repository)
		job := h.wait(t, submitCheck())
		if job.Status != domain.StatusFailed {
			t.Fatalf("check %s, want failed", job.Status)
		}
		for _, want := range []string{"local repository " + h.repo.Repository, "restic check: exit 1", "repository contains errors", "damaged packs"} {
			if !strings.Contains(job.Error, want) {
				t.Errorf("job error %q lacks %q", job.Error, want)
			}
		}
		if strings.Contains(job.Error, "offsite repository") {
			t.Errorf("the healthy offsite repository is blamed: %s", job.Error)
		}
		st := state()
		if st.Status != domain.HealthFailed || st.Error != job.Error || firstSuccess == nil || !st.LastSuccessAt.Equal(*firstSuccess) {
			t.Errorf("check_state = %+v (first success %v)", st, firstSuccess)
		}
		if len(st.Repositories) != 2 || st.Repositories[0].Status != domain.HealthFailed || st.Repositories[0].NumErrors == 0 ||
			len(st.Repositories[0].BrokenPacks) == 0 || st.Repositories[1].Status != domain.HealthSuccess {
			t.Errorf("repositories = %+v", st.Repositories)
		}
		if got := testutil.ToFloat64(s.CheckMetrics.Status.WithLabelValues(CheckLocal)); got != 0 {
			t.Errorf("satoru_repo_check_status{local} = %v, want 0", got)
		}
		if got := testutil.ToFloat64(s.CheckMetrics.Status.WithLabelValues(CheckOffsite)); got != 1 {
			t.Errorf("satoru_repo_check_status{offsite} = %v, want 1", got)
		}
	})

	t.Run("a check naming a site is refused", func(t *testing.T) {
		id := uuid.NewString()
		h.submit(t, domain.Job{ID: id, SiteUUID: uuid.NewString(), Type: domain.JobCheck, Status: domain.StatusQueued, CreatedAt: time.Now().UTC()}, string(domain.JobCheck))
		if job := h.wait(t, id); job.Status != domain.StatusFailed || !strings.Contains(job.Error, "repository-level") {
			t.Errorf("check with a site: %s %s", job.Status, job.Error)
		}
	})
}

// corruptPacks overwrites bytes of every pack file under repoDir/data.
func corruptPacks(t *testing.T, repoDir string) {
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
