package pull

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/remote"
)

// A directory pull keeps the previous copy in place until rsync is
// through (remote.RsyncPullArgs: --delay-updates, --delete-delay). What a
// pull that stops early leaves behind is removed right after it, so
// staging holds the last good copy again and no debris eats the staging
// disk's headroom:
//
//   - the RsyncPartialDir folders holding the files received so far;
//   - rsync's temp files, kept out of staging in the pull's work folder
//     (--temp-dir), so a site file that merely looks like one is never
//     touched;
//   - the folders, symlinks and special files rsync created along the
//     way (it does not delay those). Two records find them: the pull's
//     start marker in the work folder, after which they were born
//     (statx birth time), and a journal of the ones rsync names in its
//     itemized output, written as they come. The birth times catch what
//     the journal misses: rsync makes a run's new folders before it
//     names them (as it descends into each), and a killed Satoru may not
//     have read rsync's last lines. The journal serves filesystems that
//     record no birth time.
//
// A first pull (into an empty folder) keeps nothing in place: it runs
// without delayed updates and temp folder (remote.RsyncPull.First), and
// its work folder's "first" marker says that undoing it means emptying
// the folder again.
//
// The work folder, <staging_root>/.pull/<site_uuid>/<target_hash>/, lives
// outside the snapshotted <staging_root>/<site_uuid>/ and exists only while
// a pull runs or its leftovers wait for removal: finding it when a pull
// starts means an earlier one was cut short without cleanup (Satoru
// killed), and its leftovers go first.
//
// Not undone, as the old entry is gone by the time rsync names the new
// one: a symlink the site retargeted and an entry whose type changed are
// missing afterwards (their new versions are removed as the pull's own),
// and folder times may be the site's newer ones. If rsync is stopped in
// its last step, the renames of the waiting files into place, some files
// may be new. The snapshotter leaves a failed target out of the snapshot,
// and the next good pull brings all of it.

// CleanupTimeout bounds one removal of leftovers, however it was started
// (a canceled or timed-out pull included). What it does not finish the
// next pull of the target finishes.
const CleanupTimeout = 2 * time.Minute

// workRoot is the folder under the staging root holding the work folders
// of running pulls.
const workRoot = ".pull"

// Names inside a work folder.
const (
	workTmp     = "tmp"     // rsync --temp-dir
	workJournal = "created" // what rsync created, one itemized entry a line
	workStarted = "started" // born when the pull started
	workFirst   = "first"   // the pull started into an empty staging folder
)

// Cleanup is one removal of pull leftovers from a target's staging, for
// the job's events.
type Cleanup struct {
	TargetHash string
	Message    string
	// Failed means not everything could be removed; the next pull of the
	// target tries again before it starts.
	Failed bool
}

// workPath is a target's work folder.
func workPath(root, siteUUID, targetHash string) string {
	return filepath.Join(root, workRoot, siteUUID, targetHash)
}

// prepareWork creates the work folder, its temp folder, the start marker
// (and the first-pull marker when first) and an empty journal
// (0700/0600), returning the open journal.
func prepareWork(root, siteUUID, targetHash string, first bool) (*journal, string, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, "", err
	}
	dir := abs
	for _, c := range []string{workRoot, siteUUID, targetHash, workTmp} {
		dir = filepath.Join(dir, c)
		if err := ensureDir(dir); err != nil {
			return nil, "", fmt.Errorf("work folder: %w", err)
		}
	}
	work := filepath.Dir(dir)
	if err := markStart(filepath.Join(work, workStarted)); err != nil {
		return nil, "", fmt.Errorf("work folder: %w", err)
	}
	if first {
		if err := createEmpty(filepath.Join(work, workFirst)); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, "", fmt.Errorf("work folder: %w", err)
		}
	}
	f, err := os.OpenFile(filepath.Join(work, workJournal), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, "", fmt.Errorf("work folder: %w", err)
	}
	return &journal{f: f}, work, nil
}

// markStart creates the start marker at path. Everything in staging
// before it is born no later than the marker; what rsync creates is born
// later, since rsync first starts, connects and exchanges the file list
// (tens of ms, far more than the few ms the kernel's file clock steps
// by). Should an entry still share the marker's step, it is kept: the
// sweep never removes what was there before.
func markStart(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return createEmpty(path)
}

func createEmpty(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// birthTime is path's birth time (statx, not following a symlink); ok is
// false when the filesystem does not record it.
func birthTime(path string) (t time.Time, ok bool, err error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &st); err != nil {
		return t, false, &fs.PathError{Op: "statx", Path: path, Err: err}
	}
	if st.Mask&unix.STATX_BTIME == 0 {
		return t, false, nil
	}
	return time.Unix(st.Btime.Sec, int64(st.Btime.Nsec)), true, nil
}

