package remote

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// RsyncPull describes pulling one remote directory into its staging
// folder. The staging folder persists between jobs, so each pull moves
// only what changed.
type RsyncPull struct {
	SSH SSHConfig
	// RemoteDir is the target directory on the edge host (absolute).
	RemoteDir string
	// LocalDir is the staging folder (absolute: a relative path with a
	// ':' would be read by rsync as a remote spec).
	LocalDir string
	// Excludes are rsync --exclude patterns, relative to RemoteDir.
	Excludes []string
	// BWLimitKiBps caps bandwidth in rsync's unit, 1024 bytes per second;
	// 0 means no cap.
	BWLimitKiBps int
	// IOTimeout makes rsync give up when no data moves for this long;
	// 0 leaves it to ssh's keepalive.
	IOTimeout time.Duration
	// TempDir, when set, is where rsync writes the file it is receiving
	// (--temp-dir; absolute, on LocalDir's filesystem so the finished
	// file is renamed, not copied). Outside LocalDir, a receiver killed
	// mid-file leaves its temp file there, not among the site's files.
	TempDir string
	// First marks a pull into an empty staging folder: there is no
	// previous copy to keep in place, so --delay-updates, --delete-delay
	// and RsyncPartialDir are left out. They cost rsync 3.4+ several
	// checked path walks per received file (some 200,000 extra opens for
	// 5,000 files), which doubled a first pull here; a first pull cut
	// short is undone by emptying the folder again (services/puller).
	First bool
}

// RsyncPartialDir is the folder, inside each folder of the staging copy,
// where --delay-updates holds received files until the whole transfer is
// through (rsync's own default is ".~tmp~"). rsync leaves it behind only
// when a transfer stops early, and never copies a folder of that name
// from the site, so one found in staging is always debris: the pull
// removes it and the snapshotter excludes it. The name is Satoru's own so
// that a site's ".~tmp~" (a file of the partial folder's name would fail
// to land) is backed up like any other.
const RsyncPartialDir = ".satoru-partial"

// ValidateExclude checks an rsync --exclude pattern: it must be non-empty
// and free of NUL (which cannot cross argv) and of line breaks (which
// break rsync's line-based lists).
func ValidateExclude(x string) error {
	if x == "" || strings.ContainsAny(x, "\x00\n\r") {
		return fmt.Errorf("%w: exclude pattern %q is empty or has a NUL or line break", ErrInvalidConfig, x)
	}
	return nil
}

// RsyncPullArgs returns the argv after "rsync" that mirrors RemoteDir's
// contents into LocalDir:
//
//   - -a keeps times, modes and symlinks, so unchanged files are skipped;
//   - --delete and --delete-excluded make staging an exact mirror, so a
//     snapshot never holds a file the site deleted or an operator excluded;
//   - --numeric-ids keeps owners as numbers (names differ between hosts);
//   - --stats prints the summary ParseRsyncStats reads;
//   - --protect-args sends paths inside rsync's protocol instead of through
//     the remote shell, so any path survives, whatever the rsync versions;
//   - --delay-updates (into RsyncPartialDir) and --delete-delay keep the
//     previous copy's files in place until the transfer is through: new
//     and changed files wait in RsyncPartialDir, deletions are done last,
//     so a transfer cut short changes no file and deletes nothing. New
//     folders and symlinks, symlink retargets, type changes and folder
//     times still apply as rsync meets them. With nothing changed it
//     costs nothing. Not for a First pull (nothing to keep).
func RsyncPullArgs(p RsyncPull) ([]string, error) {
	e, err := SSHCommandForRsync(p.SSH)
	if err != nil {
		return nil, err
	}
	host, err := checkHost(p.SSH.Host)
	if err != nil {
		return nil, err
	}
	if err := ValidatePath(p.RemoteDir); err != nil {
		return nil, fmt.Errorf("rsync remote dir: %w", err)
	}
	if err := ValidatePath(p.LocalDir); err != nil {
		return nil, fmt.Errorf("rsync staging dir: %w", err)
	}
	if p.BWLimitKiBps < 0 {
		return nil, fmt.Errorf("%w: negative bandwidth limit", ErrInvalidConfig)
	}
	args := []string{"-a", "--delete", "--delete-excluded", "--numeric-ids", "--stats", "--protect-args"}
	if !p.First {
		args = append(args, "--delay-updates", "--delete-delay", "--partial-dir="+RsyncPartialDir)
	}
	args = append(args, "-e", e)
	if p.TempDir != "" {
		if err := ValidatePath(p.TempDir); err != nil {
			return nil, fmt.Errorf("rsync temp dir: %w", err)
		}
		args = append(args, "--temp-dir="+p.TempDir)
	}
	if p.IOTimeout > 0 {
		args = append(args, "--timeout="+strconv.Itoa(seconds(p.IOTimeout)))
	}
	if p.BWLimitKiBps > 0 {
		args = append(args, "--bwlimit="+strconv.Itoa(p.BWLimitKiBps))
	}
	for _, x := range p.Excludes {
		if err := ValidateExclude(x); err != nil {
			return nil, err
		}
		args = append(args, "--exclude="+x)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6, as rsync expects it before the ':'
	}
	// Trailing slashes: copy the directory's contents, not the directory.
	return append(args, "--", host+":"+dirSlash(p.RemoteDir), dirSlash(p.LocalDir)), nil
}

