package puller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/satoru/satoru/services/puller/internal/preflight"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/restore"
)

// A restore job (domain.Job.Restore holds its options) runs in three
// steps under the site lease, each a function below (restoreCheck,
// restoreDestination, restoreTempDir with restoreSnapshot,
// restoreIntoPlace):
//
//  0. The request is checked again with the API's rules
//     (restore.ValidateJob): the job was read from the store and the
//     queue, which the API does not guard.
//  1. The destination is checked first, so a refused restore costs
//     nothing. A local one is resolved with symlinks followed and must
//     not overlap Satoru's own areas (restore.Guard: data_dir,
//     staging_root, the repository, secret files); it must not exist, or
//     overwrite must be set (an existing empty folder too, since this
//     restore did not create it). A site destination must not exist or be
//     an empty folder unless overwrite is set; it is checked (and created
//     0700) by one ssh command over the master connection preflight opened
//     with the site's pinned key.
//  2. `restic restore` of the chosen paths into a fresh 0700 folder,
//     removed afterwards whatever happens: for a local destination
//     <parent of destination>/.satoru-restore-<job_id>, on the same
//     filesystem; for a site or a dry run <staging_root>/.restore/<job_id>
//     (the snapshotter only backs up <staging_root>/<site_uuid>, so it is
//     never snapshotted).
//  3. rsync puts each path at <destination>/<its base name>. Locally,
//     folders 0700 and files 0600 owned by Satoru's user: a new
//     destination is filled inside the temporary folder and renamed into
//     place (never replacing anything that appeared meanwhile); into an
//     existing one (overwrite) rsync writes directly, and since it runs
//     without --keep-dirlinks it replaces a symlink in the way (one an
//     earlier restore wrote) instead of following it. To the site, rsync
//     over the same ssh (modes as in the snapshot, owners by number where
//     the remote user may set them). rsync never deletes in the
//     destination. A dry run runs rsync with --dry-run and reports its
//     --itemize-changes list (first restoreListCap lines) in an event,
//     writing nothing.

// restoreListCap bounds the itemized changes kept in an event.
const restoreListCap = 200

// restoreDirTimeout bounds the ssh command that checks a site folder.
const restoreDirTimeout = time.Minute

func (p *Puller) restore(ctx context.Context, job domain.Job, rec *jobrun.Recorder) (result jobrun.Outcome) {
	run := &restoreRun{job: job, rec: rec}
	// Deferred in this order so the temporary folder goes before the
	// site's master connection is released.
	defer func() {
		if run.release != nil {
			run.release(result.Status == domain.StatusFailed)
		}
	}()
	defer func() {
		if run.tmp != "" {
			os.RemoveAll(run.tmp)
		}
	}()
	steps := []func(context.Context, *restoreRun) error{
		p.restoreCheck, p.restoreDestination, p.restoreTempDir, p.restoreSnapshot, p.restoreIntoPlace,
	}
	for _, step := range steps {
		if err := step(ctx, run); err != nil {
			return run.failed(ctx, err)
		}
	}
	return run.succeeded(ctx)
}

// restoreRun is one restore job as its steps fill it in.
type restoreRun struct {
	job         domain.Job
	rec         *jobrun.Recorder
	r           domain.RestoreRequest
	stagingRoot string
	summary     map[string]any

	// dest is where the paths land: the site folder, or the local
	// destination with symlinks resolved (local).
	dest  string
	local restore.Local
	// ssh, bwLimit and release are set for a site destination: the
	// master connection preflight opened, and its release.
	ssh     remote.SSHConfig
	bwLimit int
	release func(broken bool)

	tmp     string   // the fresh folder restic restores into
	sources []string // the restored entries, one per requested path
	changes *itemList
}

// quietError ends a restore without an error event of its own: the job's
// context ended (the executor records why) or the events could not be
// written.
type quietError struct{ err error }

func (e quietError) Error() string { return e.err.Error() }
func (e quietError) Unwrap() error { return e.err }

// failed is the outcome of a step's error, recorded as an error event
// unless it is a quietError.
func (run *restoreRun) failed(ctx context.Context, err error) jobrun.Outcome {
	var q quietError
	if !errors.As(err, &q) {
		run.rec.Add(ctx, domain.JobEvent{Step: "restore", Level: domain.LevelError, Message: err.Error()})
	}
	return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
}

// stopped is a quietError when ctx ended, else nil.
func stopped(ctx context.Context) error {
	if ctx.Err() != nil {
		return quietError{ctx.Err()}
	}
	return nil
}

