package httpapi

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// hostKeyTypes are the key types a pinned host key may have.
var hostKeyTypes = map[string]bool{
	"ssh-ed25519":                        true,
	"ssh-rsa":                            true,
	"ecdsa-sha2-nistp256":                true,
	"ecdsa-sha2-nistp384":                true,
	"ecdsa-sha2-nistp521":                true,
	"sk-ssh-ed25519@openssh.com":         true,
	"sk-ecdsa-sha2-nistp256@openssh.com": true,
}

const maxHostKey = 16 << 10

// ParseHostKey accepts a bare key ("keytype base64 [comment]") or a
// known_hosts line as ssh-keyscan prints it ("host keytype base64") and
// returns it normalised to "keytype base64". The base64 must decode to an
// SSH public key blob of the same type.
func ParseHostKey(s string) (string, error) {
	if len(s) > maxHostKey {
		return "", fmt.Errorf("must be at most %d bytes", maxHostKey)
	}
	if strings.ContainsAny(s, "\x00\r\n") {
		return "", errors.New(`must be one line: "keytype base64" or a known_hosts line "host keytype base64"`)
	}
	fields := strings.Fields(s)
	i := -1
	for j, f := range fields {
		if j > 1 {
			break
		}
		if hostKeyTypes[f] {
			i = j
			break
		}
	}
	switch {
	case len(fields) == 0:
		return "", errors.New("is empty")
	case strings.HasPrefix(fields[0], "@"):
		return "", fmt.Errorf("known_hosts markers such as %s are not supported; give the host's own key", clip(fields[0]))
	case strings.HasPrefix(fields[0], "#"):
		return "", errors.New("is a comment, not a key")
	case i < 0:
		return "", fmt.Errorf(`has no supported key type: want "keytype base64" or "host keytype base64" with keytype one of %s`, keyTypeList())
	case i+1 >= len(fields):
		return "", fmt.Errorf("has no base64 key after %s", fields[i])
	}
	typ, b64 := fields[i], fields[i+1]
	blob, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", fmt.Errorf("the %s key is not valid base64", typ)
	}
	// An SSH public key blob starts with its type as an SSH string.
	if len(blob) < 4 {
		return "", fmt.Errorf("the %s key is too short", typ)
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) || string(blob[4:4+n]) != typ {
		return "", fmt.Errorf("the base64 key is not an %s key", typ)
	}
	if len(blob) == 4+int(n) {
		return "", fmt.Errorf("the %s key has no key material", typ)
	}
	return typ + " " + b64, nil
}

func keyTypeList() string {
	return "ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com"
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
