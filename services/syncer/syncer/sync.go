package syncer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/proc"
	"github.com/satoru/satoru/shared/repoguard"
	"github.com/satoru/satoru/shared/restic"
)

// Store is what the syncer reads and writes besides the job.
type Store interface {
	GetSyncState(ctx context.Context, id string) (domain.SyncState, error)
	PutSyncState(ctx context.Context, st domain.SyncState) error
}

// Syncer copies the local repository offsite.
type Syncer struct {
	Store  Store
	Local  restic.Repo
	Remote restic.Repo
	// Limit bounds one sync's restic work; 0 means none.
	Limit   time.Duration
	Metrics *Metrics
	Now     func() time.Time
	// Guard clears the locks that killed restic runs left in either
	// repository; nil in tests of one syncer.
	Guard *repoguard.Guard

	// initialised remembers an offsite repository known to exist, so a
	// sync costs one restic run fewer (each opens the repository; over
	// the network that is more than the ~0.6 s of a local one).
	initialised atomic.Bool
}

func (s *Syncer) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Pick returns the work for a job this service runs.
func (s *Syncer) Pick(job domain.Job) (jobrun.Work, error) {
	if job.Type != domain.JobResticSync {
		return nil, fmt.Errorf("syncer: job type %q is not supported by this version", job.Type)
	}
	if s.Remote.Repository == "" {
		return nil, errors.New("offsite sync is not configured: set restic_b2_repository (and restic_b2_account_id / restic_b2_account_key)")
	}
	if job.SiteUUID != "" {
		// A site's lease would not keep two syncs apart.
		return nil, fmt.Errorf("syncer: restic_sync is a repository-level job, but job %s names site %q", job.ID, job.SiteUUID)
	}
	return s.sync, nil
}

// sync is one offsite sync: make sure the offsite repository exists
// (initialised with the local chunker parameters), copy every local
// snapshot it lacks, then measure what is still pending, all under the
// repository's maintenance lease (repoguard.Maintenance). Restic runs:
// `cat config` once per process (plus `init` the first time), `copy`,
// and the two snapshot listings side by side. Events and state writes use
// the job's ctx; restic runs use sctx, bounded by Limit.
func (s *Syncer) sync(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	run := &syncRun{rec: rec, repo: restic.RedactLocation(s.Remote.Repository)}
	if out, ok := s.loadState(ctx, run); !ok {
		return out
	}
	// The cluster-wide maintenance lease: no retention (prune) runs on any
	// host while the copy reads the repository, nor a second copy. Waiting
	// for it does not count against the sync's limit.
	if s.Guard != nil {
		held, err := s.Guard.Maintenance(ctx, "sync-"+job.ID, func(holder string) {
			rec.Add(ctx, domain.JobEvent{Step: "sync", Message: "waiting for the repository's maintenance lease: " + holder})
		})
		if err != nil {
			msg := "waiting for the repository's maintenance lease: " + err.Error()
			rec.Add(ctx, domain.JobEvent{Step: "sync", Level: domain.LevelError, Message: msg})
			return jobrun.Outcome{Status: domain.StatusFailed, Error: msg}
		}
		defer s.Guard.Release(held)
	}
	sctx, cancel := jobrun.WithLimit(ctx, s.Limit)
	defer cancel()
	s.clearDeadLocks(ctx, sctx, rec)
	if out, done := s.openOffsite(ctx, sctx, run); done {
		return out
	}
	res, out, done := s.copyAll(ctx, sctx, run)
	if done {
		return out
	}
	return s.finish(ctx, sctx, run, res)
}

// syncRun is one sync as its steps fill it in.
type syncRun struct {
	rec  *jobrun.Recorder
	repo string           // the offsite repository, redacted for messages
	st   domain.SyncState // written at the end, whatever the outcome
}

