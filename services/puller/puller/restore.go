package puller

import (
	"bytes"
	"context"
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
	"github.com/satoru/satoru/shared/restore"
)

// A restore job (domain.Job.Restore holds its options) runs in three
// steps under the site lease:
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
	fail := func(format string, args ...any) jobrun.Outcome {
		msg := fmt.Sprintf(format, args...)
		rec.Add(ctx, domain.JobEvent{Step: "restore", Level: domain.LevelError, Message: msg})
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg}
	}
	r := job.Restore
	if r == nil {
		return fail("restore job has no options; create restores with POST /api/v1/sites/{site_uuid}/restores")
	}
	if err := restore.ValidateJob(job.ID, *r); err != nil {
		return fail("invalid restore request: %v", err)
	}
	if p.Restic.Repository == "" {
		return fail("no restic repository is configured for the puller")
	}
	b := p.Backup
	if b.StagingRoot == "" {
		return fail("no staging_root is configured for the puller")
	}
	stagingRoot, err := filepath.Abs(b.StagingRoot)
	if err != nil {
		return fail("staging_root: %v", err)
	}
	summary := map[string]any{"snapshot_id": r.SnapshotID, "paths": len(r.Paths), "dry_run": r.DryRun, "overwrite": r.Overwrite}

	// 1. The destination.
	var dest string
	var local restore.Local
	var ssh remote.SSHConfig
	var bwLimit int
	if r.Destination.ToSite {
		dest = r.Destination.Path
		summary["destination"] = "site:" + dest
		site, err := p.Store.GetSite(ctx, job.SiteUUID)
		if err != nil {
			return fail("load site %s: %v", job.SiteUUID, err)
		}
		status, err := p.Store.GetSiteStatus(ctx, job.SiteUUID)
		if err != nil {
			return fail("load status of site %s: %v", job.SiteUUID, err)
		}
		controlPath, err := p.masterPath(site, status)
		if err != nil {
			return fail("%v", err)
		}
		res := p.Checker.Run(ctx, preflight.Input{Site: site, Status: status, ControlPath: controlPath})
		defer func() { p.releaseMaster(res.SSH, result.Status == domain.StatusFailed) }()
		for _, ev := range res.Events {
			rec.Add(ctx, ev)
		}
		if ctx.Err() != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
		}
		if !res.SiteOK() {
			return fail("preflight failed, nothing restored: %s", res.Error())
		}
		if res.LearnedHostKey != "" {
			status.SiteUUID, status.LearnedHostKey = site.UUID, res.LearnedHostKey
			if err := p.Store.PutSiteStatus(ctx, status); err != nil {
				return fail("record the learned host key: %v", err)
			}
		}
		ssh = res.SSH
		if msg := p.prepareSiteDest(ctx, ssh, dest, r.Overwrite, r.DryRun); msg != "" {
			return fail("%s", msg)
		}
		bwLimit = site.BandwidthLimitKbps
	} else {
		summary["destination"] = r.Destination.LocalPath
		local, err = p.guard(stagingRoot).Local(r.Destination.LocalPath, r.Overwrite)
		if err != nil {
			return fail("%v", err)
		}
		dest = local.Path
		if dest != r.Destination.LocalPath {
			summary["resolved_destination"] = dest
		}
	}
	// 2. restic restore into a fresh private folder.
	inStaging := r.Destination.ToSite || r.DryRun
	room := stagingRoot
	if !inStaging {
		room = filepath.Dir(local.Path)
	}
	if err := b.headroom().Check(room); err != nil {
		return fail("disk headroom: %v; nothing restored", err)
	}
	tmp, err := restoreTemp(job.ID, stagingRoot, local, inStaging)
	if err != nil {
		return fail("%v; nothing restored", err)
	}
	if err := os.RemoveAll(tmp); err != nil { // a previous attempt's
		return fail("clear restore folder %s: %v", tmp, err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fail("create restore folder %s: %v", tmp, err)
	}
	defer os.RemoveAll(tmp)
	tree := filepath.Join(tmp, "snapshot")
	rec.Add(ctx, domain.JobEvent{Step: "restore", Message: fmt.Sprintf("restoring %d path(s) of snapshot %s", len(r.Paths), short(r.SnapshotID)),
		Data: map[string]any{"paths": r.Paths}})
	if err := rec.Flush(ctx); err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
	}
	start := time.Now()
	if err := p.Restic.RestorePaths(ctx, r.SnapshotID, tree, r.Paths); err != nil {
		if ctx.Err() != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
		}
		return fail("restic restore of snapshot %s: %v", short(r.SnapshotID), err)
	}
	sources := make([]string, len(r.Paths))
	for i, sp := range r.Paths {
		sources[i] = filepath.Join(tree, sp)
		if _, err := os.Lstat(sources[i]); err != nil {
			return fail("snapshot %s has no file or folder %s; nothing restored", short(r.SnapshotID), sp)
		}
	}
	files, size := countTree(tree)
	summary["files"], summary["bytes"] = files, size
	rec.Add(ctx, domain.JobEvent{Step: "restore", Message: fmt.Sprintf("restic restored %d files, %d bytes in %s", files, size, time.Since(start).Round(time.Millisecond)),
		Data: map[string]any{"files": files, "bytes": size}})

	// 3. Into place.
	var args []string
	if r.Destination.ToSite {
		args, err = remote.RsyncPushArgs(remote.RsyncPush{SSH: ssh, LocalPaths: sources, RemoteDir: dest, DryRun: r.DryRun,
			BWLimitKiBps: bwLimit, IOTimeout: b.IOTimeout})
		if err != nil {
			return fail("rsync to the site: %v", err)
		}
	} else {
		into := dest
		if !local.Exists && !r.DryRun {
			// Filled inside the temporary folder, renamed into place below.
			into = filepath.Join(tmp, "into")
			if err := os.Mkdir(into, 0o700); err != nil {
				return fail("create restore folder %s: %v", into, err)
			}
		}
		args = LocalRestoreArgs(sources, into, r.DryRun)
	}
	out := &itemList{max: restoreListCap}
	_, err = proc.Run(ctx, proc.Cmd{Step: "restore rsync", Path: orDefault(p.RsyncPath, "rsync"), Args: args, Stdout: out, Timeout: b.TargetTimeout})
	if err != nil {
		if ctx.Err() != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
		}
		return fail("rsync into %s: %v", summary["destination"], remote.ClassifyRunError(err))
	}
	if !r.Destination.ToSite && !local.Exists && !r.DryRun {
		if err := restore.MoveNew(filepath.Join(tmp, "into"), dest); err != nil {
			return fail("move the restored files into %s: %v; nothing restored", dest, err)
		}
	}
	summary["changes"] = out.total
	data := map[string]any{"changes": orEmpty(out.lines), "changes_total": out.total}
	if out.total > len(out.lines) {
		data["truncated"] = true
	}
	if r.DryRun {
		rec.Add(ctx, domain.JobEvent{Step: "restore_dry_run", Data: data,
			Message: fmt.Sprintf("dry run: %d change(s) would be made in %s; nothing was written", out.total, summary["destination"])})
	} else {
		rec.Add(ctx, domain.JobEvent{Step: "restore", Data: data,
			Message: fmt.Sprintf("restored %d path(s) into %s: %d change(s)", len(r.Paths), summary["destination"], out.total)})
	}
	return jobrun.Outcome{Status: domain.StatusSuccess, Summary: summary}
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

// LocalRestoreArgs is the argv after "rsync" that copies each source
// (no trailing slash: the entry itself) into dest on this host: folders
// 0700, files 0600, times and symlinks kept, owners not (the files
// belong to Satoru's user), nothing deleted in dest.
func LocalRestoreArgs(sources []string, dest string, dryRun bool) []string {
	args := []string{"-rlt", "--chmod=D0700,F0600", "--itemize-changes"}
	if dryRun {
		args = append(args, "--dry-run")
	}
	args = append(args, "--")
	for _, s := range sources {
		args = append(args, strings.TrimRight(s, "/"))
	}
	return append(args, strings.TrimRight(dest, "/")+"/")
}

// guard is the restore guard: the configured areas, and always the
// staging root, the repository and the ssh control folder.
func (p *Puller) guard(stagingRoot string) restore.Guard {
	areas := append([]restore.Area{
		{Key: "staging_root", Path: stagingRoot},
		{Key: "restic_repo_path", Path: p.Restic.Repository},
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
		_ = os.Chmod(dir, 0o700)
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
