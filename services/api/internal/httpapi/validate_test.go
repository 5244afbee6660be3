package httpapi

import (
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/satoru/satoru/shared/sitecheck"
)

func TestCheckHostKey(t *testing.T) {
	ed := testKey(t, "ssh-ed25519")
	rsa := testKey(t, "ssh-rsa")
	ec := testKey(t, "ecdsa-sha2-nistp384")
	sk := testKey(t, "sk-ssh-ed25519@openssh.com")
	onlyType := base64.StdEncoding.EncodeToString(ssh.Marshal(struct{ Name string }{"ssh-ed25519"}))
	tests := []struct {
		name, in, want, err string
	}{
		{"bare", "ssh-ed25519 " + ed, "ssh-ed25519 " + ed, ""},
		{"with comment", "ssh-ed25519 " + ed + " root@edge", "ssh-ed25519 " + ed, ""},
		{"keyscan line", "edge.example.com ssh-ed25519 " + ed, "ssh-ed25519 " + ed, ""},
		{"keyscan port", "[10.0.0.1]:2222 ssh-rsa " + rsa, "ssh-rsa " + rsa, ""},
		{"hashed host", "|1|abc=|def= ecdsa-sha2-nistp384 " + ec, "ecdsa-sha2-nistp384 " + ec, ""},
		{"sk key, extra spaces", "  sk-ssh-ed25519@openssh.com   " + sk + "  ", "sk-ssh-ed25519@openssh.com " + sk, ""},
		{"empty", "   ", "", "no key given ("},
		{"unknown type", "ssh-dss " + ed, "", "unsupported key type ssh-dss ("},
		{"cert type", "ssh-ed25519-cert-v01@openssh.com " + ed, "", "unsupported key type ssh-ed25519-cert-v01@openssh.com"},
		{"no key", "host ssh-ed25519", "", "no base64 key after ssh-ed25519"},
		{"bad base64", "ssh-ed25519 ***", "", "ssh-ed25519 key is not valid base64"},
		{"type mismatch", "ssh-ed25519 " + rsa, "", "key says ssh-ed25519 but its blob is ssh-rsa"},
		{"short", "ssh-ed25519 AAAA", "", "ssh-ed25519 key does not parse"},
		{"truncated", "ssh-ed25519 " + ed[:len(ed)-8], "", "ssh-ed25519 key does not parse"},
		{"no material", "ssh-ed25519 " + onlyType, "", "ssh-ed25519 key does not parse"},
		{"marker", "@cert-authority *.example.com ssh-ed25519 " + ed, "", "marker @cert-authority is not supported"},
		{"comment", "# ssh-ed25519 " + ed, "", "no key given, only # comment lines"},
		{"two lines", "ssh-ed25519 " + ed + "\nssh-rsa " + rsa, "", "must be one line ("},
		{"type too far", "a b ssh-ed25519 " + ed, "", "no supported key type"},
		{"too long", "ssh-ed25519 " + ed + " " + strings.Repeat("x", sitecheck.MaxHostKey), "", "must be at most 16384 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sitecheck.HostKey(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("checkHostKey = %q, %v; want error %q", got, err, tc.err)
				}
				if msg := err.Error(); strings.HasPrefix(msg, "invalid host key") || strings.HasPrefix(msg, "line ") {
					t.Errorf("message %q repeats what the field name says", msg)
				}
				if tc.name != "too long" && !strings.HasSuffix(err.Error(), "("+sitecheck.HostKeyForms+")") {
					t.Errorf("message %q does not list the accepted forms", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("checkHostKey = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if !strings.Contains(sitecheck.HostKeyForms, "ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521, ssh-rsa") {
		t.Errorf("HostKeyForms = %q", sitecheck.HostKeyForms)
	}
}

func TestCheckHost(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{"edge-1.example.com", "edge-1.example.com", ""},
		{"edge_1", "edge_1", ""},
		{"localhost.", "localhost.", ""},
		{"192.168.1.10", "192.168.1.10", ""},
		{"::1", "::1", ""},
		{"[fe80::1%eth0]", "fe80::1%eth0", ""},
		{"", "", "required"},
		{"-x", "", "must not start with '-'"},
		{"a\tb", "", "spaces"},
		{"a..b", "", "must be a host name"},
		{"-.a", "", "'-'"},
		{"a-.b", "", "must be a host name"},
		{"h;rm", "", "must be a host name"},
		{"[host]", "", "not an IPv6 address in brackets"},
		{strings.Repeat("a", 64) + ".com", "", "must be a host name"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, msg := sitecheck.Host(tc.in)
			if tc.err != "" {
				if !strings.Contains(msg, tc.err) {
					t.Errorf("checkHost(%q) = %q, %q; want %q", tc.in, got, msg, tc.err)
				}
				return
			}
			if msg != "" || got != tc.want {
				t.Errorf("checkHost(%q) = %q, %q; want %q", tc.in, got, msg, tc.want)
			}
		})
	}
}

func TestValidateTargetCleansPath(t *testing.T) {
	got, err := ValidateTarget(TargetInput{Mode: "directory", Path: "/var//www/./html/"}, "")
	if err != nil || got.Path != "/var/www/html" {
		t.Errorf("got %q, %v", got.Path, err)
	}
	if _, err := ValidateTarget(TargetInput{Mode: "sqlite_dump", Path: "/"}, "t."); err == nil || !strings.Contains(err.Message, "t.path: must name an SQLite database file") {
		t.Errorf("err = %v", err)
	}
}
