package snapshotter

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/ctxio"
	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/units"
)

// verifyStep is the step name of a verify job's events.
const verifyStep = "verify"

// verifyDirPrefix starts the name of every verify job's temporary folder
// under VerifyRoot, so leftovers of a crash are recognised.
const verifyDirPrefix = "job-"

// integrityOutputCap bounds the integrity_check output kept in the
// job's error: a badly damaged database lists thousands of problems.
const integrityOutputCap = 600

// TargetLister lists a site's targets.
type TargetLister interface {
	ListTargets(ctx context.Context, siteUUID string) ([]domain.Target, error)
}

// verify is a verify job, a restore test of the site's latest snapshot:
// restore all of it (restic reading every file back, --verify) into a
// private temporary folder under VerifyRoot, compare the restored regular
// files and bytes with the snapshot's own listing, run PRAGMA
// integrity_check on every SQLite target's restored database, and remove
// the folder, whatever happened. The outcome goes into the site's status
// (last_verify, last_verified_at); a failure holds the site's health at
// failed until a verify succeeds (domain.SiteStatus.SetVerify).
func (s *Snapshotter) verify(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	summary := map[string]any{}
	fail := func(msg string, retry bool) jobrun.Outcome {
		rec.Add(ctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelError, Message: msg})
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg, Summary: summary, Retry: retry}
	}
	if job.SiteUUID == "" {
		return fail("verify job without a site", false)
	}
	if s.VerifyRoot == "" {
		return fail("verify: no folder for restore tests configured (data_dir)", false)
	}
	vctx, cancel := jobrun.WithLimit(ctx, s.VerifyLimit)
	defer cancel()

	// Not while this process prunes; other processes' prunes are waited
	// for by restic's --retry-lock.
	release, err := s.repoLock.Shared(ctx, func() {
		rec.Add(ctx, domain.JobEvent{Step: verifyStep, Message: "waiting for retention (restic prune) in this process to finish"})
	})
	if err != nil {
		return fail("verify: waiting for the repository: "+err.Error(), false)
	}
	defer release()

	snap, found, err := s.latestSnapshot(vctx, job.SiteUUID)
	if err != nil {
		return fail("verify: "+err.Error(), errors.Is(err, restic.ErrLocked))
	}
	if !found {
		msg := "no snapshot of this site yet: nothing to verify"
		rec.Add(ctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelWarn, Message: msg})
		return jobrun.Outcome{Status: domain.StatusWarning, Error: msg, Summary: summary}
	}
	summary["snapshot_id"] = snap.ID
	rec.Add(ctx, domain.JobEvent{Step: verifyStep, Message: fmt.Sprintf("verifying snapshot %s of %s",
		short(snap.ID), snap.Time.UTC().Format(time.RFC3339)), Data: map[string]any{"snapshot_id": snap.ID}})

	res, problems, err := s.restoreTest(vctx, ctx, job, rec, snap, summary)
	if err != nil {
		if ctx.Err() != nil || vctx.Err() != nil || noVerdict(err) {
			// The test could not run or finish (canceled, the time limit,
			// no room, restic or sqlite3 missing, the repository locked or
			// unreachable): no verdict on the snapshot, the site's status
			// stays.
			return fail("verify could not run: "+err.Error(), errors.Is(err, restic.ErrLocked))
		}
		// Anything else (restic could not list or restore the snapshot)
		// is the verdict: it did not restore.
		problems = append(problems, err.Error())
	}
	res.JobID, res.SnapshotID, res.At = job.ID, snap.ID, s.now().Truncate(time.Millisecond)
	res.Status = domain.HealthSuccess
	if len(problems) > 0 {
		res.Status = domain.HealthFailed
		res.Error = strings.Join(problems, "; ")
	}
	s.recordVerify(ctx, rec, job, res)
	if res.Status == domain.HealthFailed {
		return fail("verification failed: "+res.Error, false)
	}
	rec.Add(ctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelInfo, Message: fmt.Sprintf(
		"snapshot %s restored and verified: %d files, %d bytes", short(snap.ID), res.Files, res.Bytes)})
	return jobrun.Outcome{Status: domain.StatusSuccess, Summary: summary}
}

