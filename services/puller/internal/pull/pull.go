// Package pull copies a site's targets into persistent staging, one
// folder per target (<staging_root>/<site_uuid>/<target_hash>/), so each
// pull moves only what changed and the snapshotter backs up a stable tree:
// directories with rsync over ssh, SQLite databases as a consistent remote
// dump that is verified locally before it replaces the previous copy.
// Either way a failed pull leaves the last good copy in staging and no
// debris (see leftovers.go for directories).
//
// Every function here returns a Result rather than an error: a failed
// target is an outcome to record (the site job goes on with its other
// targets), and its Error names the step, the exit code and the remote's
// trimmed stderr.
package pull

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
)

// DefaultProgressEvery is the progress interval when Config leaves it 0.
const DefaultProgressEvery = 2 * time.Second

// MaxFailedPaths caps Result.FailedPaths: enough to point at the problem,
// small enough for a job event.
const MaxFailedPaths = 20

// Step names, the first word of a failed Result's Error.
const (
	StepStaging    = "staging"
	StepRsync      = "rsync"
	StepDump       = "dump on remote"
	StepTransfer   = "transfer"
	StepDecompress = "decompress"
	StepIntegrity  = "integrity_check"
	StepPublish    = "publish"
)

// Config is how one site's targets are pulled.
type Config struct {
	// SSH reaches the site, including ControlPath when the site job holds
	// a master connection open.
	SSH remote.SSHConfig
	// SSHPath and RsyncPath are the local programs; empty means "ssh" and
	// "rsync" from PATH.
	SSHPath, RsyncPath string
	// StagingRoot holds every site's staging folders.
	StagingRoot string
	// RemoteTmpDir is where the SQLite dump writes its temp copy on the
	// site (removed on success and failure).
	RemoteTmpDir string
	// BandwidthLimitKbps caps a pull in KiB per second, rsync's --bwlimit
	// unit (the one the API validates the site's bandwidth_limit_kbps
	// in); 0 means no cap. SQLite dumps are paced to it locally.
	BandwidthLimitKbps int
	// IOTimeout makes rsync give up when no data moves for this long
	// (ssh's keepalive bounds a dead connection for SQLite dumps).
	IOTimeout time.Duration
	// TargetTimeout bounds one target, all steps included; 0 means none.
	TargetTimeout time.Duration
	// ProgressEvery is the least time between two progress callbacks;
	// 0 means DefaultProgressEvery.
	ProgressEvery time.Duration
}

func (c Config) progressEvery() time.Duration {
	if c.ProgressEvery > 0 {
		return c.ProgressEvery
	}
	return DefaultProgressEvery
}

// Progress is a running pull's state, reported at most every
// Config.ProgressEvery. The callback runs on the goroutine that reads the
// transfer's output, never twice at once; a slow callback slows the
// transfer, so it should hand the value off (e.g. to a heartbeat) and
// return.
type Progress struct {
	TargetHash string
	BytesDone  int64
	// Percent is rsync's estimate, 0-100 (it can say 99 until the end);
	// -1 when unknown (a SQLite dump's compressed size is not known ahead).
	Percent int
	Rate    string // e.g. "12.34MB/s"
}

// Result is one target's pull.
type Result struct {
	TargetHash, Path string
	Mode             domain.TargetMode
	// Status is success, warning (rsync exit 23: the rest was pulled) or
	// failed.
	Status domain.Health
	// Note is information on a success, e.g. files that vanished.
	Note string
	// Error is the reason for a warning or failure: the step, the exit
	// code and the trimmed stderr.
	Error string
	// FailedPaths are the paths rsync could not transfer (exit 23),
	// relative to the target where rsync named them under it, at most
	// MaxFailedPaths.
	FailedPaths []string
	// Transient marks a failure that a later attempt may not meet: the
	// connection was refused, lost or stalled (remote.IsTransient).
	Transient bool
	// Files and Bytes describe the target now in staging (regular files
	// and their total size); Transferred is what this run received.
	Files, Bytes, Transferred int64
	StagingPath               string
	Duration                  time.Duration
	// Cleanups are the leftovers the pull removed from staging: an
	// interrupted earlier pull's before it ran, its own after a failure.
	Cleanups []Cleanup
}

func (r *Result) fail(format string, a ...any) {
	r.Status = domain.HealthFailed
	r.Error = fmt.Sprintf(format, a...)
}

// StagingPath is a target's staging folder: <root>/<site>/<hash>.
func StagingPath(root, siteUUID, targetHash string) string {
	return filepath.Join(root, siteUUID, targetHash)
}

// prepareStaging creates the target's staging folder and returns its
// absolute path. Folders are 0700: the root when it has to be created
// (an existing root keeps the operator's mode), and always the site and
// target folders below it, which Satoru owns. A symlink in their place is
// refused, since rsync would follow it out of staging.
func prepareStaging(root, siteUUID, targetHash string) (string, error) {
	if root == "" {
		return "", errors.New("staging root is not set")
	}
	if err := checkComponent("site uuid", siteUUID); err != nil {
		return "", err
	}
	if err := checkComponent("target hash", targetHash); err != nil {
		return "", err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("staging root %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", err
	}
	dir := abs
	for _, c := range []string{siteUUID, targetHash} {
		dir = filepath.Join(dir, c)
		if err := ensureDir(dir); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// checkComponent keeps an id from escaping staging ("..", "a/b").
func checkComponent(what, v string) error {
	if v == "" || v == "." || v == ".." || strings.ContainsAny(v, "/\x00\n\r") {
		return fmt.Errorf("%s %q cannot name a staging folder", what, v)
	}
	return nil
}

func ensureDir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory (%s)", dir, fi.Mode().Type())
	}
	if fi.Mode().Perm() != 0o700 {
		return os.Chmod(dir, 0o700)
	}
	return nil
}

// errTargetTimeout marks Config.TargetTimeout running out, told apart
// from the caller's ctx ending.
var errTargetTimeout = errors.New("target timeout")

// interrupted describes a step that ctx ended: canceled by the caller, or
// out of Config.TargetTimeout. It returns "" while ctx is live.
func interrupted(ctx context.Context, timeout time.Duration) string {
	if ctx.Err() == nil {
		return ""
	}
	if context.Cause(ctx) == errTargetTimeout {
		return fmt.Sprintf("timed out after %s (target timeout)", timeout)
	}
	return "canceled"
}
