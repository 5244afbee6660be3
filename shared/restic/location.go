package restic

import (
	"errors"
	"fmt"
	"strings"
)

// Backends restic names by a location prefix ("b2:bucket:path"); anything
// else is a local path.
var backends = []string{"local", "sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone"}

// Scheme is the backend of a repository location: "s3" for
// "s3:https://host/bucket", "b2" for "b2:bucket:path", "local" for a path.
func Scheme(location string) string {
	prefix, _, ok := strings.Cut(location, ":")
	if ok {
		for _, b := range backends {
			if prefix == b {
				return b
			}
		}
	}
	return "local"
}

// RedactLocation hides a password in a location's URL user info
// ("rest:https://user:secret@host/" -> "rest:https://user:[redacted]@host/"),
// so a location can be logged and stored. Locations of the s3: and b2:
// backends carry no credentials (restic reads those from the environment)
// and come back unchanged.
func RedactLocation(location string) string {
	i := strings.Index(location, "://")
	if i < 0 {
		return location
	}
	rest := location[i+3:]
	authority := rest
	if j := strings.IndexAny(rest, "/?#"); j >= 0 {
		authority = rest[:j]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return location
	}
	user, _, hasPass := strings.Cut(authority[:at], ":")
	if !hasPass {
		return location
	}
	return location[:i+3] + user + ":[redacted]" + rest[at:]
}

// CredentialsEnv is the environment restic's backend for location reads
// an account's key id and key from: B2_ACCOUNT_ID/B2_ACCOUNT_KEY for b2:,
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for s3: (Backblaze B2's
// S3-compatible endpoint among others; AWS_SESSION_TOKEN is set empty so
// an inherited one cannot spoil the signature). Give both or neither; b2:
// needs them, s3: without them uses restic's own sources (instance
// roles). Other backends take no key pair here. Errors name no value.
func CredentialsEnv(location, keyID, key string) ([]string, error) {
	if (keyID == "") != (key == "") {
		return nil, errors.New("give both the account key id and the key, or neither")
	}
	switch scheme := Scheme(location); scheme {
	case "b2":
		if keyID == "" {
			return nil, errors.New("a b2: repository needs an account id and key")
		}
		return []string{"B2_ACCOUNT_ID=" + keyID, "B2_ACCOUNT_KEY=" + key}, nil
	case "s3":
		if keyID == "" {
			return nil, nil
		}
		return []string{"AWS_ACCESS_KEY_ID=" + keyID, "AWS_SECRET_ACCESS_KEY=" + key, "AWS_SESSION_TOKEN="}, nil
	default:
		if keyID != "" {
			return nil, fmt.Errorf("a %s repository takes no account id and key (only b2: and s3: do)", scheme)
		}
		return nil, nil
	}
}

// IsAccessDenied reports whether err is a restic failure in which the
// backend refused the credentials: S3's 403 AccessDenied,
// InvalidAccessKeyId or SignatureDoesNotMatch, B2's 401 unauthorized or
// bad_auth_token. restic has no exit code for it (it exits 1), so this
// reads restic's message.
func IsAccessDenied(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	s := strings.ToLower(e.Stderr)
	for _, m := range []string{
		"access denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
		"403 forbidden", "status code 403", "401 unauthorized", "status code 401",
		"bad_auth_token", "unauthorized",
	} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}
