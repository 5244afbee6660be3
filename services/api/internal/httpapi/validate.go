package httpapi

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strings"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
)

// SiteInput is the body of POST /sites and PATCH /sites/{uuid}. A nil
// field is "not given": the default on create, unchanged on PATCH.
type SiteInput struct {
	Name               *string       `json:"name"`
	Host               *string       `json:"host"`
	Port               *int          `json:"port"`
	User               *string       `json:"user"`
	SSHKeyPath         *string       `json:"ssh_key_path"`
	HostKey            *string       `json:"host_key"`
	TrustOnFirstUse    *bool         `json:"trust_on_first_use"`
	BandwidthLimitKbps *int          `json:"bandwidth_limit_kbps"`
	Targets            []TargetInput `json:"targets"` // POST only
}

// TargetInput is the body of POST /sites/{uuid}/targets and an entry of
// SiteInput.Targets.
type TargetInput struct {
	Mode     domain.TargetMode `json:"mode"`
	Path     string            `json:"path"`
	Excludes []string          `json:"excludes"`
}

// JobInput is the body of POST /sites/{uuid}/jobs.
type JobInput struct {
	Type domain.JobType `json:"type"`
}

// Limits.
const (
	maxNameLen      = 128
	maxHostLen      = 253
	maxUserLen      = 32
	maxPathLen      = 4096
	maxExcludes     = 1000
	maxTargets      = 1000
	maxBandwidth    = 10_000_000 // KiB/s, 80 Gbit/s
	DefaultSSHPort  = 22
	DefaultJobLimit = 50
	MaxJobLimit     = 500
)

// SupportedJobTypes are the job types the API accepts in this phase.
var SupportedJobTypes = []domain.JobType{domain.JobPreflight, domain.JobBackup, domain.JobRetention}

var (
	nameRe  = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	userRe  = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*$`)
	labelRe = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$`)
)

// ApplySite returns base with the given fields of in set.
func ApplySite(base domain.Site, in SiteInput) domain.Site {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&base.Name, in.Name)
	set(&base.Host, in.Host)
	set(&base.User, in.User)
	set(&base.SSHKeyPath, in.SSHKeyPath)
	set(&base.HostKey, in.HostKey)
	if in.Port != nil {
		base.Port = *in.Port
	}
	if in.TrustOnFirstUse != nil {
		base.TrustOnFirstUse = *in.TrustOnFirstUse
	}
	if in.BandwidthLimitKbps != nil {
		base.BandwidthLimitKbps = *in.BandwidthLimitKbps
	}
	return base
}

// ValidateSite checks a whole site and normalises it (host brackets, host
// key form). Errors name the field.
func ValidateSite(s *domain.Site) *Error {
	switch n := s.Name; {
	case n == "":
		return invalid("name: required")
	case len(n) > maxNameLen || !nameRe.MatchString(n):
		return invalid("name: must be 1 to %d characters of A-Z a-z 0-9 . _ -, got %q", maxNameLen, clip(n))
	}
	host, msg := checkHost(s.Host)
	if msg != "" {
		return invalid("host: %s", msg)
	}
	s.Host = host
	if s.Port < 1 || s.Port > 65535 {
		return invalid("port: must be between 1 and 65535, got %d", s.Port)
	}
	switch u := s.User; {
	case u == "":
		return invalid("user: required")
	case len(u) > maxUserLen || !userRe.MatchString(u):
		return invalid("user: must be a user name of at most %d characters matching [a-z_][a-z0-9_.-]*, got %q", maxUserLen, clip(u))
	}
	if s.SSHKeyPath != "" {
		if msg := checkPath(s.SSHKeyPath); msg != "" {
			return invalid("ssh_key_path: %s", msg)
		}
	}
	if s.HostKey != "" {
		k, err := checkHostKey(s.HostKey)
		if err != nil {
			return invalid("host_key: %v", err)
		}
		s.HostKey = k
	}
	if s.BandwidthLimitKbps < 0 || s.BandwidthLimitKbps > maxBandwidth {
		return invalid("bandwidth_limit_kbps: must be between 0 (unlimited) and %d, got %d", maxBandwidth, s.BandwidthLimitKbps)
	}
	return nil
}

// checkHost accepts a host name or an IP address (IPv6 also in brackets,
// which are removed) and returns it, or a reason.
func checkHost(h string) (string, string) {
	switch {
	case h == "":
		return "", "required"
	case strings.HasPrefix(h, "-"):
		return "", fmt.Sprintf("must not start with '-', got %q", clip(h))
	case strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "", fmt.Sprintf("must not contain spaces or control characters, got %q", clip(h))
	case len(h) > maxHostLen:
		return "", fmt.Sprintf("must be at most %d characters", maxHostLen)
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

// checkPath checks a path the puller will use (a target, the ssh key) by
// remote.ValidatePath, the rules the puller applies, plus a limit on API
// input; it returns a reason or "".
func checkPath(p string) string {
	if len(p) > maxPathLen {
		return fmt.Sprintf("must be at most %d bytes, got %d", maxPathLen, len(p))
	}
	if err := remote.ValidatePath(p); err != nil {
		return "must be an absolute path (starting with /) without NUL bytes or line breaks: " + reason(err, remote.ErrInvalidPath)
	}
	return ""
}

// ValidateTarget checks a target and returns it normalised (clean path);
// field names are prefixed with prefix (e.g. "targets[2].").
func ValidateTarget(in TargetInput, prefix string) (TargetInput, *Error) {
	switch {
	case in.Mode == "":
		return in, invalid(`%smode: required ("directory" or "sqlite_dump")`, prefix)
	case !in.Mode.Valid():
		return in, invalid(`%smode: must be "directory" or "sqlite_dump", got %q`, prefix, clip(string(in.Mode)))
	}
	if msg := checkPath(in.Path); msg != "" {
		return in, invalid("%spath: %s", prefix, msg)
	}
	in.Path = path.Clean(in.Path)
	if in.Mode == domain.ModeSQLiteDump && in.Path == "/" {
		return in, invalid("%spath: must name an SQLite database file, got %q", prefix, in.Path)
	}
	if len(in.Excludes) > 0 && in.Mode != domain.ModeDirectory {
		return in, invalid("%sexcludes: only directory targets take excludes", prefix)
	}
	if len(in.Excludes) > maxExcludes {
		return in, invalid("%sexcludes: at most %d patterns, got %d", prefix, maxExcludes, len(in.Excludes))
	}
	for i, ex := range in.Excludes {
		if len(ex) > maxPathLen {
			return in, invalid("%sexcludes[%d]: must be at most %d bytes", prefix, i, maxPathLen)
		}
		if err := remote.ValidateExclude(ex); err != nil {
			return in, invalid("%sexcludes[%d]: %s", prefix, i, reason(err, remote.ErrInvalidConfig))
		}
	}
	return in, nil
}

// ValidateJobType accepts the job types of this phase.
func ValidateJobType(t domain.JobType) *Error {
	if t == "" {
		return invalid("type: required (supported: %s)", supportedList())
	}
	for _, s := range SupportedJobTypes {
		if t == s {
			return nil
		}
	}
	if t == domain.JobRestore {
		// A restore needs options (snapshot, paths, destination).
		return invalid("type: restore jobs are created with POST /api/v1/sites/{site_uuid}/restores, which takes the snapshot, paths and destination")
	}
	return invalid("type: unsupported job type %q (supported: %s)", clip(string(t)), supportedList())
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func supportedList() string {
	names := make([]string, len(SupportedJobTypes))
	for i, t := range SupportedJobTypes {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}
