package config

import (
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
)

// Secret holds a credential. Every way of printing it (fmt verbs, slog,
// JSON, YAML, text marshalling) shows "[redacted]"; Value gives the real
// text to whoever must pass it on (by file or environment, never argv).
type Secret string

const redacted = "[redacted]"

// Value is the secret's text.
func (s Secret) Value() string { return string(s) }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s != "" }

// String shows "[redacted]" for a set secret and "" for an empty one.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return fmt.Sprintf("config.Secret(%q)", s.String()) }

// Format keeps every fmt verb from printing the value.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, s.GoString())
		return
	}
	_, _ = io.WriteString(f, s.String())
}

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps encoders (JSON, YAML, text) from writing the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// redactURLs hides the password in each URL of a comma-separated list and
// the values of query parameters that look like credentials. It parses by
// hand because MongoDB URIs may hold several hosts, which net/url rejects.
func redactURLs(list string) string {
	if list == "" {
		return ""
	}
	// A piece without "://" continues the previous URI (a MongoDB host list).
	var uris []string
	for i, p := range strings.Split(list, ",") {
		if i > 0 && !strings.Contains(p, "://") {
			uris[len(uris)-1] += "," + p
			continue
		}
		uris = append(uris, p)
	}
	for i, u := range uris {
		uris[i] = redactURL(u)
	}
	return strings.Join(uris, ",")
}

func redactURL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		if strings.ContainsAny(u, "@:") {
			return redacted
		}
		return u
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo := authority[:at]
		user, _, hasPass := strings.Cut(userinfo, ":")
		if hasPass {
			authority = user + ":" + redacted + authority[at:]
		} else if strings.HasPrefix(scheme, "nats") || strings.HasPrefix(scheme, "tls") || strings.HasPrefix(scheme, "ws") {
			// nats://TOKEN@host: the user part is the credential.
			authority = redacted + authority[at:]
		}
	}
	if path, query, ok := strings.Cut(tail, "?"); ok {
		params := strings.Split(query, "&")
		for i, kv := range params {
			k, _, hasV := strings.Cut(kv, "=")
			lk := strings.ToLower(k)
			if hasV && (strings.Contains(lk, "password") || strings.Contains(lk, "token") ||
				strings.Contains(lk, "secret") || strings.Contains(lk, "authmechanismproperties")) {
				params[i] = k + "=" + url.QueryEscape(redacted)
			}
		}
		tail = path + "?" + strings.Join(params, "&")
	}
	return scheme + "://" + authority + tail
}

// RedactWebhookURL hides what in a webhook URL may be a credential: the
// user info (user alone too, as a token), the path (chat webhooks carry
// their token there) and credential-like query values. Scheme and host
// stay, so an operator can still tell which endpoint is configured.
func RedactWebhookURL(s string) string {
	if s == "" {
		return ""
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return redacted
	}
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		authority = redacted + authority[at:]
	}
	tail, _, _ = strings.Cut(tail, "#")
	path, query, hasQuery := strings.Cut(tail, "?")
	if path != "" && path != "/" {
		path = "/" + redacted
	}
	out := scheme + "://" + authority + path
	if hasQuery {
		params := strings.Split(query, "&")
		for i, kv := range params {
			k, _, hasV := strings.Cut(kv, "=")
			if hasV {
				params[i] = k + "=" + url.QueryEscape(redacted)
			}
		}
		out += "?" + strings.Join(params, "&")
	}
	return out
}