// loadState starts this attempt's sync state from the stored one, which
// keeps last_success_at and the pending counts until this sync knows better.
func (s *Syncer) loadState(ctx context.Context, run *syncRun) (jobrun.Outcome, bool) {
	prev, err := s.Store.GetSyncState(ctx, domain.OffsiteSyncStateID)
	if err != nil {
		// Writing now could lose last_success_at; leave the state alone.
		msg := "read sync state: " + err.Error()
		run.rec.Add(ctx, domain.JobEvent{Step: "sync", Level: domain.LevelError, Message: msg})
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg}, false
	}
	started := s.now()
	run.st = prev
	run.st.ID, run.st.Repository, run.st.LastAttemptAt = domain.OffsiteSyncStateID, run.repo, &started
	run.st.SnapshotsCopied, run.st.Bytes = 0, 0
	return jobrun.Outcome{}, true
}

// fail ends a sync whose restic step op failed, recording the failure in
// sync_state unless the job itself was stopped.
func (s *Syncer) fail(ctx context.Context, run *syncRun, op string, err error) jobrun.Outcome {
	msg := Describe(op, err, run.repo, s.Limit)
	if ctx.Err() != nil {
		// Canceled by request, lease lost or shutting down: the job
		// says so (the executor sets its outcome); the copy did not
		// fail, so sync_state keeps its status.
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg}
	}
	run.st.Status, run.st.Error = domain.HealthFailed, msg
	run.rec.Add(ctx, domain.JobEvent{Step: "sync", Level: domain.LevelError, Message: msg})
	s.put(ctx, run.rec, run.st)
	return jobrun.Outcome{Status: domain.StatusFailed, Error: msg, Summary: summaryOf(run.st, 0)}
}

// nothingYet ends a sync that found no local repository: no backup
// has run, so the offsite copy is as current as it can be.
func (s *Syncer) nothingYet(ctx, sctx context.Context, run *syncRun, err error) (jobrun.Outcome, bool) {
	if !errors.Is(err, restic.ErrNoRepository) {
		return jobrun.Outcome{}, false
	}
	if ok, lerr := s.Local.Exists(sctx); lerr != nil || ok {
		return jobrun.Outcome{}, false
	}
	done := s.now()
	run.st.Status, run.st.Error, run.st.LastSuccessAt = domain.HealthSuccess, "", &done
	run.st.SnapshotsPending, run.st.OldestPendingAt = 0, nil
	msg := "nothing to sync: the local repository does not exist yet (no backup has run)"
	run.rec.Add(ctx, domain.JobEvent{Step: "sync", Message: msg})
	s.put(ctx, run.rec, run.st)
	return jobrun.Outcome{Status: domain.StatusSuccess, Summary: summaryOf(run.st, 0)}, true
}

// clearDeadLocks removes the locks a copy killed with its process left
// in both repositories, so this sync does not wait on them.
func (s *Syncer) clearDeadLocks(ctx, sctx context.Context, rec *jobrun.Recorder) {
	if s.Guard == nil {
		return
	}
	if dead, err := s.Guard.ClearStale(sctx, s.Local, s.Remote); err != nil {
		rec.Add(ctx, domain.JobEvent{Step: "sync", Level: domain.LevelWarn, Message: "clearing the locks of restic processes that died: " + err.Error()})
	} else if len(dead) > 0 {
		rec.Add(ctx, domain.JobEvent{Step: "sync", Level: domain.LevelWarn, Data: map[string]any{"dead_restic_processes": len(dead)},
			Message: fmt.Sprintf("cleared the repository locks of %d restic process(es) that died (crash or kill)", len(dead))})
	}
}

// openOffsite makes sure the offsite repository exists, once per
// process: initialised with the local chunker parameters, so
// deduplication holds across the copy. done means the sync ends here.
func (s *Syncer) openOffsite(ctx, sctx context.Context, run *syncRun) (out jobrun.Outcome, done bool) {
	if s.initialised.Load() {
		return jobrun.Outcome{}, false
	}
	created, err := s.Remote.EnsureCopyTarget(sctx, s.Local)
	if err != nil {
		if out, ok := s.nothingYet(ctx, sctx, run, err); ok {
			return out, true
		}
		return s.fail(ctx, run, "open", err), true
	}
	if created {
		run.rec.Add(ctx, domain.JobEvent{Step: "sync", Message: fmt.Sprintf(
			"initialised offsite repository %s with the local repository's chunker parameters", run.repo)})
	}
	s.initialised.Store(true)
	return jobrun.Outcome{}, false
}

