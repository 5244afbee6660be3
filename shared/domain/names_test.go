package domain

import (
	"slices"
	"testing"
)

// The names below are in restic repositories and stores that outlive a
// release: this test pins their spelling, so a change is deliberate.
func TestNamesAreStable(t *testing.T) {
	cases := []struct {
		name, got, want string
	}{
		{"site tag", SiteTag("s-1"), "site:s-1"},
		{"job tag", JobTag("j-1"), "job:j-1"},
		{"restic host", ResticHost("s-1"), "satoru-s-1"},
		{"sync state id", OffsiteSyncStateID, "offsite"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	if got, want := SnapshotTags("s-1", "j-1"), []string{"site:s-1", "job:j-1"}; !slices.Equal(got, want) {
		t.Errorf("SnapshotTags = %q, want %q", got, want)
	}
	if got, want := Services(), []string{"api", "puller", "snapshotter", "syncer", "scheduler"}; !slices.Equal(got, want) {
		t.Errorf("Services = %q, want %q", got, want)
	}
}

func TestJobOfTags(t *testing.T) {
	cases := []struct {
		name string
		tags []string
		want string
	}{
		{"backup snapshot", SnapshotTags("s", "j-7"), "j-7"},
		{"no job tag", []string{SiteTag("s"), "other"}, ""},
		{"none", nil, ""},
		{"prefix only", []string{"job:"}, ""},
		{"not a prefix", []string{"xjob:j"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := JobOfTags(tc.tags); got != tc.want {
				t.Errorf("JobOfTags(%q) = %q, want %q", tc.tags, got, tc.want)
			}
		})
	}
}
