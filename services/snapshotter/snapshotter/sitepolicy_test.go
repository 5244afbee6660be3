package snapshotter

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/satoru/satoru/shared/domain"
)

// A site's retention override (its policy, stored with the site) replaces
// the global restic_retention_policy (keep_last 2 in the harness) for its
// snapshots only: real restic, real store, the snapshotter as a service.
func TestRetentionSitePolicy(t *testing.T) {
	h := newHarness(t)
	h.serve(t, h.snapshotter(5*time.Second))
	own, global := uuid.NewString(), uuid.NewString()
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, s := range []domain.Site{
		{UUID: own, Name: "own-policy", Host: "127.0.0.1", Port: 22, User: "u", CreatedAt: now, UpdatedAt: now,
			Policy: &domain.SitePolicy{Retention: &domain.RetentionKeep{KeepLast: 1}}},
		{UUID: global, Name: "global-policy", Host: "127.0.0.1", Port: 22, User: "u", CreatedAt: now, UpdatedAt: now,
			Policy: &domain.SitePolicy{Paused: true}}, // a policy without a retention override
	} {
		if err := h.st.CreateSite(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	idsOwn := h.backups(t, own, 3, 20_000)
	idsGlobal := h.backups(t, global, 3, 20_000)

	cases := []struct {
		name, site, policy, source string
		want                       []string
	}{
		{"site with keep_last 1 keeps one", own, "keep_last=1", sourceSite, idsOwn[2:]},
		{"site without an override keeps the global two", global, "keep_last=2", sourceGlobal, idsGlobal[1:]},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			job := h.wait(t, h.submitRetention(t, tc.site))
			if job.Status != domain.StatusSuccess {
				t.Fatalf("job %s: %s", job.Status, job.Error)
			}
			if got := h.snapshotIDs(t, tc.site); !slices.Equal(got, tc.want) {
				t.Errorf("snapshots %q, want %q", got, tc.want)
			}
			if job.Summary["policy"] != tc.policy || job.Summary["policy_source"] != tc.source {
				t.Errorf("summary policy = %v (%v), want %s (%s)", job.Summary["policy"], job.Summary["policy_source"], tc.policy, tc.source)
			}
			if !h.hasEvent(t, job.ID, func(e domain.JobEvent) bool {
				return e.Step == "retention" && strings.HasPrefix(e.Message, "restic forget, policy "+tc.policy+" ("+tc.source+")")
			}) {
				t.Errorf("no forget event naming %s (%s)", tc.policy, tc.source)
			}
		})
	}
}
