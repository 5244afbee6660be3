package pull

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
)

// stagingChmod makes everything rsync writes into staging owner-only,
// as the security defaults require (directories 0700, files 0600):
// staging holds copies of whole sites and must not be readable by other
// local users, whatever modes the files had on the site.
//
// It composes with -a: -p still applies permissions, but the ones
// --chmod computes, so a later run sees staging already matching and
// rewrites nothing. The trade-off is that the site's own modes are not
// kept: restic snapshots staging, so restored files come back 0600 and
// folders 0700 (executable bits included) and an operator restoring to
// the site reapplies modes there. Owners, times and symlinks are kept
// (-a, --numeric-ids). Symlinks have no mode of their own on Linux.
const stagingChmod = "--chmod=D0700,F0600"

// Directory mirrors the remote folder t.Path into its staging folder with
// rsync over ssh (-a --delete --delete-excluded, t.Excludes), streaming
// progress. rsync exit 24 (files vanished while it ran) is a success with
// a Note; exit 23 (some files not transferred) a warning listing the
// paths, unless the folder itself could not be read; anything else fails,
// Transient when the connection was refused, lost or stalled.
//
// Staging keeps the last good copy: rsync replaces and deletes files only
// once the transfer is through, and a pull that fails any way (rsync
// error, timeout, cancel) removes what it left before it returns
// (leftovers.go). So does a pull that finds the leftovers of one that was
// cut short without cleanup, before it starts. Cleanups reports both.
func Directory(ctx context.Context, c Config, siteUUID string, t domain.Target, progress func(Progress)) Result {
	start := time.Now()
	r := Result{TargetHash: t.TargetHash, Path: t.Path, Mode: t.Mode}
	r.directory(ctx, c, siteUUID, t, progress)
	r.Duration = time.Since(start)
	return r
}

func (r *Result) directory(ctx context.Context, c Config, siteUUID string, t domain.Target, progress func(Progress)) {
	if t.Mode != domain.ModeDirectory {
		r.fail("%s: target mode is %q, not %q", StepRsync, t.Mode, domain.ModeDirectory)
		return
	}
	staging, err := prepareStaging(c.StagingRoot, siteUUID, t.TargetHash)
	if err != nil {
		r.fail("%s: %v", StepStaging, err)
		return
	}
	r.StagingPath = staging
	root := filepath.Dir(filepath.Dir(staging)) // staging root, absolute
	if cl, found := recoverInterrupted(ctx, staging, workPath(root, siteUUID, t.TargetHash), t.TargetHash); found {
		r.Cleanups = append(r.Cleanups, cl)
		if cl.Failed {
			// Pulling on top would overwrite the list of what to undo.
			r.fail("%s: %s", StepStaging, cl.Message)
			return
		}
	}
	// Into an empty folder there is no last good copy to keep in place:
	// rsync writes straight into it, and a pull that does not finish
	// empties it again (the work folder's first-pull marker).
	first, err := emptyDir(staging)
	if err != nil {
		r.fail("%s: %v", StepStaging, err)
		return
	}
	j, work, err := prepareWork(root, siteUUID, t.TargetHash, first)
	if err != nil {
		r.fail("%s: %v", StepStaging, err)
		return
	}
	tmp := filepath.Join(work, workTmp)
	if first {
		tmp = ""
	}
	args, err := rsyncArgs(c, t, staging, tmp, first)
	if err != nil {
		_ = j.close()
		_ = os.RemoveAll(work)
		r.fail("%s: %v", StepRsync, err)
		return
	}
	out := &rsyncOutput{hash: t.TargetHash, tick: newThrottle(c.progressEvery(), progress), created: j.add}
	res, runErr := proc.Run(ctx, proc.Cmd{
		Step:    StepRsync,
		Path:    orDefault(c.RsyncPath, "rsync"),
		Args:    args,
		Stdout:  out,
		Timeout: c.TargetTimeout,
	})
	journalErr := j.close()
	if st, err := remote.ParseRsyncStats(out.output()); err == nil {
		r.Files = regularFiles(st)
		r.Bytes = st.TotalSize
		r.Transferred = st.BytesReceived
	} else if runErr == nil {
		r.Note = "rsync printed no --stats summary: file counts unknown"
	}
	o := judgeRsync(runErr, res.Stderr, t.Path, staging)
	r.Status, r.Error, r.FailedPaths, r.Transient = o.status, o.err, o.failedPaths, o.transient
	if o.note != "" {
		r.Note = o.note
	}
	r.cleanUp(ctx, staging, work, runErr == nil, journalErr)
}

