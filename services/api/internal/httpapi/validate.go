package httpapi

import (
	"fmt"
	"path"
	"strings"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/sitecheck"
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
	// Policy replaces the site's whole policy (policy.go); {} clears it,
	// null or absent leaves it.
	Policy *domain.SitePolicy `json:"policy"`
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
	// Force starts the job inside one of the site's maintenance windows.
	Force bool `json:"force"`
}

// Limits.
const (
	maxPathLen      = sitecheck.MaxPathLen
	maxExcludes     = 1000
	maxTargets      = 1000
	DefaultSSHPort  = 22
	DefaultJobLimit = 50
	MaxJobLimit     = 500
)

// SupportedJobTypes are the job types the API accepts in this phase.
var SupportedJobTypes = []domain.JobType{domain.JobPreflight, domain.JobBackup, domain.JobRetention, domain.JobVerify}

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
// key form) by sitecheck.Validate, the rules the puller checks the stored
// site against again. Errors name the field.
func ValidateSite(s *domain.Site) *Error {
	if err := sitecheck.Validate(s); err != nil {
		return invalid("%s", err.Error())
	}
	return nil
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

// reason is err's message without the leading "sentinel: ", for messages
// that already name the field.
func reason(err, sentinel error) string { return sitecheck.Reason(err, sentinel) }