// restoreCheck (step 0) checks the job again with the API's rules, since
// it was read from the store and the queue, and the puller's own config.
func (p *Puller) restoreCheck(_ context.Context, run *restoreRun) error {
	if run.job.Restore == nil {
		return errors.New("restore job has no options; create restores with POST /api/v1/sites/{site_uuid}/restores")
	}
	r := *run.job.Restore
	if err := restore.ValidateJob(run.job.ID, r); err != nil {
		return fmt.Errorf("invalid restore request: %w", err)
	}
	if p.Restic.Repository == "" {
		return errors.New("no restic repository is configured for the puller")
	}
	if p.Backup.StagingRoot == "" {
		return errors.New("no staging_root is configured for the puller")
	}
	stagingRoot, err := filepath.Abs(p.Backup.StagingRoot)
	if err != nil {
		return fmt.Errorf("staging_root: %w", err)
	}
	run.r, run.stagingRoot = r, stagingRoot
	run.summary = map[string]any{"snapshot_id": r.SnapshotID, "paths": len(r.Paths), "dry_run": r.DryRun, "overwrite": r.Overwrite}
	return nil
}

// restoreDestination (step 1) checks the destination before anything is
// restored, so a refused restore costs nothing.
func (p *Puller) restoreDestination(ctx context.Context, run *restoreRun) error {
	if run.r.Destination.ToSite {
		return p.restoreSiteDestination(ctx, run)
	}
	run.summary["destination"] = run.r.Destination.LocalPath
	local, err := p.guard(run.stagingRoot).Local(run.r.Destination.LocalPath, run.r.Overwrite)
	if err != nil {
		return err
	}
	run.local, run.dest = local, local.Path
	if run.dest != run.r.Destination.LocalPath {
		run.summary["resolved_destination"] = run.dest
	}
	return nil
}

