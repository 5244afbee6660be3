// Package sitecheck holds the rules a site's fields must meet. The API
// checks them when a site is registered or changed, and the puller checks
// them again on the site it reads from the store before it runs anything
// with it, so a site that did not come through the API (or was changed in
// the store) meets the same rules: one validator, no field the API
// accepts and the puller would refuse at preflight.
package sitecheck

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strings"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
)

// ErrInvalid marks a site the rules refuse. Its text starts with the field
// at fault, as the API's JSON names it ("ssh_key_path: ...").
var ErrInvalid = errors.New("invalid site")

type invalid struct{ msg string }

func (e *invalid) Error() string        { return e.msg }
func (e *invalid) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalid{msg: fmt.Sprintf(format, args...)}
}

// Limits.
const (
	MaxNameLen   = 128
	MaxHostLen   = 253
	MaxUserLen   = 32
	MaxPathLen   = 4096
	MaxBandwidth = 10_000_000 // KiB/s, 80 Gbit/s
	MaxHostKey   = 16 << 10
)

var (
	nameRe  = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	userRe  = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*$`)
	labelRe = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$`)
)

// HostKeyForms tells a user what host_key takes.
var HostKeyForms = `accepted: "keytype base64 [comment]" or a known_hosts line "host keytype base64" as ssh-keyscan prints it, keytype one of ` +
	strings.Join(remote.HostKeyTypes(), ", ")

// Validate checks a whole site and normalises it (host brackets, host key
// form, ssh key path cleaned). Errors wrap ErrInvalid and name the field.
func Validate(s *domain.Site) error {
	switch n := s.Name; {
	case n == "":
		return invalidf("name: required")
	case len(n) > MaxNameLen || !nameRe.MatchString(n):
		return invalidf("name: must be 1 to %d characters of A-Z a-z 0-9 . _ -, got %q", MaxNameLen, clip(n))
	}
	host, msg := Host(s.Host)
	if msg != "" {
		return invalidf("host: %s", msg)
	}
	s.Host = host
	if s.Port < 1 || s.Port > 65535 {
		return invalidf("port: must be between 1 and 65535, got %d", s.Port)
	}
	switch u := s.User; {
	case u == "":
		return invalidf("user: required")
	case len(u) > MaxUserLen || !userRe.MatchString(u):
		return invalidf("user: must be a user name of at most %d characters matching [a-z_][a-z0-9_.-]*, got %q", MaxUserLen, clip(u))
	}
	if s.SSHKeyPath != "" {
		if msg := KeyPath(s.SSHKeyPath); msg != "" {
			return invalidf("ssh_key_path: %s", msg)
		}
		s.SSHKeyPath = path.Clean(s.SSHKeyPath)
	}
	if s.HostKey != "" {
		k, err := HostKey(s.HostKey)
		if err != nil {
			return invalidf("host_key: %v", err)
		}
		s.HostKey = k
	}
	if s.BandwidthLimitKbps < 0 || s.BandwidthLimitKbps > MaxBandwidth {
		return invalidf("bandwidth_limit_kbps: must be between 0 (unlimited) and %d, got %d", MaxBandwidth, s.BandwidthLimitKbps)
	}
	return nil
}

// KeyPath checks an ssh private key path by remote.ValidateKeyPath, the
// rule the puller's ssh builder applies (absolute; no NUL or line break;
// no whitespace, quote or backslash, which ssh options and rsync -e cannot
// carry; no '%', which ssh expands), plus a limit on input. It returns a
// reason or "". It never looks at the file: whether it exists or can be
// read is the puller's to find out (preflight), and an answer here would
// tell a token holder which files exist on the host.
func KeyPath(p string) string {
	if len(p) > MaxPathLen {
		return fmt.Sprintf("must be at most %d bytes, got %d", MaxPathLen, len(p))
	}
	if err := remote.ValidatePath(p); err != nil {
		return "must be an absolute path (starting with /) without NUL bytes or line breaks: " + Reason(err, remote.ErrInvalidPath)
	}
	if err := remote.ValidateKeyPath(p); err != nil {
		return Reason(err, remote.ErrInvalidConfig)
	}
	return ""
}

// Host accepts a host name or an IP address (IPv6 also in brackets,
// which are removed) and returns it, or a reason.
func Host(h string) (string, string) {
	switch {
	case h == "":
		return "", "required"
	case strings.HasPrefix(h, "-"):
		return "", fmt.Sprintf("must not start with '-', got %q", clip(h))
	case strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "", fmt.Sprintf("must not contain spaces or control characters, got %q", clip(h))
	case len(h) > MaxHostLen:
		return "", fmt.Sprintf("must be at most %d characters", MaxHostLen)
	}
	inner := h
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		inner = h[1 : len(h)-1]
	}
	if a, err := netip.ParseAddr(inner); err == nil {
		if inner != h && !a.Is6() {
			return "", fmt.Sprintf("brackets are only for IPv6 addresses, got %q", clip(h))
		}
		if strings.ContainsAny(a.Zone(), "/\\'\"`$;&|<>") {
			return "", fmt.Sprintf("has an invalid IPv6 zone, got %q", clip(h))
		}
		return inner, ""
	}
	if inner != h {
		return "", fmt.Sprintf("is not an IPv6 address in brackets, got %q", clip(h))
	}
	name := strings.TrimSuffix(h, ".")
	for _, label := range strings.Split(name, ".") {
		if len(label) > 63 || !labelRe.MatchString(label) {
			return "", fmt.Sprintf("must be a host name (letters, digits, '-', '_', dot-separated labels) or an IP address, got %q", clip(h))
		}
	}
	return h, ""
}

// HostKey validates a site's host_key and returns it normalised to
// "keytype base64". The key itself is checked by remote.ParseHostKey, the
// parser the puller pins with.
func HostKey(s string) (string, error) {
	if len(s) > MaxHostKey {
		return "", fmt.Errorf("must be at most %d bytes", MaxHostKey)
	}
	if strings.ContainsAny(s, "\x00\r\n") {
		return "", fmt.Errorf("must be one line (%s)", HostKeyForms)
	}
	k, err := remote.ParseHostKey(s)
	if err != nil {
		return "", fmt.Errorf("%s (%s)", Reason(err, remote.ErrInvalidHostKey), HostKeyForms)
	}
	return k.Type + " " + k.Base64, nil
}

// Reason is err's message without the leading "sentinel: ", for messages
// that already name the field.
func Reason(err, sentinel error) string {
	msg := err.Error()
	if errors.Is(err, sentinel) {
		msg = strings.TrimPrefix(msg, sentinel.Error()+": ")
	}
	return msg
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
