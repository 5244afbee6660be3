package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/satoru/satoru/cmd/satoru/internal/node"
	"github.com/satoru/satoru/shared/config"
)

// TestBannerTellsHowWorkersJoin: without listeners the banner says no
// worker can join; with them it gives the join command, which reads the
// credentials from files and never shows them.
func TestBannerTellsHowWorkersJoin(t *testing.T) {
	for _, tc := range []struct {
		name   string
		extra  []string
		want   []string
		reject []string
	}{
		{"default", nil,
			[]string{"NATS:   embedded, in-process only (no listener)", "socket ", " only", "extra workers: none can join; set embedded_nats_listen and embedded_store_listen"},
			[]string{"SATORU_NATS_URL_FILE"}},
		{"listeners", []string{"SATORU_EMBEDDED_NATS_LISTEN=127.0.0.1:0", "SATORU_EMBEDDED_STORE_LISTEN=127.0.0.1:0"},
			[]string{"(password required)", "(client certificate required)", "SATORU_NATS_URL_FILE=", "SATORU_MONGO_URI_FILE=", "satoru worker"},
			[]string{"none can join"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			env := append([]string{"SATORU_DATA_DIR=" + dir, "SATORU_STAGING_ROOT=" + filepath.Join(dir, "b"), "SATORU_RESTIC_REPO_PATH=" + filepath.Join(dir, "r"),
				"SATORU_API_LISTEN=127.0.0.1:0", "SATORU_API_TOKEN=banner-test-token", "SATORU_SCHEDULER_TICK_SECONDS=86400"}, tc.extra...)
			cfg, err := config.Load("", env)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			n, err := node.Start(ctx, cfg, node.Roles{API: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				cancel()
				t.Fatal(err)
			}
			defer func() { cancel(); _ = n.Wait() }()
			b := Banner("up", n)
			for _, w := range tc.want {
				if !strings.Contains(b, w) {
					t.Errorf("banner lacks %q:\n%s", w, b)
				}
			}
			for _, r := range tc.reject {
				if strings.Contains(b, r) {
					t.Errorf("banner has %q:\n%s", r, b)
				}
			}
			if pw, err := os.ReadFile(filepath.Join(dir, "embedded", "nats-password")); err == nil && strings.Contains(b, strings.TrimSpace(string(pw))) {
				t.Errorf("banner shows the NATS password:\n%s", b)
			}
		})
	}
}

// The banner names a repository at a backend URL with its password
// redacted and says every worker shares it.
func TestBannerRemoteRepository(t *testing.T) {
	cfg, err := config.Load("", []string{"SATORU_DATA_DIR=" + t.TempDir(), "SATORU_API_TOKEN=banner-test-token",
		"SATORU_RESTIC_PASSWORD=banner-pw", "SATORU_RESTIC_REPO_PATH=rest:https://satoru:rest-pass-77@backup.example:8000/satoru/"})
	if err != nil {
		t.Fatal(err)
	}
	b := Banner("worker", &node.Node{Config: cfg, Roles: node.Roles{Snapshotter: true}})
	if !strings.Contains(b, "restic: rest:https://satoru:[redacted]@backup.example:8000/satoru/ (remote: shared by every worker)") {
		t.Errorf("banner lacks the redacted remote repository:\n%s", b)
	}
	if strings.Contains(b, "rest-pass-77") || strings.Contains(b, "banner-pw") {
		t.Errorf("banner shows a secret:\n%s", b)
	}
}