// copyAll runs restic copy of every local snapshot the offsite repository
// lacks. done means the sync ends here with out.
func (s *Syncer) copyAll(ctx, sctx context.Context, run *syncRun) (res restic.CopyResult, out jobrun.Outcome, done bool) {
	run.rec.Add(ctx, domain.JobEvent{Step: "sync", Message: "copying local snapshots to offsite repository " + run.repo})
	res, err := s.Remote.Copy(sctx, s.Local)
	run.st.SnapshotsCopied = len(res.Copied)
	if s.Metrics != nil {
		s.Metrics.Copied.Add(float64(len(res.Copied)))
	}
	if err != nil {
		if out, ok := s.nothingYet(ctx, sctx, run, err); ok {
			return res, out, true
		}
		if errors.Is(err, restic.ErrNoRepository) {
			s.initialised.Store(false) // removed under us: check (and init) again next time
		}
		return res, s.fail(ctx, run, "copy", err), true
	}
	return res, jobrun.Outcome{}, false
}

// finish records a copy that went through, and what is still pending:
// snapshots made while the copy ran. A lag that cannot be measured makes
// the job a warning; the copy itself succeeded.
func (s *Syncer) finish(ctx, sctx context.Context, run *syncRun, res restic.CopyResult) jobrun.Outcome {
	st := &run.st
	done := s.now()
	st.Status, st.Error, st.LastSuccessAt = domain.HealthSuccess, "", &done
	local, offsite, lerr := listBoth(sctx, s.Local, s.Remote)
	var lag Lag
	if lerr == nil {
		lag = ComputeLag(local, offsite, s.now())
		st.Bytes = copiedBytes(local, res.Copied)
		st.SnapshotsPending, st.OldestPendingAt = lag.SnapshotsPending(), lag.OldestPendingAt
	}
	run.rec.Add(ctx, domain.JobEvent{Step: "sync", Message: fmt.Sprintf(
		"copied %d snapshots (%d bytes) to %s; %d were already offsite", len(res.Copied), st.Bytes, run.repo, len(res.Skipped)),
		Data: map[string]any{"snapshots_copied": len(res.Copied), "snapshots_skipped": len(res.Skipped), "bytes": st.Bytes}})

	out := jobrun.Outcome{Status: domain.StatusSuccess}
	if lerr != nil {
		msg := "snapshots copied, but the offsite lag could not be measured: " + oneLine(lerr.Error())
		run.rec.Add(ctx, domain.JobEvent{Step: "sync_lag", Level: domain.LevelWarn, Message: msg})
		out.Status, out.Error = domain.StatusWarning, msg
	} else {
		run.rec.Add(ctx, lagEvent(lag))
	}
	s.put(ctx, run.rec, *st)
	out.Summary = summaryOf(*st, len(res.Skipped))
	if lerr == nil {
		out.Summary["oldest_pending_age_seconds"] = int64(lag.OldestPendingAge.Seconds())
	}
	return out
}

// lagEvent reports the measured offsite lag.
func lagEvent(lag Lag) domain.JobEvent {
	data := map[string]any{"snapshots_pending": lag.SnapshotsPending(), "oldest_pending_age_seconds": int64(lag.OldestPendingAge.Seconds())}
	msg := "offsite lag: none; every local snapshot is offsite"
	if lag.OldestPendingAt != nil {
		data["oldest_pending_at"] = *lag.OldestPendingAt
		msg = fmt.Sprintf("offsite lag: %d snapshots pending (made while the copy ran), the oldest from %s",
			lag.SnapshotsPending(), lag.OldestPendingAt.Format(time.RFC3339))
	}
	return domain.JobEvent{Step: "sync_lag", Message: msg, Data: data}
}