// errSetup marks a failure of the test itself (its folder, the store, a
// local read), which says nothing about the snapshot.
var errSetup = errors.New("restore test setup")

// noVerdict reports whether err says nothing about the snapshot: the
// test could not run.
func noVerdict(err error) bool {
	for _, e := range []error{errSetup, disk.ErrLowDiskSpace, proc.ErrNotFound, restic.ErrLocked,
		restic.ErrBackendUnreachable, restic.ErrWrongPassword, restic.ErrNoRepository, restic.ErrNoSpace, restic.ErrCanceled} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// latestSnapshot is the newest snapshot of the site (its host and tag).
func (s *Snapshotter) latestSnapshot(ctx context.Context, site string) (restic.Snapshot, bool, error) {
	snaps, err := s.Repo.Snapshots(ctx, domain.SiteTag(site))
	if errors.Is(err, restic.ErrNoRepository) {
		return restic.Snapshot{}, false, nil
	}
	if err != nil {
		return restic.Snapshot{}, false, fmt.Errorf("list the site's snapshots: %w", err)
	}
	var latest restic.Snapshot
	found := false
	for _, sn := range snaps {
		if sn.Host != domain.ResticHost(site) {
			continue
		}
		if !found || sn.Time.After(latest.Time) {
			latest, found = sn, true
		}
	}
	return latest, found, nil
}

// restoreTest restores snap into a fresh private folder and checks it.
// problems are what the restored data got wrong; err is a failure to
// test at all (or restic's failure to restore). rctx bounds the work,
// jctx is the job's, for events and the folder's removal.
func (s *Snapshotter) restoreTest(rctx, jctx context.Context, job domain.Job, rec *jobrun.Recorder, snap restic.Snapshot, summary map[string]any) (res domain.VerifyResult, problems []string, err error) {
	want, err := s.Repo.Count(rctx, snap.ID)
	if err != nil {
		return res, nil, fmt.Errorf("list snapshot %s: %w", short(snap.ID), err)
	}
	summary["expected_files"], summary["expected_bytes"] = want.Files, want.Bytes
	if err := s.checkSpace(want.Bytes); err != nil {
		return res, nil, err
	}

	dir, err := s.verifyDir(job.ID)
	if err != nil {
		return res, nil, err
	}
	defer func() {
		// Also on failure and cancel: a restored copy of a site's data
		// must not stay behind.
		if rerr := os.RemoveAll(dir); rerr != nil {
			rec.Add(jctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelWarn, Message: "removing the restore test's folder: " + rerr.Error()})
		}
	}()

	if err := s.Repo.RestoreVerified(rctx, snap.ID, dir); err != nil {
		return res, nil, fmt.Errorf("restic restore of snapshot %s: %w", short(snap.ID), err)
	}
	got, err := countFiles(rctx, dir)
	if err != nil {
		return res, nil, fmt.Errorf("%w: count the restored files: %w", errSetup, err)
	}
	res.Files, res.Bytes = got.Files, got.Bytes
	summary["files"], summary["bytes"] = got.Files, got.Bytes
	rec.Add(jctx, domain.JobEvent{Step: verifyStep, Message: fmt.Sprintf(
		"restored %d files, %d bytes; the snapshot lists %d files, %d bytes", got.Files, got.Bytes, want.Files, want.Bytes),
		Data: map[string]any{"files": got.Files, "bytes": got.Bytes, "expected_files": want.Files, "expected_bytes": want.Bytes}})
	if got != want {
		problems = append(problems, fmt.Sprintf("restored %d files, %d bytes, but the snapshot lists %d files, %d bytes",
			got.Files, got.Bytes, want.Files, want.Bytes))
	}

	checked, sqlProblems, err := s.checkDatabases(rctx, jctx, job, rec, snap, dir)
	summary["databases_checked"] = checked
	if err != nil {
		return res, problems, err
	}
	return res, append(problems, sqlProblems...), nil
}

