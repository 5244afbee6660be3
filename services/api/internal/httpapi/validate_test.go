package httpapi

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
)

func sshString(b []byte, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func TestParseHostKey(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	realEd := base64.StdEncoding.EncodeToString(sshString(sshString(nil, []byte("ssh-ed25519")), pub))
	rsa := keyB64("ssh-rsa")
	sk := keyB64("sk-ssh-ed25519@openssh.com")
	ec := keyB64("ecdsa-sha2-nistp384")
	onlyType := base64.StdEncoding.EncodeToString(sshString(nil, []byte("ssh-ed25519")))
	tests := []struct {
		name, in, want, err string
	}{
		{"bare", "ssh-ed25519 " + realEd, "ssh-ed25519 " + realEd, ""},
		{"with comment", "ssh-ed25519 " + realEd + " root@edge", "ssh-ed25519 " + realEd, ""},
		{"keyscan line", "edge.example.com ssh-ed25519 " + realEd, "ssh-ed25519 " + realEd, ""},
		{"keyscan port", "[10.0.0.1]:2222 ssh-rsa " + rsa, "ssh-rsa " + rsa, ""},
		{"hashed host", "|1|abc=|def= ecdsa-sha2-nistp384 " + ec, "ecdsa-sha2-nistp384 " + ec, ""},
		{"sk key, extra spaces", "  sk-ssh-ed25519@openssh.com   " + sk + "  ", "sk-ssh-ed25519@openssh.com " + sk, ""},
		{"empty", "   ", "", "is empty"},
		{"unknown type", "ssh-dss AAAAB3", "", "has no supported key type"},
		{"cert type", "ssh-ed25519-cert-v01@openssh.com AAAA", "", "has no supported key type"},
		{"no key", "host ssh-ed25519", "", "has no base64 key after ssh-ed25519"},
		{"bad base64", "ssh-ed25519 ***", "", "not valid base64"},
		{"type mismatch", "ssh-ed25519 " + rsa, "", "the base64 key is not an ssh-ed25519 key"},
		{"short", "ssh-ed25519 AAAA", "", "too short"},
		{"truncated", "ssh-ed25519 AAAAC3Nz", "", "not an ssh-ed25519 key"},
		{"no material", "ssh-ed25519 " + onlyType, "", "has no key material"},
		{"marker", "@cert-authority *.example.com ssh-ed25519 " + realEd, "", "markers"},
		{"comment", "# ssh-ed25519 " + realEd, "", "comment"},
		{"two lines", "ssh-ed25519 " + realEd + "\nssh-rsa " + rsa, "", "must be one line"},
		{"type too far", "a b ssh-ed25519 " + realEd, "", "has no supported key type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseHostKey(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseHostKey = %q, %v; want error %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseHostKey = %q, %v; want %q", got, err, tc.want)
			}
		})
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
			got, msg := checkHost(tc.in)
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
