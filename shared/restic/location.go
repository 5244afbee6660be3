package restic

import (
	"errors"
	"fmt"
	"regexp"
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
// an inherited one cannot spoil the signature), RESTIC_REST_USERNAME/
// RESTIC_REST_PASSWORD for rest: and AZURE_ACCOUNT_NAME/AZURE_ACCOUNT_KEY
// for azure:. Give both or neither; b2: needs them, the others without
// them use the backend's own sources (instance roles, URL user info,
// inherited variables). Other backends take no key pair here. Errors name
// no value.
func CredentialsEnv(location, keyID, key string) ([]string, error) {
	if (keyID == "") != (key == "") {
		return nil, errors.New("give both the account key id and the key, or neither")
	}
	scheme := Scheme(location)
	if scheme == "b2" && keyID == "" {
		return nil, errors.New("a b2: repository needs an account id and key")
	}
	if keyID == "" {
		return nil, nil
	}
	switch scheme {
	case "b2":
		return []string{"B2_ACCOUNT_ID=" + keyID, "B2_ACCOUNT_KEY=" + key}, nil
	case "s3":
		return []string{"AWS_ACCESS_KEY_ID=" + keyID, "AWS_SECRET_ACCESS_KEY=" + key, "AWS_SESSION_TOKEN="}, nil
	case "rest":
		return []string{"RESTIC_REST_USERNAME=" + keyID, "RESTIC_REST_PASSWORD=" + key}, nil
	case "azure":
		return []string{"AZURE_ACCOUNT_NAME=" + keyID, "AZURE_ACCOUNT_KEY=" + key, "AZURE_ACCOUNT_SAS="}, nil
	default:
		return nil, fmt.Errorf("a %s repository takes no account id and key (only b2:, s3:, rest: and azure: do)", scheme)
	}
}

// schemeLike is a location that starts the way a backend URL does
// ("ftp:...", "S3:..."), as opposed to a path ("./repo", "/srv/repo").
var schemeLike = regexp.MustCompile(`^([A-Za-z][A-Za-z0-9+.-]*):`)

// CheckLocation accepts a local path (relative or absolute, "local:"
// prefix allowed) or a location of one of restic's backends with
// something after the prefix. Anything else that starts like a URL is
// refused, naming its scheme only: a typo ("S3:", "ftp:") would otherwise
// become a local folder named after the URL.
func CheckLocation(location string) error {
	if strings.TrimSpace(location) == "" {
		return errors.New("must not be empty")
	}
	if Scheme(location) != "local" {
		_, rest, _ := strings.Cut(location, ":")
		if strings.TrimSpace(rest) == "" {
			return fmt.Errorf("a %s: location needs the repository after %q", Scheme(location), Scheme(location)+":")
		}
		return nil
	}
	if m := schemeLike.FindStringSubmatch(location); m != nil && m[1] != "local" {
		return fmt.Errorf("unknown restic backend %q: give a local path (write ./%s for a folder of that name) or a location starting with one of %s",
			m[1], m[1]+":...", strings.Join(remoteBackends(), ": ")+":")
	}
	if strings.TrimPrefix(location, "local:") == "" {
		return errors.New("a local: location needs a path")
	}
	return nil
}

func remoteBackends() []string {
	var out []string
	for _, b := range backends {
		if b != "local" {
			out = append(out, b)
		}
	}
	return out
}

// LocalPath is the folder of a local repository ("local:" removed) and
// true, or "" and false for a backend URL, which has no local folder to
// check for free space, protect from restores or stat.
func LocalPath(location string) (string, bool) {
	if Scheme(location) != "local" {
		return "", false
	}
	return strings.TrimPrefix(location, "local:"), true
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