// restoreSiteDestination runs preflight for the site (which opens the
// master connection with its pinned key), then checks, and unless this is
// a dry run creates, the folder on the site over it.
func (p *Puller) restoreSiteDestination(ctx context.Context, run *restoreRun) error {
	job := run.job
	run.dest = run.r.Destination.Path
	run.summary["destination"] = "site:" + run.dest
	site, err := p.Store.GetSite(ctx, job.SiteUUID)
	if err != nil {
		return fmt.Errorf("load site %s: %w", job.SiteUUID, err)
	}
	status, err := p.Store.GetSiteStatus(ctx, job.SiteUUID)
	if err != nil {
		return fmt.Errorf("load status of site %s: %w", job.SiteUUID, err)
	}
	controlPath, err := p.masterPath(site, status)
	if err != nil {
		return err
	}
	res := p.Checker.Run(ctx, preflight.Input{Site: site, Status: status, ControlPath: controlPath})
	run.release = func(broken bool) { p.releaseMaster(res.SSH, broken) }
	for _, ev := range res.Events {
		run.rec.Add(ctx, ev)
	}
	if err := stopped(ctx); err != nil {
		return err
	}
	if !res.SiteOK() {
		return fmt.Errorf("preflight failed, nothing restored: %s", res.Error())
	}
	if res.LearnedHostKey != "" {
		status.SiteUUID, status.LearnedHostKey = site.UUID, res.LearnedHostKey
		if err := p.Store.PutSiteStatus(ctx, status); err != nil {
			return fmt.Errorf("record the learned host key: %w", err)
		}
	}
	run.ssh, run.bwLimit = res.SSH, site.BandwidthLimitKbps
	if msg := p.prepareSiteDest(ctx, run.ssh, run.dest, run.r.Overwrite, run.r.DryRun); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// restoreTempDir (step 2, first half) checks the disk headroom where
// restic will write and makes the fresh private folder it restores into,
// clearing what an earlier attempt of this job left there.
func (p *Puller) restoreTempDir(_ context.Context, run *restoreRun) error {
	inStaging := run.r.Destination.ToSite || run.r.DryRun
	room := run.stagingRoot
	if !inStaging {
		room = filepath.Dir(run.local.Path)
	}
	if err := p.Backup.headroom().Check(room); err != nil {
		return fmt.Errorf("disk headroom: %w; nothing restored", err)
	}
	tmp, err := restoreTemp(run.job.ID, run.stagingRoot, run.local, inStaging)
	if err != nil {
		return fmt.Errorf("%w; nothing restored", err)
	}
	if err := os.RemoveAll(tmp); err != nil { // a previous attempt's
		return fmt.Errorf("clear restore folder %s: %w", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("create restore folder %s: %w", tmp, err)
	}
	run.tmp = tmp
	return nil
}

// restoreSnapshot (step 2) runs restic restore of the chosen paths into
// the temporary folder and checks that each one is there: restic restores
// nothing, without an error, for a path the snapshot lacks.
func (p *Puller) restoreSnapshot(ctx context.Context, run *restoreRun) error {
	r, rec := run.r, run.rec
	tree := filepath.Join(run.tmp, "snapshot")
	rec.Add(ctx, domain.JobEvent{Step: "restore", Message: fmt.Sprintf("restoring %d path(s) of snapshot %s", len(r.Paths), short(r.SnapshotID)),
		Data: map[string]any{"paths": r.Paths}})
	if err := rec.Flush(ctx); err != nil {
		return quietError{err}
	}
	start := time.Now()
	if err := p.Restic.RestorePaths(ctx, r.SnapshotID, tree, r.Paths); err != nil {
		if err := stopped(ctx); err != nil {
			return err
		}
		return fmt.Errorf("restic restore of snapshot %s: %w", short(r.SnapshotID), err)
	}
	run.sources = make([]string, len(r.Paths))
	for i, sp := range r.Paths {
		run.sources[i] = filepath.Join(tree, sp)
		if _, err := os.Lstat(run.sources[i]); err != nil {
			return fmt.Errorf("snapshot %s has no file or folder %s; nothing restored", short(r.SnapshotID), sp)
		}
	}
	files, size := countTree(tree)
	run.summary["files"], run.summary["bytes"] = files, size
	rec.Add(ctx, domain.JobEvent{Step: "restore", Message: fmt.Sprintf("restic restored %d files, %d bytes in %s", files, size, time.Since(start).Round(time.Millisecond)),
		Data: map[string]any{"files": files, "bytes": size}})
	return nil
}

// restoreIntoPlace (step 3) runs rsync from the temporary folder to the
// destination. A new local destination is filled inside the temporary
// folder and then renamed into place, so it appears whole or not at all.
func (p *Puller) restoreIntoPlace(ctx context.Context, run *restoreRun) error {
	args, err := p.restoreArgs(run)
	if err != nil {
		return err
	}
	run.changes = &itemList{max: restoreListCap}
	_, err = proc.Run(ctx, proc.Cmd{Step: "restore rsync", Path: orDefault(p.RsyncPath, "rsync"), Args: args, Stdout: run.changes, Timeout: p.Backup.TargetTimeout})
	if err != nil {
		if err := stopped(ctx); err != nil {
			return err
		}
		return fmt.Errorf("rsync into %s: %w", run.summary["destination"], remote.ClassifyRunError(err))
	}
	if run.renameNew() {
		if err := restore.MoveNew(filepath.Join(run.tmp, "into"), run.dest); err != nil {
			return fmt.Errorf("move the restored files into %s: %w; nothing restored", run.dest, err)
		}
	}
	return nil
}

// renameNew says the restore fills a new local folder inside the
// temporary one and renames it into place.
func (run *restoreRun) renameNew() bool {
	return !run.r.Destination.ToSite && !run.local.Exists && !run.r.DryRun
}

// restoreArgs is rsync's argv for step 3: over the site's ssh, or on this
// host into the destination (or the folder renamed into place).
func (p *Puller) restoreArgs(run *restoreRun) ([]string, error) {
	if run.r.Destination.ToSite {
		args, err := remote.RsyncPushArgs(remote.RsyncPush{SSH: run.ssh, LocalPaths: run.sources, RemoteDir: run.dest, DryRun: run.r.DryRun,
			BWLimitKiBps: run.bwLimit, IOTimeout: p.Backup.IOTimeout})
		if err != nil {
			return nil, fmt.Errorf("rsync to the site: %w", err)
		}
		return args, nil
	}
	into := run.dest
	if run.renameNew() {
		into = filepath.Join(run.tmp, "into")
		if err := os.Mkdir(into, 0o700); err != nil {
			return nil, fmt.Errorf("create restore folder %s: %w", into, err)
		}
	}
	args, err := remote.RsyncLocalArgs(remote.RsyncLocal{Sources: run.sources, Dest: into, DryRun: run.r.DryRun})
	if err != nil {
		return nil, fmt.Errorf("rsync into %s: %w", run.summary["destination"], err)
	}
	return args, nil
}

// succeeded reports what rsync changed (or, in a dry run, would change):
// the first restoreListCap lines of its itemized list and their count.
func (run *restoreRun) succeeded(ctx context.Context) jobrun.Outcome {
	out, r := run.changes, run.r
	run.summary["changes"] = out.total
	data := map[string]any{"changes": orEmpty(out.lines), "changes_total": out.total}
	if out.total > len(out.lines) {
		data["truncated"] = true
	}
	if r.DryRun {
		run.rec.Add(ctx, domain.JobEvent{Step: "restore_dry_run", Data: data,
			Message: fmt.Sprintf("dry run: %d change(s) would be made in %s; nothing was written", out.total, run.summary["destination"])})
	} else {
		run.rec.Add(ctx, domain.JobEvent{Step: "restore", Data: data,
			Message: fmt.Sprintf("restored %d path(s) into %s: %d change(s)", len(r.Paths), run.summary["destination"], out.total)})
	}
	return jobrun.Outcome{Status: domain.StatusSuccess, Summary: run.summary}
}

// prepareSiteDest checks (and unless dryRun creates) the site folder;
// it returns why it refuses, or "".
func (p *Puller) prepareSiteDest(ctx context.Context, ssh remote.SSHConfig, dest string, overwrite, dryRun bool) string {
	line, err := remote.RestoreDirCommand(dest, overwrite, dryRun)
	if err != nil {
		return "destination: " + err.Error()
	}
	cmd, err := remote.SSHCmd(ssh, "restore destination", line)
	if err != nil {
		return "destination: " + err.Error()
	}
	cmd.Path, cmd.Timeout = orDefault(p.Checker.SSHPath, "ssh"), restoreDirTimeout
	res, err := proc.Run(ctx, cmd)
	if err == nil {
		return ""
	}
	switch res.ExitCode {
	case remote.RestoreDirNotEmpty:
		return fmt.Sprintf(restore.NotEmpty, "on the site "+dest)
	case remote.RestoreDirNotDir:
		return fmt.Sprintf("destination %s on the site exists and is not a folder; nothing restored", dest)
	case remote.RestoreDirUnread:
		return fmt.Sprintf("destination %s on the site cannot be read by the ssh user; nothing restored", dest)
	}
	return fmt.Sprintf("check destination %s on the site: %v", dest, remote.ClassifyRunError(err))
}

// guard is the restore guard: the configured areas, and always the
// staging root, the repository and the ssh control folder.
func (p *Puller) guard(stagingRoot string) restore.Guard {
	// A repository at a backend URL is no local area ("" is skipped).
	repoDir, _ := restic.LocalPath(p.Restic.Repository)
	areas := append([]restore.Area{
		{Key: "staging_root", Path: stagingRoot},
		{Key: "restic_repo_path", Path: repoDir},
		{Key: "the ssh control folder", Path: p.Backup.ControlDir},
	}, p.Protected...)
	return restore.Guard{Areas: areas}
}

// restoreTemp is the fresh folder restic restores into: beside a local
// destination (its parent is created, and must still resolve to itself,
// so no symlink slipped in), or under staging for a site or a dry run,
// which write nothing locally.
func restoreTemp(jobID, stagingRoot string, local restore.Local, inStaging bool) (string, error) {
	if inStaging {
		dir := filepath.Join(stagingRoot, ".restore")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("create restore folder %s: %w", dir, err)
		}
		// MkdirAll leaves an existing folder's mode as it was: restored
		// files must not sit in one others can read.
		if err := os.Chmod(dir, 0o700); err != nil {
			return "", fmt.Errorf("restrict restore folder %s to 0700: %w", dir, err)
		}
		return filepath.Join(dir, jobID), nil
	}
	parent := filepath.Dir(local.Path)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", fmt.Errorf("create the destination's parent folder %s: %w", parent, err)
	}
	if real, err := restore.Resolve(parent); err != nil || real != parent {
		return "", fmt.Errorf("the destination's parent folder %s changed while the restore started (now %s, %v)", parent, real, err)
	}
	return filepath.Join(parent, restore.TempName(jobID)), nil
}

func countTree(dir string) (files, size int64) {
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files++
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	return files, size
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// itemList keeps the first max lines of rsync's --itemize-changes output
// and counts them all, so a huge restore does not fill memory.
type itemList struct {
	max     int
	lines   []string
	total   int
	partial []byte
}

var _ io.Writer = (*itemList)(nil)

func (l *itemList) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if len(l.partial) < 4096 {
				l.partial = append(l.partial, b...)
			}
			break
		}
		line := append(l.partial, b[:i]...)
		l.partial = nil
		b = b[i+1:]
		l.add(string(line))
	}
	return n, nil
}

func (l *itemList) add(line string) {
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	l.total++
	if len(l.lines) < l.max {
		l.lines = append(l.lines, proc.TrimStderr(line, 512))
	}
}