// journal records what rsync created, as rsync itemizes it, so a failed
// pull can remove it. Each entry is written at once (no buffer), so a
// crash loses none.
type journal struct {
	f   *os.File
	err error
}

// add records one created entry: its type (rsync's itemize letter) and
// rsync's escaped name, with " -> target" for a symlink.
func (j *journal) add(kind byte, name []byte) {
	if j == nil || j.err != nil {
		return
	}
	line := make([]byte, 0, len(name)+3)
	line = append(line, kind, ' ')
	line = append(append(line, name...), '\n')
	if _, err := j.f.Write(line); err != nil {
		j.err = err
	}
}

func (j *journal) close() error {
	if err := j.f.Close(); err != nil && j.err == nil {
		j.err = err
	}
	return j.err
}

// itemized reads one line of rsync's --itemize-changes output ("%i %n%L").
// item reports whether rec is one; kind and name are set for an entry rsync
// created that it does not delay: a folder ('d'), symlink ('L'), device
// ('D') or special file ('S'). New regular files wait in RsyncPartialDir
// and are not reported.
func itemized(rec []byte) (kind byte, name []byte, item bool) {
	if len(rec) < 13 || rec[11] != ' ' || !strings.ContainsRune("<>ch.*", rune(rec[0])) || !strings.ContainsRune("fdLDS", rune(rec[1])) {
		return 0, nil, false
	}
	if rec[0] == 'c' && rec[1] != 'f' && string(rec[2:11]) == "+++++++++" {
		return rec[1], rec[12:], true
	}
	return 0, nil, true
}

// unescapeRsync undoes rsync's escaping of names in its output: a byte it
// cannot print, and a backslash before '#', is written "\#ooo" (octal).
func unescapeRsync(s string) string {
	if !strings.Contains(s, `\#`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 < len(s) && s[i+1] == '#' {
			if n, err := strconv.ParseUint(s[i+2:i+5], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 4
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removed counts what a cleanup took out of staging and the work folder.
type removed struct {
	partialDirs, partialFiles int
	partialBytes              int64
	tempFiles                 int
	tempBytes                 int64
	created                   int
	// firstFiles and firstBytes: what an unfinished first pull had
	// received (the folder was empty before it).
	firstFiles int
	firstBytes int64
	first      bool // the staging folder was emptied: it held no earlier pull
}

func (n removed) String() string {
	var parts []string
	if n.partialDirs > 0 {
		parts = append(parts, fmt.Sprintf("%s holding %s (%d bytes)", plural(n.partialDirs, remote.RsyncPartialDir+" folder"),
			plural(n.partialFiles, "received file"), n.partialBytes))
	}
	if n.tempFiles > 0 {
		parts = append(parts, fmt.Sprintf("%s (%d bytes)", plural(n.tempFiles, "rsync temp file"), n.tempBytes))
	}
	if n.firstFiles > 0 || n.firstBytes > 0 {
		parts = append(parts, fmt.Sprintf("%s (%d bytes) of an unfinished first pull", plural(n.firstFiles, "file"), n.firstBytes))
	}
	switch {
	case n.created == 1:
		parts = append(parts, "1 folder or link the pull had created")
	case n.created > 1:
		parts = append(parts, fmt.Sprintf("%d folders and links the pull had created", n.created))
	}
	if len(parts) == 0 {
		return "nothing was left"
	}
	return "removed " + strings.Join(parts, ", ")
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// cleanLeftovers removes what a pull left: every RsyncPartialDir folder in
// staging; with rollback (a failed pull) the entries the journal names and
// those born after the pull's start marker; then the work folder with
// rsync's temp files. It is bounded by CleanupTimeout,
// also when ctx has ended (the pull's own cancel or timeout is what left
// the debris). The work folder, and with it the journal, goes only when
// everything else went, so an unfinished cleanup is resumed by the next
// pull.
func cleanLeftovers(ctx context.Context, staging, work string, rollback bool) (removed, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CleanupTimeout)
	defer cancel()
	var n removed
	root, err := os.OpenRoot(staging)
	if err != nil {
		return n, fmt.Errorf("open staging %s: %w", staging, err)
	}
	defer root.Close()
	if _, err := os.Lstat(filepath.Join(work, workFirst)); err == nil && rollback {
		// The folder was empty when the pull started: all of it is the
		// pull's, rsync's temp files included. Empty it again.
		n.first = true
		if err := emptyFolder(ctx, root, &n); err != nil {
			return n, err
		}
		return n, removeWork(work)
	}
	// Partial folders first, also those inside new folders, so the count
	// says what the pull had received.
	if err := removePartialDirs(ctx, root, &n); err != nil {
		return n, err
	}
	if rollback {
		if err := undoCreated(ctx, root, filepath.Join(work, workJournal), &n); err != nil {
			return n, err
		}
		// A pull cut short before it marked its start created nothing.
		if since, ok, err := birthTime(filepath.Join(work, workStarted)); err == nil && ok {
			if err := removeBornAfter(ctx, root, since, &n); err != nil {
				return n, err
			}
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, err
		}
	}
	if err := countFiles(ctx, filepath.Join(work, workTmp), &n.tempFiles, &n.tempBytes); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return n, err
	}
	return n, removeWork(work)
}

func removeWork(work string) error {
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("remove work folder: %w", err)
	}
	return nil
}

// emptyFolder removes everything in root (an unfinished first pull's
// folders, files and rsync temp files), counting files and bytes. root
// refuses paths that leave it.
func emptyFolder(ctx context.Context, root *os.Root, n *removed) error {
	base := root.Name()
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			n.firstFiles++
			if fi, err := d.Info(); err == nil {
				n.firstBytes += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("count the unfinished first pull: %w", err)
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return fmt.Errorf("empty staging after an unfinished first pull: %w", err)
	}
	for _, e := range entries {
		if err := root.RemoveAll(e.Name()); err != nil {
			return fmt.Errorf("empty staging after an unfinished first pull: %w", err)
		}
	}
	return nil
}

// emptyDir reports whether dir has no entries.
func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if errors.Is(err, io.EOF) {
		return true, nil
	}
	return len(names) == 0, err
}

// undoCreated removes the entries in the journal at path. Only an entry
// that is still what rsync created is removed (a folder, or a symlink with
// the target rsync printed), and only inside staging: root refuses paths
// that leave it, through ".." or a symlink.
func undoCreated(ctx context.Context, root *os.Root, path string, n *removed) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the list of new entries: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("remove new entries: %w", err)
		}
		line := sc.Text()
		if len(line) < 3 || line[1] != ' ' {
			continue // a line cut by a crash
		}
		rel, err := undoOne(root, line[0], line[2:])
		if err != nil {
			return fmt.Errorf("remove new entry %q: %w", rel, err)
		}
		if rel != "" {
			n.created++
		}
	}
	return sc.Err()
}