// put writes the sync state; a failed write is reported on the job.
func (s *Syncer) put(ctx context.Context, rec *jobrun.Recorder, st domain.SyncState) {
	st.OldestPendingAt = msUTC(st.OldestPendingAt)
	if err := s.Store.PutSyncState(ctx, st); err != nil {
		rec.Add(ctx, domain.JobEvent{Step: "sync", Level: domain.LevelWarn, Message: "sync state not recorded: " + err.Error()})
	}
	s.Metrics.observe(st)
}

func summaryOf(st domain.SyncState, skipped int) map[string]any {
	return map[string]any{
		"repository":        st.Repository,
		"snapshots_copied":  st.SnapshotsCopied,
		"snapshots_skipped": skipped,
		"bytes":             st.Bytes,
		"snapshots_pending": st.SnapshotsPending,
	}
}

// copiedBytes is what the copied snapshots added to the local repository
// (their backup summaries' data_added_packed). restic copy prints no byte
// count; the offsite repository shares the local chunker parameters and
// receives the same new blobs, so this is what the copy uploaded, give or
// take blobs an earlier, interrupted copy had already sent.
func copiedBytes(local []restic.Snapshot, copied []restic.CopiedSnapshot) int64 {
	var n int64
	for _, c := range copied {
		if c.Source == "" {
			continue
		}
		for _, s := range local {
			if strings.HasPrefix(s.ID, c.Source) && s.Summary != nil {
				n += s.Summary.DataAddedPacked
				break
			}
		}
	}
	return n
}

// Describe turns a failed restic run of a sync into the message stored in
// the job and sync_state: what went wrong, in words an operator can act
// on, followed by restic's own (redacted) message. op is "open" (reading
// the offsite config, or initialising it) or "copy".
func Describe(op string, err error, repo string, limit time.Duration) string {
	detail := oneLine(err.Error())
	switch {
	case restic.IsAccessDenied(err):
		return fmt.Sprintf("offsite repository refused the credentials (check restic_b2_account_id and restic_b2_account_key): %s: %s", repo, detail)
	case errors.Is(err, restic.ErrWrongPassword):
		which := "the offsite repository " + repo
		if op == "copy" {
			which = "the local or the offsite repository (" + repo + ")"
		}
		return fmt.Sprintf("the restic password does not open %s; the offsite repository must use the local repository's password: %s", which, detail)
	case errors.Is(err, restic.ErrLocked):
		return fmt.Sprintf("a repository is locked by another restic process; the next sync tries again (a lock left by a killed process clears with `restic unlock`): %s", detail)
	case errors.Is(err, restic.ErrBackendUnreachable):
		return fmt.Sprintf("offsite repository %s is unreachable (restic_b2_retry_seconds): %s", repo, detail)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("offsite sync to %s did not finish within its limit of %s (job_timeout_sync_seconds): %s", repo, limit, lastRetry(detail))
	case errors.Is(err, proc.ErrNotFound):
		return "restic is not installed: " + detail
	case errors.Is(err, restic.ErrNoRepository) && op == "copy":
		return fmt.Sprintf("a repository disappeared during the sync (the next sync initialises the offsite one again): %s", detail)
	case op == "open":
		return fmt.Sprintf("cannot open offsite repository %s: %s", repo, detail)
	}
	return fmt.Sprintf("restic copy to offsite repository %s failed: %s", repo, detail)
}

// lastRetry is the last of restic's "... returned error, retrying after
// ...: <reason>" messages in detail (the reason a backend kept failing),
// or detail when there is none.
func lastRetry(detail string) string {
	parts := strings.Split(detail, "; ")
	for i := len(parts) - 1; i >= 0; i-- {
		if p := parts[i]; strings.Contains(p, " returned error, retrying after ") {
			if _, after, ok := strings.Cut(p, "exceeded: "); ok {
				p = after
			}
			return "restic kept retrying: " + p
		}
	}
	return detail
}

// oneLine joins a multi-line message so it reads as one.
func oneLine(s string) string {
	var parts []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, "; ")
}

func msUTC(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.UTC().Truncate(time.Millisecond)
	return &v
}
