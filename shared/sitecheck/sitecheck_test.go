package sitecheck

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/satoru/satoru/shared/domain"
)

func TestValidate(t *testing.T) {
	good := domain.Site{Name: "edge-1", Host: "[::1]", Port: 22, User: "backup", SSHKeyPath: "/root//.ssh/id_ed25519"}
	s := good
	if err := Validate(&s); err != nil {
		t.Fatal(err)
	}
	if s.Host != "::1" || s.SSHKeyPath != "/root/.ssh/id_ed25519" {
		t.Errorf("normalised = %+v", s)
	}
	tests := []struct {
		name string
		mut  func(*domain.Site)
		want string
	}{
		{"no name", func(s *domain.Site) { s.Name = "" }, "name: required"},
		{"host option", func(s *domain.Site) { s.Host = "-oProxyCommand=x" }, "host: must not start with '-'"},
		{"port", func(s *domain.Site) { s.Port = 70000 }, "port: must be between 1 and 65535"},
		{"user", func(s *domain.Site) { s.User = "Root" }, "user: must be a user name"},
		{"key path: space", func(s *domain.Site) { s.SSHKeyPath = "/root/my key" }, `ssh_key_path: key path "/root/my key" contains whitespace`},
		{"key path: newline", func(s *domain.Site) { s.SSHKeyPath = "/root/a\nb" }, "ssh_key_path: must be an absolute path"},
		{"key path: single quote", func(s *domain.Site) { s.SSHKeyPath = "/root/'k" }, "ssh_key_path: key path \"/root/'k\" contains a quote or backslash"},
		{"key path: double quote", func(s *domain.Site) { s.SSHKeyPath = `/root/"k` }, "ssh_key_path:"},
		{"key path: backslash", func(s *domain.Site) { s.SSHKeyPath = `/root/a\b` }, "ssh_key_path:"},
		{"key path: percent", func(s *domain.Site) { s.SSHKeyPath = "/home/%u/.ssh/id" }, "ssh_key_path: key path \"/home/%u/.ssh/id\" contains '%', which ssh would expand"},
		{"key path: control character", func(s *domain.Site) { s.SSHKeyPath = "/root/a\x01b" }, "ssh_key_path:"},
		{"key path: relative", func(s *domain.Site) { s.SSHKeyPath = ".ssh/id_rsa" }, "ssh_key_path: must be an absolute path (starting with /) without NUL bytes or line breaks: path \".ssh/id_rsa\" is not absolute"},
		{"key path: home", func(s *domain.Site) { s.SSHKeyPath = "~/.ssh/id_rsa" }, "ssh_key_path: must be an absolute path"},
		{"host key", func(s *domain.Site) { s.HostKey = "ssh-ed25519 !!!" }, "host_key: ssh-ed25519 key is not valid base64"},
		{"bandwidth", func(s *domain.Site) { s.BandwidthLimitKbps = -1 }, "bandwidth_limit_kbps: must be between 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.mut(&s)
			err := Validate(&s)
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("Validate = %v, want ErrInvalid starting %q", err, tc.want)
			}
		})
	}
}

// KeyPath judges the text only: a missing file and a present one get the
// same answer, so the API tells nobody which files exist.
func TestKeyPathNeverLooksAtTheFile(t *testing.T) {
	present := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(present, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	if a, b := KeyPath(present), KeyPath("/nonexistent/dir/id"); a != "" || b != "" {
		t.Errorf("KeyPath = %q / %q, want both accepted", a, b)
	}
}