// undoOne removes one journal entry if it is still there, returning its
// path when it removed something.
func undoOne(root *os.Root, kind byte, name string) (string, error) {
	if kind == 'L' {
		// "name -> target": either side may hold " -> " itself, so take
		// the split whose symlink points where rsync said.
		for i := 0; ; {
			j := strings.Index(name[i:], " -> ")
			if j < 0 {
				return "", nil
			}
			at := i + j
			rel, target := clean(unescapeRsync(name[:at])), unescapeRsync(name[at+4:])
			i = at + 1
			if rel == "" {
				continue
			}
			fi, err := root.Lstat(rel)
			if err != nil || fi.Mode().Type() != fs.ModeSymlink {
				continue
			}
			if got, err := root.Readlink(rel); err == nil && got == target {
				return rel, ignoreGone(root.Remove(rel))
			}
		}
	}
	rel := clean(unescapeRsync(name))
	if rel == "" {
		return "", nil // staging itself stays
	}
	fi, err := root.Lstat(rel)
	if err != nil {
		return "", nil // gone already, or under a folder removed before
	}
	switch t := fi.Mode().Type(); {
	case kind == 'd' && t == fs.ModeDir:
		return rel, ignoreGone(root.RemoveAll(rel))
	case (kind == 'D' || kind == 'S') && t&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0:
		return rel, ignoreGone(root.Remove(rel))
	}
	return "", nil
}

// clean makes rsync's name relative to staging: "" for staging itself.
func clean(name string) string {
	p := filepath.Clean(strings.TrimSuffix(name, "/"))
	if p == "." || p == "/" || strings.HasPrefix(p, "/") {
		return ""
	}
	return p
}

func ignoreGone(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// removeBornAfter removes every folder, symlink and special file in
// staging born after since: what the failed pull created (see
// markStart). Regular files are left: a pull's new files wait in partial
// folders, and one born later than since outside them is a new version
// rsync had already moved into place, whose old one is gone. A
// filesystem without birth times makes this a no-op.
func removeBornAfter(ctx context.Context, root *os.Root, since time.Time, n *removed) error {
	base := root.Name()
	return filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("remove new entries: %w", cerr)
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("look for new entries: %w", err)
		}
		if p == base || d.Type().IsRegular() {
			return nil
		}
		born, ok, err := birthTime(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look for new entries: %w", err)
		}
		if !ok {
			return fs.SkipAll
		}
		if !born.After(since) {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		if err := root.RemoveAll(rel); err != nil {
			return fmt.Errorf("remove new entry %s: %w", rel, err)
		}
		n.created++
		if d.IsDir() {
			return fs.SkipDir
		}
		return nil
	})
}

