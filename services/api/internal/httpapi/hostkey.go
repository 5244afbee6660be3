package httpapi

import (
	"errors"
	"fmt"
	"strings"

	"github.com/satoru/satoru/shared/remote"
)

const maxHostKey = 16 << 10

// hostKeyForms tells a user what host_key takes.
var hostKeyForms = `accepted: "keytype base64 [comment]" or a known_hosts line "host keytype base64" as ssh-keyscan prints it, keytype one of ` +
	strings.Join(remote.HostKeyTypes(), ", ")

// checkHostKey validates a site's host_key and returns it normalised to
// "keytype base64". The key itself is checked by remote.ParseHostKey, the
// parser the puller pins with, so the API accepts exactly what the puller
// can use; only the limits on API input are checked here.
func checkHostKey(s string) (string, error) {
	if len(s) > maxHostKey {
		return "", fmt.Errorf("must be at most %d bytes", maxHostKey)
	}
	if strings.ContainsAny(s, "\x00\r\n") {
		return "", fmt.Errorf("must be one line (%s)", hostKeyForms)
	}
	k, err := remote.ParseHostKey(s)
	if err != nil {
		return "", fmt.Errorf("%s (%s)", reason(err, remote.ErrInvalidHostKey), hostKeyForms)
	}
	return k.Type + " " + k.Base64, nil
}

// reason is err's message without the leading "sentinel: ", for messages
// that already name the field.
func reason(err, sentinel error) string {
	msg := err.Error()
	if errors.Is(err, sentinel) {
		msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
	}
	return msg
}
