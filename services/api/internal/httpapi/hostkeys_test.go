package httpapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// testKeys are real SSH public keys, made once per test run, by type; each
// is the base64 of the key blob as known_hosts and authorized_keys hold it.
var testKeys = sync.OnceValue(func() map[string]string {
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		panic(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	keys := map[string]string{}
	for _, k := range []crypto.PublicKey{edPub, &p256.PublicKey, &p384.PublicKey, &rsaKey.PublicKey} {
		pub, err := ssh.NewPublicKey(k)
		if err != nil {
			panic(err)
		}
		// "type base64\n", as ssh-keygen writes a .pub file.
		typ, b64, _ := strings.Cut(strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))), " ")
		keys[typ] = b64
	}
	// A security-key ed25519 key has no constructor in x/crypto/ssh: its
	// blob is the ed25519 key plus the FIDO application, "ssh:" as
	// ssh-keygen -t ed25519-sk sets it.
	sk := ssh.Marshal(struct {
		Name        string
		KeyBytes    []byte
		Application string
	}{ssh.KeyAlgoSKED25519, edPub, "ssh:"})
	keys[ssh.KeyAlgoSKED25519] = base64.StdEncoding.EncodeToString(sk)
	return keys
})

// testKey returns the base64 blob of a real public key of type typ.
func testKey(t testing.TB, typ string) string {
	t.Helper()
	k, ok := testKeys()[typ]
	if !ok {
		t.Fatalf("no test key of type %s", typ)
	}
	return k
}
