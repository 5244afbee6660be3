package remote

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// testdata/keyscan.txt is ssh-keyscan output; fingerprints.txt is
// ssh-keygen -lf for the same keys.
func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func scannedKeys(t *testing.T) map[string]HostKey {
	t.Helper()
	keys, err := ParseHostKeys(readTestdata(t, "keyscan.txt"))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]HostKey{}
	for _, k := range keys {
		m[k.Type] = k
	}
	if len(m) != 3 {
		t.Fatalf("keyscan.txt gave %d key types, want 3", len(m))
	}
	return m
}

func TestParseHostKey(t *testing.T) {
	keys := scannedKeys(t)
	ed := keys["ssh-ed25519"]
	rsa := keys["ssh-rsa"]
	tests := []struct {
		name    string
		in      string
		want    HostKey
		wantErr string
	}{
		{name: "keyscan line with bracketed host and port", in: "[127.0.0.1]:2222 " + ed.String(), want: ed},
		{name: "host type key", in: "edge.example " + ed.String(), want: ed},
		{name: "bare key", in: ed.String(), want: ed},
		{name: "bare key with comment", in: ed.String() + " root@edge", want: ed},
		{name: "known_hosts line with comment", in: "edge,10.0.0.1 " + rsa.String() + " some comment", want: rsa},
		{name: "hashed host", in: "|1|abc=|def= " + rsa.String(), want: rsa},
		{name: "host named like a key type", in: "ssh-gw " + ed.String(), want: ed},
		{name: "surrounding space and comment lines", in: "\n# 127.0.0.1:22 SSH-2.0-OpenSSH_9.2\n  " + ed.String() + "  \n", want: ed},
		{name: "ecdsa", in: "h " + keys["ecdsa-sha2-nistp256"].String(), want: keys["ecdsa-sha2-nistp256"]},
		{name: "empty", in: "", wantErr: "no key given"},
		{name: "only comments", in: "# nothing\n", wantErr: "no key given"},
		{name: "two keys", in: ed.String() + "\n" + rsa.String(), wantErr: "2 keys given"},
		{name: "type only", in: "ssh-ed25519", wantErr: "want \"type base64\""},
		{name: "bad base64", in: "ssh-ed25519 not*base64", wantErr: "not valid base64"},
		{name: "truncated key", in: "ssh-ed25519 " + ed.Base64[:20], wantErr: "does not parse"},
		{name: "type does not match blob", in: "ssh-rsa " + ed.Base64, wantErr: "blob is ssh-ed25519"},
		{name: "host with bad key", in: "edge ssh-ed25519 AAAA", wantErr: "ssh-ed25519 key"},
		{name: "cert-authority marker", in: "@cert-authority * " + ed.String(), wantErr: "not supported"},
		{name: "revoked marker", in: "@revoked edge " + ed.String(), wantErr: "marker @revoked is not supported"},
		{name: "comment only", in: "# " + ed.String(), wantErr: "no key given, only # comment lines"},
		{name: "DSA", in: "edge ssh-dss " + ed.Base64, wantErr: "unsupported key type ssh-dss"},
		{name: "certificate", in: "ssh-ed25519-cert-v01@openssh.com " + ed.Base64, wantErr: "unsupported key type ssh-ed25519-cert-v01@openssh.com"},
		{name: "no key type", in: "a b " + ed.String(), wantErr: "no supported key type"},
		{name: "host and type only", in: "edge ssh-ed25519", wantErr: "no base64 key after ssh-ed25519"},
		{name: "bad key on a later line", in: ed.String() + "\nssh-ed25519 AAAA", wantErr: "line 2: invalid host key: ssh-ed25519 key does not parse"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseHostKey(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidHostKey) {
					t.Fatalf("err = %v, want ErrInvalidHostKey containing %q", err, tc.wantErr)
				}
				if one := !strings.Contains(strings.TrimSpace(tc.in), "\n"); one && strings.HasPrefix(err.Error(), "line ") {
					t.Errorf("err = %v: a one-line input needs no line number", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHostKeyFingerprintMatchesSSHKeygen(t *testing.T) {
	keys := scannedKeys(t)
	// "256 SHA256:... root@edge (ED25519)"
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(readTestdata(t, "fingerprints.txt")), "\n") {
		f := strings.Fields(line)
		typ := map[string]string{"(RSA)": "ssh-rsa", "(ECDSA)": "ecdsa-sha2-nistp256", "(ED25519)": "ssh-ed25519"}[f[len(f)-1]]
		want[typ] = f[1]
	}
	for typ, k := range keys {
		t.Run(typ, func(t *testing.T) {
			if got := k.Fingerprint(); got != want[typ] {
				t.Errorf("Fingerprint() = %q, ssh-keygen says %q", got, want[typ])
			}
		})
	}
	if fp := (HostKey{Type: "ssh-ed25519", Base64: "garbage"}).Fingerprint(); fp != "" {
		t.Errorf("fingerprint of garbage = %q, want empty", fp)
	}
}

func TestKnownHostsLine(t *testing.T) {
	ed := scannedKeys(t)["ssh-ed25519"]
	line := ed.KnownHostsLine("satoru-site-1")
	if line != "satoru-site-1 "+ed.Type+" "+ed.Base64 {
		t.Errorf("KnownHostsLine = %q", line)
	}
	back, err := ParseHostKey(line)
	if err != nil || back != ed {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

func TestKeyTypeRank(t *testing.T) {
	order := []string{"ssh-ed25519", "ecdsa-sha2-nistp521", "ssh-rsa", "sk-ssh-ed25519@openssh.com"}
	for i := 1; i < len(order); i++ {
		if keyTypeRank(order[i-1]) >= keyTypeRank(order[i]) {
			t.Errorf("%s should rank before %s", order[i-1], order[i])
		}
	}
}
