package remote

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// ErrInvalidHostKey means a host key string does not parse.
var ErrInvalidHostKey = errors.New("invalid host key")

// HostKey is an SSH host public key: its algorithm name and the base64 of
// its wire-format blob, as they appear in known_hosts.
type HostKey struct {
	Type   string // e.g. "ssh-ed25519"
	Base64 string
}

// hostKeyTypes are the key types a host key may have, best first: the
// plain public-key algorithms OpenSSH offers as host keys. DSA (gone from
// OpenSSH) and certificates (which need an @cert-authority line) are not
// among them.
var hostKeyTypes = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSA,
	ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256,
}

// HostKeyTypes returns the key types ParseHostKey accepts, for messages
// that tell a user what to give.
func HostKeyTypes() []string { return slices.Clone(hostKeyTypes) }

// ParseHostKey reads one host key given as a known_hosts line the way
// ssh-keyscan prints it ("[127.0.0.1]:2222 ssh-ed25519 AAAA... comment",
// "host ssh-rsa AAAA...") or as a bare "ssh-ed25519 AAAA..." key. The key
// type must be one of HostKeyTypes; the key blob is decoded and parsed,
// and its own type must match the declared one, so a truncated or
// pasted-wrong key is rejected here rather than by ssh at 3 a.m. Blank
// lines and # comments around the key are ignored; more than one key is
// an error (use ParseHostKeys).
func ParseHostKey(s string) (HostKey, error) {
	keys, err := ParseHostKeys(s)
	if err != nil {
		return HostKey{}, err
	}
	switch len(keys) {
	case 0:
		// No key lines: any '#' is in a comment line.
		if strings.Contains(s, "#") {
			return HostKey{}, fmt.Errorf("%w: no key given, only # comment lines", ErrInvalidHostKey)
		}
		return HostKey{}, fmt.Errorf("%w: no key given", ErrInvalidHostKey)
	case 1:
		return keys[0], nil
	}
	return HostKey{}, fmt.Errorf("%w: %d keys given, want one", ErrInvalidHostKey, len(keys))
}

// ParseHostKeys reads every key in s, one per line (ssh-keyscan output or
// a known_hosts file), skipping blank and # lines. Errors name the line
// when s has more than one.
func ParseHostKeys(s string) ([]HostKey, error) {
	var keys []HostKey
	lines := strings.Split(s, "\n")
	for n, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := parseKeyLine(line)
		if err != nil {
			if len(lines) > 1 {
				err = fmt.Errorf("line %d: %w", n+1, err)
			}
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func parseKeyLine(line string) (HostKey, error) {
	f := strings.Fields(line)
	if strings.HasPrefix(f[0], "@") {
		// @cert-authority / @revoked change what the line means; pinning
		// one plain key is all Satoru does.
		return HostKey{}, fmt.Errorf("%w: marker %s is not supported", ErrInvalidHostKey, f[0])
	}
	// Bare "type base64 [comment]" (reading 0), then "hosts type base64
	// [comment]" (reading 1). Trying both copes with a host named like a
	// key type.
	var errs [2]error
	for i := range errs {
		switch {
		case i >= len(f):
			continue
		case i+1 >= len(f):
			errs[i] = fmt.Errorf("%w: no base64 key after %s; want \"type base64\" or \"host type base64\"", ErrInvalidHostKey, f[i])
			continue
		}
		k, err := parseKey(f[i], f[i+1])
		if err == nil {
			return k, nil
		}
		errs[i] = err
	}
	// Report the reading the line most likely meant: the one whose type
	// field is a supported type, else one that looks like a key type.
	for _, isType := range []func(string) bool{isHostKeyType, looksLikeKeyType} {
		for i, err := range errs {
			if err != nil && isType(f[i]) {
				return HostKey{}, err
			}
		}
	}
	return HostKey{}, fmt.Errorf("%w: no supported key type; want \"type base64\" or \"host type base64\"", ErrInvalidHostKey)
}

func isHostKeyType(s string) bool { return slices.Contains(hostKeyTypes, s) }

func looksLikeKeyType(s string) bool {
	return strings.HasPrefix(s, "ssh-") || strings.HasPrefix(s, "ecdsa-") || strings.HasPrefix(s, "sk-")
}

func parseKey(typ, b64 string) (HostKey, error) {
	if !isHostKeyType(typ) {
		return HostKey{}, fmt.Errorf("%w: unsupported key type %s", ErrInvalidHostKey, typ)
	}
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return HostKey{}, fmt.Errorf("%w: %s key is not valid base64", ErrInvalidHostKey, typ)
	}
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return HostKey{}, fmt.Errorf("%w: %s key does not parse: %v", ErrInvalidHostKey, typ, err)
	}
	if pub.Type() != typ {
		return HostKey{}, fmt.Errorf("%w: key says %s but its blob is %s", ErrInvalidHostKey, typ, pub.Type())
	}
	// Re-encode so equal keys compare equal as strings.
	return HostKey{Type: typ, Base64: base64.StdEncoding.EncodeToString(pub.Marshal())}, nil
}

// Fingerprint is the key's SHA256 fingerprint as ssh-keygen -l and ssh's
// own prompts print it ("SHA256:..."), for showing to an operator who
// checks it out of band. It is empty for a HostKey that does not parse.
func (k HostKey) Fingerprint() string {
	blob, err := base64.StdEncoding.DecodeString(k.Base64)
	if err != nil {
		return ""
	}
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(pub)
}

// String is the bare "type base64" form stored as a site's host_key.
func (k HostKey) String() string { return k.Type + " " + k.Base64 }

// KnownHostsLine is the line ssh matches when it connects with
// -o HostKeyAlias=<alias>: the alias replaces host and port, so the pin
// holds whatever address the site is reached at.
func (k HostKey) KnownHostsLine(alias string) string {
	return alias + " " + k.Type + " " + k.Base64
}

// keyTypeRank orders scanned keys: ed25519 first (small, fast, no
// parameter doubts), then ECDSA, then RSA, then anything else.
func keyTypeRank(t string) int {
	switch {
	case t == ssh.KeyAlgoED25519:
		return 0
	case strings.HasPrefix(t, "ecdsa-"):
		return 1
	case t == ssh.KeyAlgoRSA:
		return 2
	}
	return 3
}