// removePartialDirs removes every RsyncPartialDir folder under root. The
// walk does not follow symlinks; names need not be UTF-8.
func removePartialDirs(ctx context.Context, root *os.Root, n *removed) error {
	base := root.Name()
	return filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("remove %s folders: %w", remote.RsyncPartialDir, cerr)
		}
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("look for %s folders: %w", remote.RsyncPartialDir, err)
		}
		if p == base || !d.IsDir() || d.Name() != remote.RsyncPartialDir {
			return nil
		}
		n.partialDirs++
		if err := countFiles(ctx, p, &n.partialFiles, &n.partialBytes); err != nil {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		if err := root.RemoveAll(rel); err != nil {
			return fmt.Errorf("remove %s: %w", rel, err)
		}
		return fs.SkipDir
	})
}

// countFiles adds the regular files under dir and their size to files
// and bytes.
func countFiles(ctx context.Context, dir string, files *int, bytes *int64) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				*files++
				*bytes += fi.Size()
			}
		}
		return nil
	})
}

// recoverInterrupted removes the leftovers of a pull of this target that
// was cut short without cleanup, found by its work folder. found is false
// when there is none.
func recoverInterrupted(ctx context.Context, staging, work, hash string) (c Cleanup, found bool) {
	if _, err := os.Lstat(work); errors.Is(err, fs.ErrNotExist) {
		return c, false
	}
	c.TargetHash = hash
	if _, err := os.Lstat(staging); errors.Is(err, fs.ErrNotExist) {
		// The target's staging is gone (removed by hand): only the work
		// folder is left.
		err = os.RemoveAll(work)
		c.Message, c.Failed = "removed the work folder of an earlier, interrupted pull", err != nil
		if err != nil {
			c.Message += ": " + err.Error()
		}
		return c, true
	}
	n, err := cleanLeftovers(ctx, staging, work, true)
	c.Message = "an earlier pull of this target stopped without cleaning up (Satoru was stopped or killed mid-pull): " + n.String()
	if err != nil {
		c.Message += "; the rest could not be removed: " + err.Error()
		c.Failed = true
	} else {
		c.Message += "; " + n.left()
	}
	return c, true
}

// left says what staging holds after a cleanup.
func (n removed) left() string {
	if n.first {
		return "staging is empty again, as before that first pull"
	}
	return "staging holds the last complete pull"
}

// RecoverInterrupted removes the leftovers of every pull of the site that
// was cut short without cleanup (Satoru killed mid-pull): those of
// directory pulls, found by their work folders, the way the next pull of
// each target would, and the temp files of the site's SQLite targets. A
// backup runs it first, so its disk headroom check sees the space they
// took. A directory target whose leftovers cannot all be removed is left
// to its next pull, which tries again and fails if it cannot.
func RecoverInterrupted(ctx context.Context, stagingRoot, siteUUID string, targets []domain.Target) []Cleanup {
	if stagingRoot == "" || checkComponent("site uuid", siteUUID) != nil {
		return nil
	}
	var out []Cleanup
	dir := filepath.Join(stagingRoot, workRoot, siteUUID)
	// An error is none, or unreadable: each pull checks its own again.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !e.IsDir() || checkComponent("target hash", e.Name()) != nil {
			continue
		}
		if c, found := recoverInterrupted(ctx, StagingPath(stagingRoot, siteUUID, e.Name()), filepath.Join(dir, e.Name()), e.Name()); found {
			out = append(out, c)
		}
	}
	for _, t := range targets {
		if t.Mode != domain.ModeSQLiteDump || checkComponent("target hash", t.TargetHash) != nil {
			continue
		}
		if c, found := removeDumpTemps(StagingPath(stagingRoot, siteUUID, t.TargetHash), t); found {
			out = append(out, c)
		}
	}
	return out
}

// removeDumpTemps removes the temp files a SQLite pull of t writes into
// staging, which it removes itself unless Satoru died first.
func removeDumpTemps(staging string, t domain.Target) (c Cleanup, found bool) {
	var n int
	var size int64
	var errs []error
	for _, p := range dumpTemps(staging, filepath.Base(t.Path)) {
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		n++
		size += fi.Size()
	}
	if n == 0 && len(errs) == 0 {
		return c, false
	}
	c.TargetHash = t.TargetHash
	c.Message = fmt.Sprintf("an earlier pull of this database stopped without cleaning up (Satoru was stopped or killed mid-pull): removed %s (%d bytes)",
		plural(n, "temp file"), size)
	if err := errors.Join(errs...); err != nil {
		c.Failed = true
		c.Message += "; the rest could not be removed: " + err.Error()
	}
	return c, true
}
