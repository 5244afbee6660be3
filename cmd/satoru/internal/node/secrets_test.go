package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedSecretsOpenToOthersRefused: the API token and restic
// password Satoru generated into data_dir (0600) stop the start once
// their mode lets others in, naming the file and the fix.
func TestGeneratedSecretsOpenToOthersRefused(t *testing.T) {
	for _, name := range []string{"api-token", "restic-password"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var env []string
			for _, kv := range testEnv(dir) {
				if !strings.HasPrefix(kv, "SATORU_API_TOKEN=") {
					env = append(env, kv)
				}
			}
			cfg := loadConfig(t, env)
			if _, _, err := APIToken(cfg); err != nil {
				t.Fatal(err)
			}
			if _, err := ResticRepo(cfg); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, name)
			if err := os.Chmod(path, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Start(context.Background(), cfg, All, testLogger(t))
			if err == nil {
				t.Fatal("Start accepted a generated secret readable by others")
			}
			for _, want := range []string{path, "chmod 600 " + path, "mode 0644"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if err := os.Chmod(path, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, _, err := APIToken(cfg); err != nil {
				t.Errorf("after chmod 600: %v", err)
			}
			if _, err := ResticRepo(cfg); err != nil {
				t.Errorf("after chmod 600: %v", err)
			}
		})
	}
}
