package events

import (
	"testing"

	"github.com/satoru/satoru/shared/domain"
)

func TestJobRequestNames(t *testing.T) {
	backup := domain.Job{ID: "j1", SiteUUID: "s1", Type: domain.JobBackup}
	sync := domain.Job{ID: "j2", Type: domain.JobResticSync}
	for _, tc := range []struct {
		name                   string
		req                    JobRequest
		wantSubject, wantMsgID string
	}{
		{"first step", RequestFor(backup), "satoru.jobs.s1.backup", "j1"},
		{"snapshot hand-off", StepRequest(backup, StepSnapshot), "satoru.jobs.s1.snapshot", "j1.snapshot"},
		{"repository-level job", RequestFor(sync), "satoru.jobs._repo.restic_sync", "j2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.req.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tc.req.Subject(); got != tc.wantSubject {
				t.Errorf("subject = %q, want %q", got, tc.wantSubject)
			}
			if got := tc.req.MsgID(); got != tc.wantMsgID {
				t.Errorf("msg id = %q, want %q", got, tc.wantMsgID)
			}
		})
	}
}

func TestLeaseKey(t *testing.T) {
	for _, tc := range []struct{ site, want string }{
		{"s1", "site.s1"},
		{"", "site._repo"}, // repository-level jobs share one lease
		{RepoSite, "site._repo"},
	} {
		if got := LeaseKey(tc.site); got != tc.want {
			t.Errorf("LeaseKey(%q) = %q, want %q", tc.site, got, tc.want)
		}
	}
}

// TestSnapshotRequestCarriesTheStaging: the snapshot hand-off names the
// staging the pull wrote, and a request naming something that is not a
// staging id is refused.
func TestSnapshotRequestCarriesTheStaging(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef"
	job := domain.Job{ID: "j1", SiteUUID: "s1", Type: domain.JobBackup, HandOff: &domain.HandOff{Staging: id, Worker: "w1"}}
	if got := StepRequest(job, StepSnapshot).Staging; got != id {
		t.Errorf("snapshot request staging = %q, want %q", got, id)
	}
	if got := RequestFor(job).Staging; got != "" {
		t.Errorf("first-step request staging = %q, want none", got)
	}
	bad := StepRequest(job, StepSnapshot)
	bad.Staging = "../other"
	if err := bad.Validate(); err == nil {
		t.Error("a request with a malformed staging id validated")
	}
}
