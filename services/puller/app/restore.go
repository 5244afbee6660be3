package app

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
	"github.com/satoru/satoru/services/puller/internal/pull"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/remote"
)

// A restore job (domain.Job.Restore holds its options) runs in three
// steps under the site lease:
//
//  1. The destination is checked first, so a refused restore costs
//     nothing: it must not exist or be an empty folder unless Overwrite
//     is set. A local destination must lie outside staging_root and the
//     repository; a site destination is checked (and created 0700) by one
//     ssh command over the master connection preflight opened with the
//     site's pinned key.
//  2. `restic restore` of the chosen paths into
//     <staging_root>/.restore/<job_id> (0700), removed afterwards whatever
//     happens. The snapshotter only backs up <staging_root>/<site_uuid>,
//     so this folder is never snapshotted.
//  3. rsync puts each path at <destination>/<its base name>: locally with
//     folders 0700 and files 0600 owned by Satoru's user, to the site
//     with rsync over the same ssh (modes as in the snapshot, owners by
//     number where the remote user may set them). rsync never deletes in
//     the destination. A dry run runs rsync with --dry-run and reports
//     its --itemize-changes list (first restoreListCap lines) in an
//     event, writing nothing.

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
	if err := checkRestoreRequest(*r); err != nil {
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
		dest = r.Destination.LocalPath
		summary["destination"] = dest
		repo := p.Restic.Repository
		for _, forbidden := range []string{stagingRoot, repo} {
			if abs, err := filepath.Abs(forbidden); err == nil && (within(dest, abs) || within(abs, dest)) {
				return fail("destination %s overlaps %s (staging or the restic repository); restore into a folder outside them", dest, abs)
			}
		}
		if err := checkLocalDest(dest, r.Overwrite); err != nil {
			return fail("%v", err)
		}
	}
	if err := pull.CheckHeadroom([]string{stagingRoot}, b.MinFreeBytes, b.MinFreePercent); err != nil {
		return fail("disk headroom: %v; nothing restored", err)
	}

	// 2. restic restore into a private temp folder.
	tmp := filepath.Join(stagingRoot, ".restore", job.ID)
	if err := os.RemoveAll(tmp); err != nil { // a previous attempt's
		return fail("clear restore folder %s: %v", tmp, err)
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return fail("create restore folder %s: %v", tmp, err)
	}
	_ = os.Chmod(filepath.Dir(tmp), 0o700)
	defer os.RemoveAll(tmp)
	rec.Add(ctx, domain.JobEvent{Step: "restore", Message: fmt.Sprintf("restoring %d path(s) of snapshot %s", len(r.Paths), short(r.SnapshotID)),
		Data: map[string]any{"paths": r.Paths}})
	if err := rec.Flush(ctx); err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
	}
	start := time.Now()
	if err := p.Restic.RestorePaths(ctx, r.SnapshotID, tmp, r.Paths); err != nil {
		if ctx.Err() != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
		}
		return fail("restic restore of snapshot %s: %v", short(r.SnapshotID), err)
	}
	sources := make([]string, len(r.Paths))
	for i, sp := range r.Paths {
		sources[i] = filepath.Join(tmp, sp)
		if _, err := os.Lstat(sources[i]); err != nil {
			return fail("snapshot %s has no file or folder %s; nothing restored", short(r.SnapshotID), sp)
		}
	}
	files, size := countTree(tmp)
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
		if !r.DryRun {
			if err := os.MkdirAll(dest, 0o700); err != nil {
				return fail("create destination %s: %v", dest, err)
			}
		}
		args = LocalRestoreArgs(sources, dest, r.DryRun)
	}
	out := &itemList{max: restoreListCap}
	_, err = proc.Run(ctx, proc.Cmd{Step: "restore rsync", Path: orDefault(p.RsyncPath, "rsync"), Args: args, Stdout: out, Timeout: b.TargetTimeout})
	if err != nil {
		if ctx.Err() != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
		}
		return fail("rsync into %s: %v", summary["destination"], remote.ClassifyRunError(err))
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
		return notEmptyMsg("on the site " + dest)
	case remote.RestoreDirNotDir:
		return fmt.Sprintf("destination %s on the site exists and is not a folder; nothing restored", dest)
	case remote.RestoreDirUnread:
		return fmt.Sprintf("destination %s on the site cannot be read by the ssh user; nothing restored", dest)
	}
	return fmt.Sprintf("check destination %s on the site: %v", dest, remote.ClassifyRunError(err))
}

func notEmptyMsg(where string) string {
	return fmt.Sprintf("destination %s is not empty; nothing restored. Restore into a new or empty folder, "+
		`or set "overwrite": true to restore into it (files of the same name are replaced, other files are kept)`, where)
}

// checkLocalDest refuses a local destination that exists and is not an
// empty folder, unless overwrite (then it must still be a folder).
func checkLocalDest(dest string, overwrite bool) error {
	fi, err := os.Lstat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("destination %s exists and is not a folder; nothing restored", dest)
	}
	if overwrite {
		return nil
	}
	f, err := os.Open(dest)
	if err != nil {
		return fmt.Errorf("destination %s: %w", dest, err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return errors.New(notEmptyMsg(dest))
	}
	return nil
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

// checkRestoreRequest repeats the API's checks the puller relies on.
func checkRestoreRequest(r domain.RestoreRequest) error {
	if r.SnapshotID == "" || strings.Trim(r.SnapshotID, "0123456789abcdef") != "" {
		return fmt.Errorf("snapshot id %q is not hex", r.SnapshotID)
	}
	if len(r.Paths) == 0 {
		return errors.New("no paths")
	}
	for _, sp := range r.Paths {
		if err := remote.ValidatePath(sp); err != nil || filepath.Clean(sp) == "/" {
			return fmt.Errorf("path %q: must be absolute, not /, without NUL or line breaks", sp)
		}
	}
	d := r.Destination
	switch {
	case d.ToSite && d.LocalPath == "":
		return remote.ValidatePath(d.Path)
	case !d.ToSite && d.Path == "" && d.LocalPath != "":
		return remote.ValidatePath(d.LocalPath)
	}
	return errors.New("destination must be exactly one of local_path, or to_site with path")
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	p, dir = filepath.Clean(p), filepath.Clean(dir)
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
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
