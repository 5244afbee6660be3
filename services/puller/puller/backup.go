package puller

import (
	"context"
	"fmt"
	"time"

	"github.com/satoru/satoru/services/puller/internal/preflight"
	"github.com/satoru/satoru/services/puller/internal/pull"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/jobrun"
)

// BackupSettings are what a backup's pull step needs beyond preflight.
type BackupSettings struct {
	StagingRoot    string
	RepoPath       string // restic_repo_path, for the headroom check when it is a local folder
	MinFreeBytes   int64
	MinFreePercent int
	TargetTimeout  time.Duration
	IOTimeout      time.Duration
	ProgressEvery  time.Duration
	// ControlDir holds the ssh master sockets (0700).
	ControlDir string
}

// backup removes what pulls of the site killed mid-run left in staging,
// runs preflight over the site's master connection (or reuses checks the
// site passed moments ago), checks disk headroom, pulls every target into
// staging and hands the job to the snapshotter. When every target failed
// and one of them because its connection was refused, lost or stalled,
// the attempt is marked for retry.
func (p *Puller) backup(ctx context.Context, job domain.Job, rec *jobrun.Recorder) (result jobrun.Outcome) {
	began := time.Now()
	b := &backupRun{job: job, rec: rec}
	var err error
	if b.site, b.status, b.targets, err = p.load(ctx, job); err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
	}
	if len(b.targets) == 0 {
		return p.failBackup(ctx, b, "site has no targets to back up", nil)
	}
	p.removeLeftovers(ctx, b)
	// The master outlives a job that went well, so the site's next job
	// within ControlPersist skips the handshake; a failed one may have
	// left it broken, so it goes.
	defer func() { p.releaseMaster(b.res.SSH, result.Status == domain.StatusFailed) }()
	if out, ok := p.checkSite(ctx, b); !ok {
		return out
	}
	if out, ok := p.checkHeadroom(ctx, b); !ok {
		return out
	}
	rec.Time("preflight", time.Since(began))

	pullStart := time.Now()
	pulled, out, ok := p.pullAll(ctx, b)
	if !ok {
		return out
	}
	rec.Time("pull", time.Since(pullStart))
	p.settleChecks(ctx, b, pulled)
	return p.handOffBackup(ctx, b, pulled)
}

// backupRun is one backup's pull step as its steps fill it in.
type backupRun struct {
	job     domain.Job
	rec     *jobrun.Recorder
	site    domain.Site
	status  domain.SiteStatus
	targets []domain.Target
	in      preflight.Input  // what preflight checked
	res     preflight.Result // what it found, and how to reach the site
}

// pulledTargets is what the pulls of one backup did.
type pulledTargets struct {
	runs                      []domain.TargetRun
	ok, failed                int
	transient                 bool // a failed target's connection may come back
	transferred, bytes, files int64
}

func (t pulledTargets) summary() map[string]any {
	return map[string]any{
		"targets": len(t.runs), "targets_pulled": t.ok, "targets_failed": t.failed,
		"bytes_transferred": t.transferred, "bytes": t.bytes, "files": t.files,
	}
}

// failBackup ends the backup as failed with msg, recorded on the site.
func (p *Puller) failBackup(ctx context.Context, b *backupRun, msg string, summary map[string]any) jobrun.Outcome {
	if err := p.putHealth(ctx, b.status, b.job, domain.HealthFailed, msg, nil); err != nil {
		b.rec.Add(ctx, domain.JobEvent{Step: "health", Level: domain.LevelWarn, Message: "site health (failed) not recorded: " + err.Error()})
	}
	return jobrun.Outcome{Status: domain.StatusFailed, Error: msg, Summary: summary}
}

// removeLeftovers: a pull cut short without cleanup (Satoru killed
// mid-pull) left received files in staging. They go first, under the
// site lease (no pull of the site runs), before the headroom check they
// could otherwise fail for good, and before preflight, so an unreachable
// site's leftovers go too.
func (p *Puller) removeLeftovers(ctx context.Context, b *backupRun) {
	for _, c := range pull.RecoverInterrupted(ctx, p.Backup.StagingRoot, b.site.UUID, b.targets) {
		b.rec.Add(ctx, cleanupEvent(c))
	}
}

// checkSite runs preflight over the site's master connection. A site
// that passed every check moments ago, unchanged since, goes straight to
// the pull (preflight_reuse_seconds). ok is false when the job ends here.
func (p *Puller) checkSite(ctx context.Context, b *backupRun) (out jobrun.Outcome, ok bool) {
	controlPath, err := p.masterPath(b.site, b.status)
	if err != nil {
		return p.failBackup(ctx, b, err.Error(), nil), false
	}
	b.in = preflight.Input{Site: b.site, Status: b.status, Targets: b.targets, ControlPath: controlPath, Reuse: true}
	b.res = p.Checker.Run(ctx, b.in)
	for _, ev := range b.res.Events {
		b.rec.Add(ctx, ev)
	}
	if b.res.LearnedHostKey != "" {
		b.status.LearnedHostKey = b.res.LearnedHostKey
		b.in.Status = b.status
	}
	if !b.res.Reused {
		at := p.now()
		b.status.LastPreflightAt = &at
	}
	if ctx.Err() != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}, false
	}
	if !b.res.SiteOK() {
		p.Checker.Forget(b.site.UUID)
		out := p.failBackup(ctx, b, "preflight failed, nothing pulled: "+b.res.Error(), nil)
		out.Retry = b.res.Transient
		return out, false
	}
	return jobrun.Outcome{}, true
}