func dirSlash(p string) string {
	return strings.TrimRight(p, "/") + "/"
}

// RsyncStats is rsync's --stats summary.
type RsyncStats struct {
	Files            int64 // every entry in the transfer: files, dirs, links
	RegularFiles     int64
	Dirs             int64
	CreatedFiles     int64
	DeletedFiles     int64
	TransferredFiles int64 // regular files whose data was sent
	TotalSize        int64 // bytes of all regular files, i.e. the target's size
	TransferredSize  int64 // bytes of the files that were sent
	BytesSent        int64
	BytesReceived    int64
}

// ErrNoRsyncStats means rsync's output has no --stats summary.
var ErrNoRsyncStats = errors.New("no rsync stats in output")

// ParseRsyncStats reads the --stats block of rsync's stdout (rsync 3.x;
// numbers may carry thousands separators). Lines it does not know are
// ignored; the file count and total size are required.
func ParseRsyncStats(out []byte) (RsyncStats, error) {
	var s RsyncStats
	var haveFiles, haveSize bool
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ": ")
		if !ok {
			continue
		}
		n, rest, err := leadingInt(val)
		if err != nil {
			continue
		}
		switch key {
		case "Number of files":
			s.Files, haveFiles = n, true
			s.RegularFiles, s.Dirs = breakdown(rest, "reg"), breakdown(rest, "dir")
		case "Number of created files":
			s.CreatedFiles = n
		case "Number of deleted files":
			s.DeletedFiles = n
		case "Number of regular files transferred", "Number of files transferred":
			s.TransferredFiles = n
		case "Total file size":
			s.TotalSize, haveSize = n, true
		case "Total transferred file size":
			s.TransferredSize = n
		case "Total bytes sent":
			s.BytesSent = n
		case "Total bytes received":
			s.BytesReceived = n
		}
	}
	if !haveFiles || !haveSize {
		return s, ErrNoRsyncStats
	}
	return s, nil
}

// leadingInt parses "1,234 bytes" into 1234 and the rest.
func leadingInt(s string) (int64, string, error) {
	s = strings.TrimSpace(s)
	end := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != ',' })
	if end < 0 {
		end = len(s)
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(s[:end], ",", ""), 10, 64)
	return n, s[end:], err
}

// breakdown finds "name: N" inside rsync's "(reg: 2, dir: 1, link: 3)".
func breakdown(rest, name string) int64 {
	rest = strings.Trim(strings.TrimSpace(rest), "()")
	for _, part := range strings.Split(rest, ", ") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), ": "); ok && k == name {
			n, _, err := leadingInt(v)
			if err == nil {
				return n
			}
		}
	}
	return 0
}
