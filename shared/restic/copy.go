package restic

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/satoru/satoru/shared/proc"
)

// CopyResult is what one `restic copy` did, read from its verbose output.
// restic 0.18 prints no byte count for copy (its progress counts packs),
// so there is none here; callers that need one can sum the copied source
// snapshots' Summary.DataAddedPacked.
type CopyResult struct {
	// Copied are the snapshots this run copied, in restic's order.
	Copied []CopiedSnapshot
	// Skipped are the source snapshots (short ids) the destination
	// already held a copy of.
	Skipped []string
}

// CopiedSnapshot is one copied snapshot: short ids as restic prints them.
type CopiedSnapshot struct {
	// Source is the snapshot's id in the source repository.
	Source string
	// Target is the new snapshot's id in the destination; its Original
	// names Source.
	Target string
}

// Copy copies snapshots from the repository from into r with `restic
// copy`: all of from's snapshots when no ids are given, else those. r is
// the destination (restic 0.18's main repository); from is given by
// --from-repo, with its password in RESTIC_FROM_PASSWORD or
// RESTIC_FROM_PASSWORD_FILE. Snapshots r already holds are skipped, so a
// copy repeated after a failure carries on. r.RetryLock applies to both
// repositories.
//
// restic copy runs with one environment: r.Env and from.Env are merged,
// and a variable both need with different values is an error (two s3:
// repositories with different keys cannot be copied between directly).
// On failure the result lists what was copied before the error.
func (r Repo) Copy(ctx context.Context, from Repo, snapshotIDs ...string) (CopyResult, error) {
	for _, id := range snapshotIDs {
		if id == "" || strings.ContainsAny(id, " \t\n") {
			return CopyResult{}, fmt.Errorf("restic copy: invalid snapshot id %q", id)
		}
	}
	dst, fromArgs, err := r.withSource(from)
	if err != nil {
		return CopyResult{}, fmt.Errorf("restic copy: %w", err)
	}
	p := &copyParser{}
	lw := &lineWriter{max: maxLine, fn: p.line}
	res, err := dst.runRaw(ctx, proc.Cmd{Step: "copy", Args: CopyArgs(fromArgs, snapshotIDs...), Stdout: lw}, true)
	lw.Flush()
	out := CopyResult{Copied: p.copied, Skipped: p.skipped}
	if err != nil {
		return out, dst.wrap("copy", res, err)
	}
	return out, nil
}

// CopyArgs is the argv of Copy after the global flags: fromArgs name the
// source (FromArgs), -v makes restic print each snapshot it copies and
// skips, and the ids come after "--" so none can become an option.
func CopyArgs(fromArgs []string, snapshotIDs ...string) []string {
	args := append([]string{"copy", "-v"}, fromArgs...)
	if len(snapshotIDs) > 0 {
		args = append(append(args, "--"), snapshotIDs...)
	}
	return args
}

// InitCopyChunker creates r as a copy target of from: `restic init
// --copy-chunker-params` takes from's chunker parameters, so data copied
// from it deduplicates against data already in r.
func (r Repo) InitCopyChunker(ctx context.Context, from Repo) error {
	dst, fromArgs, err := r.withSource(from)
	if err != nil {
		return fmt.Errorf("restic init: %w", err)
	}
	return dst.Init(ctx, InitCopyChunkerArgs(fromArgs)...)
}