// checkHeadroom refuses to pull when staging or the repository is below
// the configured free space, then writes the checks' events.
func (p *Puller) checkHeadroom(ctx context.Context, b *backupRun) (out jobrun.Outcome, ok bool) {
	paths, msg := p.Backup.headroomPaths(), "free space above the configured headroom on staging and repository"
	if len(paths) == 1 {
		msg = "free space above the configured headroom on staging (the repository is at a backend URL: no local free space to check)"
	}
	if err := p.Backup.headroom().Check(paths...); err != nil {
		b.rec.Add(ctx, domain.JobEvent{Step: "headroom", Level: domain.LevelError, Message: err.Error()})
		return p.failBackup(ctx, b, "disk headroom: "+err.Error()+"; nothing pulled", nil), false
	}
	b.rec.Add(ctx, domain.JobEvent{Step: "headroom", Message: msg})
	if err := b.rec.Flush(ctx); err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}, false
	}
	return jobrun.Outcome{}, true
}

// pullAll pulls the targets one after another, skipping those preflight
// found unusable, then records every target's last scan in one write.
// ok is false when the job ends here (canceled, events not written).
func (p *Puller) pullAll(ctx context.Context, b *backupRun) (t pulledTargets, out jobrun.Outcome, ok bool) {
	cfg := pull.Config{
		SSH:                b.res.SSH,
		SSHPath:            p.Checker.SSHPath,
		RsyncPath:          p.RsyncPath,
		StagingRoot:        p.Backup.StagingRoot,
		RemoteTmpDir:       p.Checker.RemoteTmpDir,
		BandwidthLimitKbps: b.site.BandwidthLimitKbps,
		IOTimeout:          p.Backup.IOTimeout,
		TargetTimeout:      p.Backup.TargetTimeout,
		ProgressEvery:      p.Backup.ProgressEvery,
	}
	t.runs = make([]domain.TargetRun, 0, len(b.targets))
	scans := make(map[string]domain.Scan, len(b.targets))
	for _, target := range b.targets {
		if ctx.Err() != nil {
			return t, jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}, false
		}
		var r pull.Result
		if msg, bad := b.res.TargetFailures[target.TargetHash]; bad {
			// Preflight already found this target unusable: skip it, pull the rest.
			r = pull.Result{TargetHash: target.TargetHash, Path: target.Path, Mode: target.Mode, Status: domain.HealthFailed, Error: msg}
			b.rec.Add(ctx, domain.JobEvent{Step: "pull", Level: domain.LevelError, TargetHash: target.TargetHash,
				Message: fmt.Sprintf("target %s %s skipped: %s", target.TargetHash, target.Path, msg)})
		} else {
			r = p.pullTarget(ctx, cfg, b.site.UUID, target, b.rec)
		}
		t.add(target, r)
		p.Metrics.Target(b.site.UUID, string(r.Status), r.Transferred, r.Files)
		scans[target.TargetHash] = domain.Scan{At: p.now(), Status: r.Status, Bytes: r.Bytes, Files: r.Files, Error: r.Error}
		if err := b.rec.Flush(ctx); err != nil {
			return t, jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}, false
		}
	}
	if err := p.Store.SetTargetScans(ctx, b.site.UUID, scans); err != nil {
		b.rec.Add(ctx, domain.JobEvent{Step: "pull", Level: domain.LevelWarn,
			Message: "could not record the targets' last scans: " + err.Error()})
	}
	return t, jobrun.Outcome{}, true
}

// add counts one target's pull.
func (t *pulledTargets) add(target domain.Target, r pull.Result) {
	t.runs = append(t.runs, domain.TargetRun{TargetHash: target.TargetHash, Path: target.Path, Mode: target.Mode, Status: r.Status, Note: r.Note,
		Error: r.Error, FailedPaths: r.FailedPaths, Files: r.Files, Bytes: r.Bytes, Transferred: r.Transferred,
		DurationMS: r.Duration.Milliseconds()})
	if r.Status == domain.HealthFailed {
		t.failed++
		t.transient = t.transient || r.Transient
	} else {
		t.ok++
	}
	t.transferred += r.Transferred
	t.bytes += r.Bytes
	t.files += r.Files
}