// cleanUp ends a pull's use of its work folder. After a clean rsync run
// there is nothing in staging to remove (rsync removed its partial
// folders). Otherwise every partial folder goes, and after a failure also
// what the pull created, so staging is the last good copy again; a
// warning (exit 23) or a success with vanished files (24) keeps the new
// folders, which hold this run's files.
func (r *Result) cleanUp(ctx context.Context, staging, work string, clean bool, journalErr error) {
	if clean {
		if err := os.RemoveAll(work); err != nil {
			// Found by the next pull as an interrupted one, which would
			// undo this pull's new folders: say so.
			r.Cleanups = append(r.Cleanups, Cleanup{TargetHash: r.TargetHash, Failed: true,
				Message: "could not remove the pull's work folder (the next pull will take this pull's new folders for leftovers): " + err.Error()})
		}
		return
	}
	failed := r.Status == domain.HealthFailed
	n, err := cleanLeftovers(ctx, staging, work, failed)
	if !failed && err == nil && n == (removed{}) {
		return
	}
	cl := Cleanup{TargetHash: r.TargetHash}
	switch {
	case failed:
		cl.Message = "the failed pull's leftovers in staging: " + n.String()
	default:
		cl.Message = "rsync's leftovers in staging: " + n.String()
	}
	if journalErr != nil && failed {
		cl.Message += fmt.Sprintf("; the list of new folders and links was incomplete (%v), so some may remain", journalErr)
	}
	switch {
	case err != nil:
		cl.Failed = true
		cl.Message += "; the rest could not be removed, the next pull tries again: " + err.Error()
	case failed:
		cl.Message += "; " + n.left()
	}
	r.Cleanups = append(r.Cleanups, cl)
}

// rsyncArgs is RsyncPullArgs plus what a pull adds: staging modes and a
// progress stream, and the configured ssh program.
func rsyncArgs(c Config, t domain.Target, staging, tmp string, first bool) ([]string, error) {
	args, err := remote.RsyncPullArgs(remote.RsyncPull{
		First:        first,
		SSH:          c.SSH,
		RemoteDir:    t.Path,
		LocalDir:     staging,
		Excludes:     t.Excludes,
		BWLimitKiBps: c.BandwidthLimitKbps,
		IOTimeout:    c.IOTimeout,
		TempDir:      tmp,
	})
	if err != nil {
		return nil, err
	}
	// progress2: one line for the whole transfer, rewritten with '\r';
	// it is what rsyncOutput parses. --itemize-changes names each entry
	// rsync changes; rsyncOutput journals only the folders and links it
	// creates, so a failed pull can remove them.
	if args, err = insertOptions(args, stagingChmod, "--info=progress2", "--itemize-changes"); err != nil {
		return nil, err
	}
	return withSSHPath(args, c.SSHPath)
}

// insertOptions puts options before the "--" that ends RsyncPullArgs'
// options, ahead of the two operands.
func insertOptions(args []string, opts ...string) ([]string, error) {
	n := len(args)
	if n < 3 || args[n-3] != "--" {
		return nil, errors.New("unexpected rsync argv: no \"--\" before source and destination")
	}
	return slices.Concat(args[:n-3], opts, args[n-3:]), nil
}

// withSSHPath makes rsync's -e run sshPath instead of "ssh". rsync splits
// -e on whitespace, so the path must be one plain word.
func withSSHPath(args []string, sshPath string) ([]string, error) {
	if sshPath == "" || sshPath == "ssh" {
		return args, nil
	}
	if strings.ContainsAny(sshPath, " \t\n\r'\"\\") {
		return nil, fmt.Errorf("ssh path %q has whitespace or quotes, which rsync -e cannot carry", sshPath)
	}
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-e" && strings.HasPrefix(args[i+1], "ssh ") {
			out := slices.Clone(args)
			out[i+1] = sshPath + strings.TrimPrefix(args[i+1], "ssh")
			return out, nil
		}
	}
	return nil, errors.New("unexpected rsync argv: no -e ssh")
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// regularFiles is the target's file count: regular files when rsync gave
// the breakdown (3.1+; the root folder always counts as one dir), else
// every entry.
func regularFiles(st remote.RsyncStats) int64 {
	if st.RegularFiles > 0 || st.Dirs > 0 {
		return st.RegularFiles
	}
	return st.Files
}

// rsyncOutcome is what a finished rsync means for the target.
type rsyncOutcome struct {
	status      domain.Health
	note, err   string
	failedPaths []string
	// transient: a failure a retry may not meet (see remote.IsTransient).
	transient bool
}

// rsync exit codes with a meaning the operator needs spelled out.
var rsyncExitMeaning = map[int]string{
	1:  "syntax or usage error",
	2:  "protocol incompatibility",
	3:  "errors selecting input/output files or folders",
	5:  "error starting the remote rsync (is rsync installed on the site?)",
	10: "error in socket I/O",
	11: "error in file I/O (is the staging disk full?)",
	12: "error in the rsync protocol data stream (connection lost, or the remote rsync could not start)",
	20: "killed by a signal",
	30: "timed out waiting for data (I/O timeout)",
	35: "timed out waiting for the daemon connection",
}

