package notify

import (
	"context"
	"testing"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
)

// TestRepositoryCheckFailedThenRecovered: a repository check (no site) is
// reported failed, and its next pass as recovered, apart from the sync.
func TestRepositoryCheckFailedThenRecovered(t *testing.T) {
	s, n, _ := setup(t, 0)
	ctx := context.Background()
	check := func(id string) domain.Job { return domain.Job{ID: id, Type: domain.JobCheck} }
	n.Hook(ctx, check("c1"), jobrun.Outcome{Status: domain.StatusFailed, Error: "local repository /r: restic check: exit 1: Fatal: repository contains errors"})
	n.Wait() // sends are asynchronous: keep their order
	n.Hook(ctx, domain.Job{ID: "s1", Type: domain.JobResticSync}, jobrun.Outcome{Status: domain.StatusSuccess})
	n.Hook(ctx, check("c2"), jobrun.Outcome{Status: domain.StatusSuccess})
	n.Wait()
	got, _ := s.snapshot()
	if len(got) != 2 || got[0].Event != JobFailed || got[0].JobType != "check" || got[0].SiteUUID != "" ||
		got[0].Error == "" || got[1].Event != JobRecovered || got[1].JobID != "c2" {
		t.Fatalf("events = %+v, want check failed then recovered", got)
	}
}