// settleChecks keeps preflight's reuse window true to what the pulls
// showed: only a full check that every pull bore out opens it (so a site
// is checked in full every preflight_reuse_seconds); any failure closes
// it. A pull that failed after the checks were skipped runs them now, so
// the job says what is wrong with the site in the checks' own words.
func (p *Puller) settleChecks(ctx context.Context, b *backupRun, t pulledTargets) {
	switch {
	case t.failed == 0 && b.res.OK() && !b.res.Reused:
		p.Checker.Passed(b.in)
	case t.failed == 0:
		// A pass on reused checks keeps the window the full check opened.
	case b.res.Reused:
		p.Checker.Forget(b.site.UUID)
		if ctx.Err() == nil && !t.transient {
			b.rec.Add(ctx, domain.JobEvent{Step: preflight.StepReused, Level: domain.LevelWarn,
				Message: "a pull failed after the remote checks were skipped; running them again"})
			in := b.in
			in.Reuse = false
			for _, ev := range p.Checker.Run(ctx, in).Events {
				b.rec.Add(ctx, ev)
			}
		}
	default:
		p.Checker.Forget(b.site.UUID)
	}
}

// handOffBackup passes the job to the snapshotter when any target was
// pulled; when none was, the job fails (retried when a connection lost,
// refused or stalled mid-pull may be back: staging kept the last good
// copies meanwhile).
func (p *Puller) handOffBackup(ctx context.Context, b *backupRun, t pulledTargets) jobrun.Outcome {
	summary := t.summary()
	if t.ok == 0 {
		out := p.failBackup(ctx, b, fmt.Sprintf("every target failed (%d of %d); no snapshot made", t.failed, len(b.targets)), summary)
		out.Targets = t.runs
		out.Retry = t.transient
		return out
	}
	// The snapshotter writes the final health; keep what preflight
	// learned (a host key, when it ran). Reused checks learned nothing.
	if !b.res.Reused {
		if err := p.Store.PutSiteStatus(ctx, b.status); err != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: "record site status: " + err.Error(), Summary: summary}
		}
	}
	return jobrun.Outcome{Status: domain.StatusRunning, Summary: summary, Targets: t.runs, Next: events.StepSnapshot}
}

func (p *Puller) pullTarget(ctx context.Context, cfg pull.Config, siteUUID string, t domain.Target, rec *jobrun.Recorder) pull.Result {
	rec.Add(ctx, domain.JobEvent{Step: "pull", TargetHash: t.TargetHash,
		Message: fmt.Sprintf("pulling %s %s", t.Mode, t.Path)})
	progress := func(pr pull.Progress) {
		msg := fmt.Sprintf("%s: %d bytes so far", t.Path, pr.BytesDone)
		if pr.Percent >= 0 {
			msg += fmt.Sprintf(" (%d%%)", pr.Percent)
		}
		rec.Add(ctx, domain.JobEvent{Step: "pull_progress", TargetHash: t.TargetHash, Message: msg,
			Data: map[string]any{"bytes_done": pr.BytesDone, "percent": pr.Percent}})
	}
	var r pull.Result
	switch t.Mode {
	case domain.ModeSQLiteDump:
		r = pull.SQLite(ctx, cfg, siteUUID, t, progress)
	default:
		r = pull.Directory(ctx, cfg, siteUUID, t, progress)
	}
	for _, c := range r.Cleanups {
		rec.Add(ctx, cleanupEvent(c))
	}
	data := map[string]any{"files": r.Files, "bytes": r.Bytes, "transferred": r.Transferred,
		"duration_ms": r.Duration.Milliseconds(), "status": string(r.Status)}
	if r.Transient {
		data["transient"] = true
	}
	if len(r.FailedPaths) > 0 {
		data["failed_paths"] = r.FailedPaths
	}
	ev := domain.JobEvent{Step: "pull", TargetHash: t.TargetHash, Data: data}
	switch r.Status {
	case domain.HealthFailed:
		ev.Level, ev.Message = domain.LevelError, fmt.Sprintf("target %s %s failed: %s", t.TargetHash, t.Path, r.Error)
	case domain.HealthWarning:
		ev.Level, ev.Message = domain.LevelWarn, fmt.Sprintf("target %s %s partly pulled: %s", t.TargetHash, t.Path, r.Error)
	default:
		ev.Message = fmt.Sprintf("target %s %s pulled: %d files, %d bytes, %d transferred", t.TargetHash, t.Path, r.Files, r.Bytes, r.Transferred)
		if r.Note != "" {
			ev.Message += " (" + r.Note + ")"
		}
	}
	rec.Add(ctx, ev)
	return r
}

// cleanupEvent reports leftovers a pull removed from staging.
func cleanupEvent(c pull.Cleanup) domain.JobEvent {
	ev := domain.JobEvent{Step: "pull_cleanup", TargetHash: c.TargetHash, Message: fmt.Sprintf("target %s: %s", c.TargetHash, c.Message)}
	if c.Failed {
		ev.Level = domain.LevelWarn
	}
	return ev
}

// putHealth records a failed backup step on the site.
func (p *Puller) putHealth(ctx context.Context, st domain.SiteStatus, job domain.Job, h domain.Health, msg string, success *time.Time) error {
	at := p.now()
	st.SiteUUID = job.SiteUUID
	st.SetHealth(domain.HealthState{Status: h, Message: msg, UpdatedAt: at})
	st.LastScanAt = &at
	st.LastJobID = job.ID
	if success != nil {
		st.LastSuccessAt = success
	}
	return p.Store.PutSiteStatus(ctx, st)
}
