package puller

import (
	"slices"
	"testing"
)

// The headroom check and disk metrics cover the repository only when it
// is a local folder: a backend URL has no local free space.
func TestHeadroomPaths(t *testing.T) {
	tests := []struct {
		repo string
		want []string
	}{
		{"/srv/restic", []string{"/srv/backups", "/srv/restic"}},
		{"local:/srv/restic", []string{"/srv/backups", "/srv/restic"}},
		{"s3:http://127.0.0.1:9000/bucket/repo", []string{"/srv/backups"}},
		{"sftp:backup@host:/srv/restic", []string{"/srv/backups"}},
	}
	for _, tc := range tests {
		got := BackupSettings{StagingRoot: "/srv/backups", RepoPath: tc.repo}.headroomPaths()
		if !slices.Equal(got, tc.want) {
			t.Errorf("headroomPaths(%q) = %q, want %q", tc.repo, got, tc.want)
		}
	}
}
