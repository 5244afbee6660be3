package compose

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/config"
)

// TestSatoruConfig loads each Satoru service's environment with Satoru's
// own config code, as `satoru <service>` does at start: every SATORU_*
// variable must be a known key with a valid value, and every secret file
// must be read. The secrets are dummy files in place of /run/secrets.
func TestSatoruConfig(t *testing.T) {
	for _, tc := range offsiteVariants {
		t.Run(tc.name, func(t *testing.T) {
			p := loadProject(t, tc.environ...)
			for _, name := range satoruServices {
				s := service(t, p, name)
				secrets := t.TempDir()
				for _, sec := range s.Secrets {
					if err := os.WriteFile(filepath.Join(secrets, filepath.Base(sec.Target)), []byte(exampleSecret(sec.Source)+"\n"), 0o600); err != nil {
						t.Fatal(err)
					}
				}
				var environ []string
				for k, v := range s.Environment {
					val := ""
					if v != nil {
						val = strings.Replace(*v, "/run/secrets", secrets, 1)
					}
					environ = append(environ, k+"="+val)
				}
				if unknown := config.UnknownEnv(environ); len(unknown) > 0 {
					t.Errorf("%s: variables that set no config key: %v", name, unknown)
				}
				cfg, err := config.Load("", environ)
				if err != nil {
					t.Errorf("%s: %v", name, err)
					continue
				}
				if cfg.NATSURL == "" || cfg.MongoURI == "" {
					t.Errorf("%s: nats_url %q, mongo_uri %q: `satoru %s` needs both", name, cfg.NATSURL, cfg.RedactedMongoURI(), name)
				}
				if cfg.NATSURL != exampleSecret("nats_url") || cfg.MongoURI != exampleSecret("mongo_uri") {
					t.Errorf("%s: nats_url and mongo_uri are not the ones of the secrets nats_url and mongo_uri", name)
				}
				if tc.environ != nil && name == "syncer" && (!cfg.ResticB2AccountID.IsSet() || !cfg.ResticB2AccountKey.IsSet()) {
					t.Error("syncer: offsite repository set, but its credentials were not read")
				}
				if name == "api" && !cfg.APIToken.IsSet() {
					t.Error("api: no API token read (it would generate one inside the container)")
				}
				if slices.Contains([]string{"puller", "snapshotter", "syncer", "api"}, name) && !cfg.ResticPassword.IsSet() {
					t.Errorf("%s: no restic password read (it would generate one inside the container)", name)
				}
			}
		})
	}
}

// exampleSecret is what a secret file holds, in the form secrets/README.md
// makes it (passwords are placeholders).
func exampleSecret(name string) string {
	switch name {
	case "nats_url":
		return "nats://satoru:pw-nats@nats-1:4222,nats://satoru:pw-nats@nats-2:4222,nats://satoru:pw-nats@nats-3:4222"
	case "mongo_uri":
		return "mongodb://satoru:pw-mongo@mongo:27017/?replicaSet=rs0&authSource=admin"
	case "nats_auth":
		return `authorization { user: satoru, password: "pw-nats" }`
	}
	return "dummy-" + name
}