// checkSpace refuses a restore of size bytes that would leave the disk of
// VerifyRoot (data_dir: the embedded store and NATS live there too) below
// the headroom (staging_min_free_bytes / _percent); SQLite checks may
// need a copy of a database beside it, which the headroom covers.
func (s *Snapshotter) checkSpace(size int64) error {
	sp, err := disk.Stat(s.VerifyRoot)
	if err != nil {
		return fmt.Errorf("%w: disk space of %s: %w", errSetup, s.VerifyRoot, err)
	}
	sp.FreeBytes -= size
	if err := s.VerifyHeadroom.Judge(s.VerifyRoot, sp); err != nil {
		return fmt.Errorf("restoring %s would leave too little space: %w", units.Bytes(size), err)
	}
	return nil
}

// verifyDir makes the job's private temporary folder under VerifyRoot.
func (s *Snapshotter) verifyDir(jobID string) (string, error) {
	if err := os.MkdirAll(s.VerifyRoot, 0o700); err != nil {
		return "", fmt.Errorf("%w: verify folder %s: %w", errSetup, s.VerifyRoot, err)
	}
	if err := os.Chmod(s.VerifyRoot, 0o700); err != nil {
		return "", fmt.Errorf("%w: verify folder %s: %w", errSetup, s.VerifyRoot, err)
	}
	// MkdirTemp makes it 0700.
	dir, err := os.MkdirTemp(s.VerifyRoot, verifyDirPrefix+jobID+"-")
	if err != nil {
		return "", fmt.Errorf("%w: verify folder: %w", errSetup, err)
	}
	return dir, nil
}

// cleanVerifyRoot removes the folders of verify jobs a crash left behind.
// It runs before the service takes jobs, so none of its own is there.
func (s *Snapshotter) cleanVerifyRoot() {
	if s.VerifyRoot == "" {
		return
	}
	entries, err := os.ReadDir(s.VerifyRoot)
	if err != nil {
		return // none yet
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), verifyDirPrefix) {
			p := filepath.Join(s.VerifyRoot, e.Name())
			if err := os.RemoveAll(p); err != nil && s.Log != nil {
				s.Log.Warn("cannot remove a verify folder left by a crash", "path", p, "err", err)
			}
		}
	}
}

// countFiles counts the regular files under dir and their bytes, as
// restic ls counts a snapshot's "file" nodes.
func countFiles(ctx context.Context, dir string) (restic.Totals, error) {
	var t restic.Totals
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		t.Files++
		t.Bytes += fi.Size()
		return nil
	})
	return t, err
}

// checkDatabases runs PRAGMA integrity_check on the restored database of
// each of the site's SQLite targets. A target with no database in the
// snapshot (added after it, or its pull failed then) is noted and
// skipped. problems name the target and what integrity_check said.
func (s *Snapshotter) checkDatabases(rctx, jctx context.Context, job domain.Job, rec *jobrun.Recorder, snap restic.Snapshot, dir string) (checked int, problems []string, err error) {
	if s.Targets == nil {
		return 0, nil, fmt.Errorf("%w: no target store wired", errSetup)
	}
	targets, err := s.Targets.ListTargets(rctx, job.SiteUUID)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: list the site's targets: %w", errSetup, err)
	}
	for _, t := range targets {
		if t.Mode != domain.ModeSQLiteDump {
			continue
		}
		db, gz, ok := restoredDatabase(dir, snap.Paths, t)
		if !ok {
			rec.Add(jctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelWarn, TargetHash: t.TargetHash, Message: fmt.Sprintf(
				"target %s %s: no database in snapshot %s (added later, or its pull failed then): not checked", t.TargetHash, t.Path, short(snap.ID))})
			continue
		}
		if gz {
			plain := filepath.Join(dir, ".integrity-"+t.TargetHash+".db")
			if err := gunzip(rctx, db, plain); err != nil {
				problems = append(problems, fmt.Sprintf("sqlite target %s (%s): decompress %s: %v", t.TargetHash, t.Path, filepath.Base(db), err))
				continue
			}
			db = plain
		}
		out, err := s.integrityCheck(rctx, db)
		if err != nil && (rctx.Err() != nil || errors.Is(err, proc.ErrNotFound)) {
			return checked, problems, fmt.Errorf("integrity_check of target %s: %w", t.TargetHash, err)
		}
		checked++
		if err != nil {
			problems = append(problems, fmt.Sprintf("sqlite target %s (%s): PRAGMA integrity_check: %v", t.TargetHash, t.Path, err))
			rec.Add(jctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelError, TargetHash: t.TargetHash, Message: problems[len(problems)-1]})
			continue
		}
		if out != "ok" {
			problems = append(problems, fmt.Sprintf("sqlite target %s (%s): PRAGMA integrity_check: %s", t.TargetHash, t.Path, out))
			rec.Add(jctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelError, TargetHash: t.TargetHash, Message: problems[len(problems)-1]})
			continue
		}
		rec.Add(jctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelInfo, TargetHash: t.TargetHash,
			Message: fmt.Sprintf("sqlite target %s (%s): integrity_check ok", t.TargetHash, t.Path)})
	}
	return checked, problems, nil
}