// judgeRsync maps rsync's result to a status. err is proc.Run's error;
// stderr the captured stderr tail (Result.Stderr, longer than the
// ExitError's), read for the paths of exit 23 and 24.
func judgeRsync(err error, stderr, remoteDir, staging string) rsyncOutcome {
	if err == nil {
		return rsyncOutcome{status: domain.HealthSuccess}
	}
	var ee *proc.ExitError
	if !errors.As(err, &ee) {
		// Never started, canceled, or out of TargetTimeout: proc's text
		// says which ("rsync timed out after 30m0s: ...", "rsync: context
		// canceled: ..."), with stderr.
		return rsyncOutcome{status: domain.HealthFailed, err: err.Error()}
	}
	if ee.Signal != 0 {
		return rsyncOutcome{status: domain.HealthFailed, err: fmt.Sprintf("%s killed by signal %d (%s): %s", StepRsync, int(ee.Signal), ee.Signal, ee.Stderr)}
	}
	root := strings.TrimRight(remoteDir, "/")
	if root == "" {
		root = "/"
	}
	switch ee.Code {
	case 24:
		f := remote.ParseRsyncFailures(stderr, 5)
		note := "some files vanished during transfer (rsync exit 24)"
		if len(f.Paths) > 0 {
			note += ": " + strings.Join(relativize(f.Paths, root, staging), ", ")
			if f.Total > len(f.Paths) {
				note += fmt.Sprintf(" and %d more", f.Total-len(f.Paths))
			}
		}
		return rsyncOutcome{status: domain.HealthSuccess, note: note}
	case 23:
		f := remote.ParseRsyncFailures(stderr, 0)
		// The folder itself unreadable (missing, not a folder, no
		// permission) is no partial transfer: nothing was pulled.
		for _, p := range f.Paths {
			if p == root || p == root+"/." || p == root+"/" {
				return rsyncOutcome{status: domain.HealthFailed,
					err: fmt.Sprintf("%s exit 23: cannot read the remote folder %s: %s", StepRsync, remoteDir, ee.Stderr)}
			}
		}
		paths := relativize(f.Paths, root, staging)
		if len(paths) > MaxFailedPaths {
			paths = paths[:MaxFailedPaths]
		}
		what := "some files or attributes were not transferred"
		switch {
		case f.Total == 1:
			what = "1 path was not transferred"
		case f.Total > 1:
			what = fmt.Sprintf("%d paths were not transferred", f.Total)
		}
		if f.DeletionsSkipped {
			what += "; rsync skipped deletions because of I/O errors"
		}
		return rsyncOutcome{status: domain.HealthWarning, failedPaths: paths,
			err: fmt.Sprintf("%s exit 23: %s: %s", StepRsync, what, ee.Stderr)}
	}
	var reason string
	c := remote.ClassifyRunError(err)
	switch {
	case errors.Is(c, remote.ErrHostKeyMismatch):
		reason = remote.ErrHostKeyMismatch.Error() + " (possible man-in-the-middle, or the host was reinstalled; re-pin only after checking)"
	case errors.Is(c, remote.ErrIOTimeout):
		reason = rsyncExitMeaning[ee.Code]
	case c != err:
		reason = sshReason(c)
	default:
		reason = rsyncExitMeaning[ee.Code]
	}
	msg := fmt.Sprintf("%s exit %d", StepRsync, ee.Code)
	if reason != "" {
		msg += ": " + reason
	}
	if ee.Stderr != "" {
		msg += ": " + ee.Stderr
	}
	return rsyncOutcome{status: domain.HealthFailed, err: msg, transient: remote.IsTransient(c)}
}

// sshReason is the sentinel remote.ClassifyRunError added to err.
func sshReason(err error) string {
	for _, s := range []error{remote.ErrHostKeyMismatch, remote.ErrHostKeyUnknown, remote.ErrAuthRefused,
		remote.ErrConnRefused, remote.ErrConnTimeout, remote.ErrHostUnreachable, remote.ErrConnLost,
		remote.ErrIOTimeout, remote.ErrRemoteRsync} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return ""
}

// relativize shows paths under the remote folder or the staging folder
// relative to it, as an operator browsing the target sees them.
func relativize(paths []string, root, staging string) []string {
	out := make([]string, 0, len(paths))
	for _, p := range paths {
		for _, base := range []string{staging, root} {
			if base == "/" {
				if rel := strings.TrimPrefix(p, "/"); rel != "" && rel != p {
					p = rel
					break
				}
				continue
			}
			if rel, ok := strings.CutPrefix(p, base+"/"); ok && rel != "" {
				p = rel
				break
			}
		}
		out = append(out, p)
	}
	return out
}
