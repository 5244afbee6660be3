package remote

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RsyncPush describes pushing local files and folders (a restore) back
// to a folder on the edge host over the site's pinned ssh.
type RsyncPush struct {
	SSH SSHConfig
	// LocalPaths are copied as themselves (no trailing slash): each one
	// lands at RemoteDir/<its base name>. Absolute, so a ':' in a name is
	// never read as a remote spec.
	LocalPaths []string
	// RemoteDir is the destination folder on the edge host (absolute).
	RemoteDir string
	// DryRun reports what would change (--dry-run) without writing.
	DryRun bool
	// BWLimitKiBps caps bandwidth (rsync's KiB/s); 0 means no cap.
	BWLimitKiBps int
	// IOTimeout makes rsync give up when no data moves for this long.
	IOTimeout time.Duration
}

// RsyncPushArgs returns the argv after "rsync" that copies LocalPaths
// into RemoteDir on the site:
//
//   - -a keeps times, modes and symlinks; --numeric-ids keeps owners as
//     the numbers they had on the site (applied when the remote user may);
//   - --itemize-changes prints one line per changed entry, the list a dry
//     run reports;
//   - no --delete: a restore adds and replaces, it never removes what is
//     already in the destination;
//   - --protect-args keeps any path whole, whatever the remote shell.
func RsyncPushArgs(p RsyncPush) ([]string, error) {
	e, err := SSHCommandForRsync(p.SSH)
	if err != nil {
		return nil, err
	}
	host, err := checkHost(p.SSH.Host)
	if err != nil {
		return nil, err
	}
	if err := ValidatePath(p.RemoteDir); err != nil {
		return nil, fmt.Errorf("rsync push destination: %w", err)
	}
	if len(p.LocalPaths) == 0 {
		return nil, fmt.Errorf("%w: nothing to push", ErrInvalidConfig)
	}
	if p.BWLimitKiBps < 0 {
		return nil, fmt.Errorf("%w: negative bandwidth limit", ErrInvalidConfig)
	}
	args := []string{"-a", "--numeric-ids", "--itemize-changes", "--protect-args", "-e", e}
	if p.DryRun {
		args = append(args, "--dry-run")
	}
	if p.IOTimeout > 0 {
		args = append(args, "--timeout="+strconv.Itoa(seconds(p.IOTimeout)))
	}
	if p.BWLimitKiBps > 0 {
		args = append(args, "--bwlimit="+strconv.Itoa(p.BWLimitKiBps))
	}
	args = append(args, "--")
	for _, lp := range p.LocalPaths {
		if err := ValidatePath(lp); err != nil {
			return nil, fmt.Errorf("rsync push source: %w", err)
		}
		lp = strings.TrimRight(lp, "/")
		if lp == "" {
			return nil, fmt.Errorf("%w: cannot push the local root folder", ErrInvalidPath)
		}
		args = append(args, lp)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return append(args, host+":"+dirSlash(p.RemoteDir)), nil
}

// RsyncLocal describes a restore into a folder on this host: restic
// restored the snapshot's entries into a private folder, and rsync puts
// each one into place.
type RsyncLocal struct {
	// Sources are copied as themselves (no trailing slash): each one
	// lands at Dest/<its base name>. Absolute.
	Sources []string
	// Dest is the destination folder (absolute).
	Dest string
	// DryRun reports what would change (--dry-run) without writing.
	DryRun bool
}

// RsyncLocalArgs returns the argv after "rsync" that copies each source
// into Dest on this host:
//
//   - -rlt keeps times and symlinks but not owners or modes, and
//     --chmod=D0700,F0600 makes the restored files private: they belong
//     to Satoru's user, not to whoever owned them on the site;
//   - --itemize-changes prints one line per changed entry, the list a dry
//     run reports;
//   - no --delete: a restore adds and replaces, it never removes what is
//     already in the destination; no --keep-dirlinks, so a symlink in the
//     way is replaced, not followed.
func RsyncLocalArgs(p RsyncLocal) ([]string, error) {
	if err := ValidatePath(p.Dest); err != nil {
		return nil, fmt.Errorf("rsync restore destination: %w", err)
	}
	if len(p.Sources) == 0 {
		return nil, fmt.Errorf("%w: nothing to restore", ErrInvalidConfig)
	}
	args := []string{"-rlt", "--chmod=D0700,F0600", "--itemize-changes"}
	if p.DryRun {
		args = append(args, "--dry-run")
	}
	args = append(args, "--")
	for _, s := range p.Sources {
		if err := ValidatePath(s); err != nil {
			return nil, fmt.Errorf("rsync restore source: %w", err)
		}
		s = strings.TrimRight(s, "/")
		if s == "" {
			return nil, fmt.Errorf("%w: cannot restore the root folder as a source", ErrInvalidPath)
		}
		args = append(args, s)
	}
	return append(args, dirSlash(p.Dest)), nil
}

// Exit codes of RestoreDirCommand's script.
const (
	RestoreDirNotDir   = 3 // the destination exists and is not a folder
	RestoreDirNotEmpty = 4 // the destination folder has entries (and no overwrite)
	RestoreDirUnread   = 5 // the destination folder cannot be read
)

// restoreDirScript checks a restore destination on the site and, unless
// this is a dry run, creates it 0700. Arguments: $1 folder, $2 "overwrite"
// or "", $3 "dry" or "". It says on stderr why it refuses.
const restoreDirScript = `d=$1
if [ -e "$d" ] || [ -L "$d" ]; then
  if [ ! -d "$d" ]; then echo "destination $d exists and is not a folder" >&2; exit 3; fi
  if [ ! -r "$d" ] || [ ! -x "$d" ]; then echo "destination $d cannot be read" >&2; exit 5; fi
  if [ "$2" != overwrite ] && [ -n "$(ls -A -- "$d")" ]; then echo "destination $d is not empty" >&2; exit 4; fi
fi
if [ "$3" != dry ]; then mkdir -p -m 0700 -- "$d" || exit 1; fi
echo ok`

// RestoreDirCommand is the remote command line that checks (and, unless
// dryRun, creates) a restore destination folder on the site. The folder
// travels as a positional argument of sh -c, single-quoted, never spliced
// into the script. Exit codes: RestoreDirNotDir, RestoreDirNotEmpty,
// RestoreDirUnread.
func RestoreDirCommand(dir string, overwrite, dryRun bool) (string, error) {
	if err := ValidatePath(dir); err != nil {
		return "", err
	}
	ow, dry := "", ""
	if overwrite {
		ow = "overwrite"
	}
	if dryRun {
		dry = "dry"
	}
	return CommandLine("sh", "-c", restoreDirScript, "sh", dir, ow, dry), nil
}
