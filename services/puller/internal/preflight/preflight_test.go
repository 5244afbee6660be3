package preflight

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

// A site changed in the store behind the API's back is checked against
// the API's rules before anything runs with it.
func TestRunRefusesAStoredSiteTheAPIWouldRefuse(t *testing.T) {
	good := domain.Site{UUID: "s1", Name: "edge", Host: "127.0.0.1", Port: 22, User: "backup"}
	tests := []struct {
		name  string
		mut   func(*domain.Site)
		field string
	}{
		{"key path with a space", func(s *domain.Site) { s.SSHKeyPath = "/root/my key" }, "ssh_key_path:"},
		{"key path with a quote", func(s *domain.Site) { s.SSHKeyPath = `/root/"k"` }, "ssh_key_path:"},
		{"key path with a percent", func(s *domain.Site) { s.SSHKeyPath = "/root/%d/key" }, "ssh_key_path:"},
		{"relative key path", func(s *domain.Site) { s.SSHKeyPath = "id_rsa" }, "ssh_key_path:"},
		{"host as an option", func(s *domain.Site) { s.Host = "-oProxyCommand=touch /tmp/x" }, "host:"},
		{"user with a shell word", func(s *domain.Site) { s.User = "root;id" }, "user:"},
		{"port zero", func(s *domain.Site) { s.Port = 0 }, "port:"},
		{"a broken host key", func(s *domain.Site) { s.HostKey = "ssh-ed25519 !!!" }, "host_key:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site := good
			tc.mut(&site)
			c := &Checker{KnownHostsDir: t.TempDir(), SSHPath: "/bin/false"}
			res := c.Run(context.Background(), Input{Site: site})
			if res.OK() || len(res.Events) != 1 || res.Events[0].Step != StepSite || !strings.Contains(res.Events[0].Message, tc.field) {
				t.Fatalf("events = %+v, want one %s failure naming %s", res.Events, StepSite, tc.field)
			}
			if res.Transient {
				t.Error("a broken site is not worth a retry")
			}
			if entries, _ := os.ReadDir(c.KnownHostsDir); len(entries) != 0 {
				t.Errorf("known_hosts written for a refused site: %v", entries)
			}
		})
	}
}

// TestKeyFileMissingAndUnreadableLookAlike: job events reach API clients,
// so a missing key file and one Satoru's user cannot read get one answer.
// The unreadable case is real: a root-only file, checked as uid 65534.
func TestKeyFileMissingAndUnreadableLookAlike(t *testing.T) {
	if testkit.AsNobody() {
		t.Logf("MISSING=%s", checkKeyFile(os.Getenv("KEY_MISSING")))
		t.Logf("UNREADABLE=%s", checkKeyFile(os.Getenv("KEY_UNREADABLE")))
		return
	}
	dir, err := os.MkdirTemp("", "satoru-key-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	secret, missing := filepath.Join(dir, "id_root_only"), filepath.Join(dir, "id_missing")
	if err := os.WriteFile(secret, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if msg := checkKeyFile(secret); msg != "" {
		t.Fatalf("a readable key file is refused: %s", msg)
	}
	generic := func(msg, path string) string { return strings.ReplaceAll(msg, path, "<path>") }
	if a, b := generic(checkKeyFile(missing), missing), generic(checkKeyFile(dir), dir); a == "" || a != b {
		t.Errorf("missing and a folder differ:\n%s\n%s", a, b)
	}

	out, err := testkit.RunAsNobody(t, "TestKeyFileMissingAndUnreadableLookAlike", "KEY_MISSING="+missing, "KEY_UNREADABLE="+secret)
	if err != nil {
		t.Fatalf("child as uid %d: %v\n%s", testkit.NobodyUID, err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		for _, k := range []string{"MISSING", "UNREADABLE"} {
			if _, v, ok := strings.Cut(line, k+"="); ok {
				got[k] = strings.TrimSpace(v)
			}
		}
	}
	m, u := generic(got["MISSING"], missing), generic(got["UNREADABLE"], secret)
	if m == "" || m != u {
		t.Errorf("as uid %d, missing and unreadable differ:\nmissing:    %q\nunreadable: %q\n%s", testkit.NobodyUID, m, u, out)
	}
	for _, leak := range []string{"no such file", "permission denied", "not exist"} {
		if strings.Contains(strings.ToLower(m+u), leak) {
			t.Errorf("message says %q: %s / %s", leak, m, u)
		}
	}
	if !strings.Contains(u, "uid 65534") {
		t.Errorf("the child did not run as uid 65534: %s", u)
	}
}