// EnsureCopyTarget initialises r as a copy target of from (see
// InitCopyChunker) unless r exists; created reports whether it did. Like
// EnsureInit it first reads r's config without a lock, which also checks
// r's password and the backend's credentials.
func (r Repo) EnsureCopyTarget(ctx context.Context, from Repo) (created bool, err error) {
	err = r.Open(ctx)
	if !errors.Is(err, ErrNoRepository) {
		return false, err
	}
	if err := r.InitCopyChunker(ctx, from); err != nil {
		// Another worker may have initialised it in between.
		if r.Open(ctx) == nil {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Exists reports whether there is a repository at r's location. It reads
// the config without a lock (checking the password too): a wrong password
// or an unreachable backend is an error, not false.
func (r Repo) Exists(ctx context.Context) (bool, error) {
	err := r.Open(ctx)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNoRepository):
		return false, nil
	}
	return false, err
}

// InitCopyChunkerArgs are the arguments InitCopyChunker passes to Init.
func InitCopyChunkerArgs(fromArgs []string) []string {
	return append([]string{"--copy-chunker-params"}, fromArgs...)
}

// withSource returns r with from's location and secrets added to its
// environment, and the arguments that name from.
func (r Repo) withSource(from Repo) (Repo, []string, error) {
	args, env, err := FromRepo(from)
	if err != nil {
		return Repo{}, nil, err
	}
	merged, err := mergeEnv(env, r.Env)
	if err != nil {
		return Repo{}, nil, err
	}
	r.Env = merged
	return r, args, nil
}

// FromRepo is how a command that reads a second repository (copy, init
// --copy-chunker-params) is told about from: the arguments and the
// environment. The password goes in RESTIC_FROM_PASSWORD or
// RESTIC_FROM_PASSWORD_FILE, never argv. A plain location goes in argv as
// --from-repo (so errors can name it); one that may carry credentials
// (user:password@host) goes in RESTIC_FROM_REPOSITORY instead. The other
// RESTIC_FROM_* variables restic reads are set empty so a stray one in
// the inherited environment cannot win. from.Env is appended as is.
func FromRepo(from Repo) (args, env []string, err error) {
	if from.Repository == "" {
		return nil, nil, errors.New("no source repository given")
	}
	env = []string{"RESTIC_FROM_REPOSITORY_FILE=", "RESTIC_FROM_PASSWORD_COMMAND=", "RESTIC_FROM_KEY_HINT="}
	if strings.Contains(from.Repository, "@") {
		env = append(env, "RESTIC_FROM_REPOSITORY="+from.Repository)
	} else {
		env = append(env, "RESTIC_FROM_REPOSITORY=")
		args = []string{"--from-repo", from.Repository}
	}
	switch {
	case from.Password != "" && from.PasswordFile != "":
		return nil, nil, errors.New("source repository: set Password or PasswordFile, not both")
	case from.Password != "":
		env = append(env, "RESTIC_FROM_PASSWORD="+from.Password, "RESTIC_FROM_PASSWORD_FILE=")
	case from.PasswordFile != "":
		env = append(env, "RESTIC_FROM_PASSWORD_FILE="+from.PasswordFile, "RESTIC_FROM_PASSWORD=")
	default:
		return nil, nil, errors.New("source repository: no password given")
	}
	return args, append(env, from.Env...), nil
}

// mergeEnv joins two environments for one process. A key both set to
// different values is an error naming only the key.
func mergeEnv(a, b []string) ([]string, error) {
	seen := map[string]string{}
	for _, kv := range a {
		k, v, _ := strings.Cut(kv, "=")
		seen[k] = v
	}
	for _, kv := range b {
		k, v, _ := strings.Cut(kv, "=")
		if old, ok := seen[k]; ok && old != v && !strings.HasPrefix(k, "RESTIC_FROM_") {
			return nil, fmt.Errorf("source and destination need different values for %s, and restic copy runs with one environment", k)
		}
	}
	return append(append([]string(nil), a...), b...), nil
}

// copyParser reads `restic copy -v` stdout:
//
//	snapshot 694895b7 of [/data] at 2026-01-02 ... by root@host
//	  copy started, this may take a while...
//	[0:00] 100.00%  3 / 3 packs copied
//	snapshot 1c06a86e saved
//
//	snapshot a07c0729 of [/data] at ...
//	skipping source snapshot a07c0729, was already copied to snapshot 1e6b9761
type copyParser struct {
	source  string // the snapshot being copied
	copied  []CopiedSnapshot
	skipped []string
}

var (
	copySourceRe = regexp.MustCompile(`^snapshot ([0-9a-f]{8,64}) of `)
	copySavedRe  = regexp.MustCompile(`^snapshot ([0-9a-f]{8,64}) saved$`)
	copySkipRe   = regexp.MustCompile(`^skipping source snapshot ([0-9a-f]{8,64}), was already copied to snapshot ([0-9a-f]{8,64})$`)
)

func (p *copyParser) line(b []byte, overlong bool) {
	if overlong {
		return
	}
	s := strings.TrimSpace(string(b))
	if m := copySourceRe.FindStringSubmatch(s); m != nil {
		p.source = m[1]
		return
	}
	if m := copySavedRe.FindStringSubmatch(s); m != nil {
		p.copied = append(p.copied, CopiedSnapshot{Source: p.source, Target: m[1]})
		p.source = ""
		return
	}
	if m := copySkipRe.FindStringSubmatch(s); m != nil {
		p.skipped = append(p.skipped, m[1])
		p.source = ""
	}
}
