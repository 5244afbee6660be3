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
	RepoPath       string // local restic repo, for the headroom check
	MinFreeBytes   int64
	MinFreePercent int
	TargetTimeout  time.Duration
	IOTimeout      time.Duration
	ProgressEvery  time.Duration
	// ControlDir holds the ssh master sockets (0700).
	ControlDir string
}

// backup removes what pulls of the site killed mid-run left in staging,
// runs preflight over the site's master connection, checks disk headroom,
// pulls every target into staging and hands the job to the snapshotter.
// When every target failed and one of them because its connection was
// refused, lost or stalled, the attempt is marked for retry.
func (p *Puller) backup(ctx context.Context, job domain.Job, rec *jobrun.Recorder) (result jobrun.Outcome) {
	began := time.Now()
	site, status, targets, err := p.load(ctx, job)
	if err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
	}
	fail := func(msg string, summary map[string]any) jobrun.Outcome {
		if err := p.putHealth(ctx, status, job, domain.HealthFailed, msg, nil); err != nil {
			rec.Add(ctx, domain.JobEvent{Step: "health", Level: domain.LevelWarn, Message: "site health (failed) not recorded: " + err.Error()})
		}
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg, Summary: summary}
	}
	if len(targets) == 0 {
		return fail("site has no targets to back up", nil)
	}

	// A pull cut short without cleanup (Satoru killed mid-pull) left
	// received files in staging. They go first, under the site lease (no
	// pull of the site runs), before the headroom check they could
	// otherwise fail for good, and before preflight, so an unreachable
	// site's leftovers go too.
	for _, c := range pull.RecoverInterrupted(ctx, p.Backup.StagingRoot, site.UUID, targets) {
		rec.Add(ctx, cleanupEvent(c))
	}

	controlPath, err := p.masterPath(site, status)
	if err != nil {
		return fail(err.Error(), nil)
	}
	// A site that passed every check moments ago, unchanged since, goes
	// straight to the pull (preflight_reuse_seconds).
	in := preflight.Input{Site: site, Status: status, Targets: targets, ControlPath: controlPath, Reuse: true}
	res := p.Checker.Run(ctx, in)
	// The master outlives a job that went well, so the site's next job
	// within ControlPersist skips the handshake; a failed one may have
	// left it broken, so it goes.
	defer func() { p.releaseMaster(res.SSH, result.Status == domain.StatusFailed) }()
	for _, ev := range res.Events {
		rec.Add(ctx, ev)
	}
	if res.LearnedHostKey != "" {
		status.LearnedHostKey = res.LearnedHostKey
		in.Status = status
	}
	if !res.Reused {
		at := p.now()
		status.LastPreflightAt = &at
	}
	if ctx.Err() != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
	}
	if !res.SiteOK() {
		p.Checker.Forget(site.UUID)
		out := fail("preflight failed, nothing pulled: "+res.Error(), nil)
		out.Retry = res.Transient
		return out
	}
	b := p.Backup
	if err := b.headroom().Check(b.StagingRoot, b.RepoPath); err != nil {
		rec.Add(ctx, domain.JobEvent{Step: "headroom", Level: domain.LevelError, Message: err.Error()})
		return fail("disk headroom: "+err.Error()+"; nothing pulled", nil)
	}
	rec.Add(ctx, domain.JobEvent{Step: "headroom", Message: "free space above the configured headroom on staging and repository"})
	if err := rec.Flush(ctx); err != nil {
		return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
	}
	rec.Time("preflight", time.Since(began))
	pullStart := time.Now()

	cfg := pull.Config{
		SSH:                res.SSH,
		SSHPath:            p.Checker.SSHPath,
		RsyncPath:          p.RsyncPath,
		StagingRoot:        b.StagingRoot,
		RemoteTmpDir:       p.Checker.RemoteTmpDir,
		BandwidthLimitKbps: site.BandwidthLimitKbps,
		IOTimeout:          b.IOTimeout,
		TargetTimeout:      b.TargetTimeout,
		ProgressEvery:      b.ProgressEvery,
	}
	runs := make([]domain.TargetRun, 0, len(targets))
	scans := make(map[string]domain.Scan, len(targets))
	var ok, failed int
	transient := false
	var transferred, bytes, files int64
	for _, t := range targets {
		if ctx.Err() != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: ctx.Err().Error()}
		}
		var r pull.Result
		if msg, bad := res.TargetFailures[t.TargetHash]; bad {
			// Preflight already found this target unusable: skip it, pull the rest.
			r = pull.Result{TargetHash: t.TargetHash, Path: t.Path, Mode: t.Mode, Status: domain.HealthFailed, Error: msg}
			rec.Add(ctx, domain.JobEvent{Step: "pull", Level: domain.LevelError, TargetHash: t.TargetHash,
				Message: fmt.Sprintf("target %s %s skipped: %s", t.TargetHash, t.Path, msg)})
		} else {
			r = p.pullTarget(ctx, cfg, site.UUID, t, rec)
		}
		run := domain.TargetRun{TargetHash: t.TargetHash, Path: t.Path, Mode: t.Mode, Status: r.Status, Note: r.Note,
			Error: r.Error, FailedPaths: r.FailedPaths, Files: r.Files, Bytes: r.Bytes, Transferred: r.Transferred,
			DurationMS: r.Duration.Milliseconds()}
		runs = append(runs, run)
		if r.Status == domain.HealthFailed {
			failed++
			transient = transient || r.Transient
		} else {
			ok++
		}
		p.Metrics.Target(site.UUID, string(r.Status), r.Transferred, r.Files)
		transferred += r.Transferred
		bytes += r.Bytes
		files += r.Files
		scans[t.TargetHash] = domain.Scan{At: p.now(), Status: r.Status, Bytes: r.Bytes, Files: r.Files, Error: r.Error}
		if err := rec.Flush(ctx); err != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: err.Error()}
		}
	}
	// Every target's last scan in one write.
	if err := p.Store.SetTargetScans(ctx, site.UUID, scans); err != nil {
		rec.Add(ctx, domain.JobEvent{Step: "pull", Level: domain.LevelWarn,
			Message: "could not record the targets' last scans: " + err.Error()})
	}
	rec.Time("pull", time.Since(pullStart))
	summary := map[string]any{
		"targets": len(targets), "targets_pulled": ok, "targets_failed": failed,
		"bytes_transferred": transferred, "bytes": bytes, "files": files,
	}
	switch {
	case failed == 0 && res.OK() && !res.Reused:
		// Only a full check starts the reuse window: every
		// preflight_reuse_seconds a backup checks everything again.
		p.Checker.Passed(in)
	case failed == 0:
		// A pass on reused checks keeps the window the full check opened.
	case res.Reused:
		// The checks were skipped and a pull failed: run them now, so the
		// job says what is wrong with the site in the checks' own words.
		p.Checker.Forget(site.UUID)
		if ctx.Err() == nil && !transient {
			rec.Add(ctx, domain.JobEvent{Step: preflight.StepReused, Level: domain.LevelWarn,
				Message: "a pull failed after the remote checks were skipped; running them again"})
			in.Reuse = false
			for _, ev := range p.Checker.Run(ctx, in).Events {
				rec.Add(ctx, ev)
			}
		}
	default:
		p.Checker.Forget(site.UUID)
	}
	if ok == 0 {
		out := fail(fmt.Sprintf("every target failed (%d of %d); no snapshot made", failed, len(targets)), summary)
		out.Targets = runs
		// A connection lost, refused or stalled mid-pull may be back on
		// the next attempt; staging kept the last good copies meanwhile.
		out.Retry = transient
		return out
	}
	// The snapshotter writes the final health; keep what preflight
	// learned (a host key, when it ran). Reused checks learned nothing.
	if !res.Reused {
		if err := p.Store.PutSiteStatus(ctx, status); err != nil {
			return jobrun.Outcome{Status: domain.StatusFailed, Error: "record site status: " + err.Error(), Summary: summary}
		}
	}
	return jobrun.Outcome{Status: domain.StatusRunning, Summary: summary, Targets: runs, Next: events.StepSnapshot}
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
	st.Health = domain.HealthState{Status: h, Message: msg, UpdatedAt: at}
	st.LastScanAt = &at
	st.LastJobID = job.ID
	if success != nil {
		st.LastSuccessAt = success
	}
	return p.Store.PutSiteStatus(ctx, st)
}
