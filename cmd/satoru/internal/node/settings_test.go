package node

import (
	"testing"
	"time"

	"github.com/satoru/satoru/shared/config"
)

// The scheduler (in `satoru up` and `satoru scheduler`) gets
// history_retention_days, the default and a configured value.
func TestSchedulerSettingsHistoryRetention(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want time.Duration
	}{
		{"default", nil, 90 * 24 * time.Hour},
		{"configured", []string{"SATORU_HISTORY_RETENTION_DAYS=7"}, 7 * 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Load("", tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := SchedulerSettings(cfg).HistoryRetention; got != tc.want {
				t.Fatalf("HistoryRetention = %s, want %s", got, tc.want)
			}
		})
	}
}

// A repository at a backend URL is no local area a restore must avoid;
// a local one (with or without local:) is, and so are its secret files.
func TestProtectedAreasOfARemoteRepository(t *testing.T) {
	areas := func(repo string) map[string]string {
		cfg := config.Default()
		cfg.ResticRepoPath = repo
		cfg.ResticRepoAccountKeyFile = "/etc/satoru/repo-key"
		m := map[string]string{}
		for _, a := range ProtectedAreas(cfg) {
			m[a.Key] = a.Path
		}
		return m
	}
	if got := areas("s3:http://127.0.0.1:9000/b/r"); got["restic_repo_path"] != "" || got["restic_repo_account_key_file"] != "/etc/satoru/repo-key" {
		t.Errorf("remote repository areas = %v", got)
	}
	if got := areas("local:/srv/restic"); got["restic_repo_path"] != "/srv/restic" {
		t.Errorf("local repository areas = %v", got)
	}
}