// restoredDatabase finds target t's database in the restored folder dir:
// the puller keeps it at <site staging>/<target hash>/<base name> (the
// checked, decompressed .backup copy); a gzipped dump (<name>.gz) is
// taken too. roots are the snapshot's paths (the site's staging folder
// when the backup ran, which may differ from today's).
func restoredDatabase(dir string, roots []string, t domain.Target) (path string, gz, ok bool) {
	name := filepath.Base(t.Path)
	for _, root := range roots {
		base := filepath.Join(dir, root, t.TargetHash, name)
		for _, c := range []struct {
			p  string
			gz bool
		}{{base, false}, {base + ".gz", true}} {
			if fi, err := os.Lstat(c.p); err == nil && fi.Mode().IsRegular() {
				return c.p, c.gz, true
			}
		}
	}
	return "", false, false
}

// IntegrityArgs is the sqlite3 argv that checks db: no ~/.sqliterc
// (-init /dev/null), stop at the first error (-bail).
func IntegrityArgs(db string) []string {
	return []string{"-batch", "-bail", "-init", os.DevNull, db, "PRAGMA integrity_check;"}
}

// integrityCheck runs sqlite3's PRAGMA integrity_check on db (a restored
// copy, so sqlite3 may open it read-write) and returns what it printed,
// trimmed; an error is sqlite3 failing to run the check (a file that is
// no database, a malformed header), with its stderr.
func (s *Snapshotter) integrityCheck(ctx context.Context, db string) (string, error) {
	bin := s.SQLiteBin
	if bin == "" {
		bin = "sqlite3"
	}
	res, err := proc.Run(ctx, proc.Cmd{Step: "integrity_check", Path: bin, Args: IntegrityArgs(db)})
	out := proc.TrimStderr(strings.TrimSpace(string(res.Stdout)), integrityOutputCap)
	if err != nil {
		if out != "" {
			return "", fmt.Errorf("%w (output: %s)", err, out)
		}
		return "", err
	}
	return out, nil
}

// gunzip decompresses src into dst (0600), stopping when ctx ends.
func gunzip(ctx context.Context, src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, ctxio.Reader(ctx, zr))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// recordVerify writes the verify's outcome into the site's status and
// metrics. A failed write is a warning event: the job's verdict stands.
func (s *Snapshotter) recordVerify(ctx context.Context, rec *jobrun.Recorder, job domain.Job, res domain.VerifyResult) {
	s.VerifyMetrics.Verified(job.SiteUUID, res.Status == domain.HealthSuccess, res.At)
	st, err := s.Store.GetSiteStatus(ctx, job.SiteUUID)
	if err == nil {
		st.SiteUUID = job.SiteUUID
		st.SetVerify(res)
		err = s.Store.PutSiteStatus(ctx, st)
	}
	if err != nil {
		rec.Add(ctx, domain.JobEvent{Step: verifyStep, Level: domain.LevelWarn, Message: "verify result not recorded on the site: " + err.Error()})
	}
}
