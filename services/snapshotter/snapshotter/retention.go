package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/policy"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/units"
)

// maxEventIDs bounds the snapshot ids a retention job records.
const maxEventIDs = 100

// RetentionOptions is the forget of one site: its snapshots only (its host
// and its site tag, both, so a snapshot of another site can never match),
// grouped by host, so the site's snapshots form one group. The default
// grouping (host,paths) would split them when the staging root moves, and
// grouping by tags would give every snapshot its own group, since each
// carries its job's tag. Prune is a step of its own (see applyRetention).
func RetentionOptions(siteUUID string, policy []string) restic.ForgetOptions {
	return restic.ForgetOptions{
		Tags:    []string{domain.SiteTag(siteUUID)},
		Host:    domain.ResticHost(siteUUID),
		GroupBy: "host",
		Policy:  policy,
	}
}

// applyRetention is a retention job: restic forget with the configured
// policy over the site's snapshots, then restic prune, as two steps, so
// that a prune cut short (a crash, kill -9) is finished by the job's next
// attempt: forget finds nothing more to remove then, and prune runs
// because the attempt is not the first. It holds the cluster-wide
// maintenance lease (repoguard.Maintenance), so no other retention or
// offsite copy runs meanwhile on any host, then the exclusive side of the
// repository lock, so none of this process's backups runs while prune
// does; other processes' backups are waited for by restic's --retry-lock. Locks of
// restic processes that died are cleared first (repoguard); a lock still
// there after the wait is cleared when restic judges it stale (older than
// 30 minutes), then the step runs once more. The site's health is not
// touched: only last_retention_at.
func (s *Snapshotter) applyRetention(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	const step = "retention"
	summary := map[string]any{"policy": s.Retention.String()}
	fail := func(msg string) jobrun.Outcome {
		rec.Add(ctx, domain.JobEvent{Step: step, Level: domain.LevelError, Message: msg})
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg, Summary: summary}
	}
	if job.SiteUUID == "" {
		return fail("retention job without a site")
	}
	keep, source, err := s.sitePolicy(ctx, job.SiteUUID)
	if err != nil {
		// Not knowing the site's own policy, the global one might delete
		// snapshots the site keeps: try again later instead.
		out := fail(err.Error())
		out.Retry = true
		return out
	}
	summary["policy"], summary["policy_source"] = keep.String(), source
	if err := keep.Validate(); err != nil {
		// Config and the API reject a bad policy; this catches a process
		// wired without one.
		return fail(source + ": " + err.Error())
	}

	// The maintenance lease first: waiting for another process's prune or
	// offsite copy must not hold this process's backups back, which the
	// exclusive side of the repository lock would.
	release, msg := s.holdRepo(ctx, rec, step, "retention-"+job.ID, "pruning")
	if msg != "" {
		return fail(msg)
	}
	defer release()

	rctx, cancel := jobrun.WithLimit(ctx, s.RetentionLimit)
	defer cancel()
	res, noRepo, err := s.forget(rctx, ctx, job, rec, summary, keep, source)
	if noRepo {
		s.putRetentionAt(ctx, job, rec)
		return jobrun.Outcome{Status: domain.StatusSuccess, Summary: summary}
	}
	if err == nil {
		err = s.prune(rctx, ctx, job, rec, summary, &res)
	}
	if err != nil {
		out := fail(err.Error())
		// A live process holds the lock past --retry-lock: the next
		// attempt may find the repository free.
		out.Retry = errors.Is(err, restic.ErrLocked)
		return out
	}
	level, msg := retentionMessage(res)
	rec.Add(ctx, domain.JobEvent{Step: step, Level: level, Message: msg, Data: retentionData(res)})
	s.putRetentionAt(ctx, job, rec)
	return jobrun.Outcome{Status: domain.StatusSuccess, Summary: summary}
}

// forget runs restic forget with the policy over the site's snapshots
// (rctx bounds restic, jctx is the job's, for events) and adds what it
// did to summary. noRepo means there is no repository yet, so nothing to
// forget: retention succeeds.
func (s *Snapshotter) forget(rctx, jctx context.Context, job domain.Job, rec *jobrun.Recorder, summary map[string]any,
	keep config.RetentionPolicy, source string) (res restic.ForgetResult, noRepo bool, err error) {
	const step = "retention"
	opts := RetentionOptions(job.SiteUUID, keep.Args())
	rec.Add(jctx, domain.JobEvent{Step: step, Message: fmt.Sprintf(
		"restic forget, policy %s (%s), snapshots of host %s with tag %s", keep.String(), source, opts.Host, opts.Tags[0])})
	err = s.unlockedRetry(rctx, jctx, rec, step, summary, func() error {
		var ferr error
		res, ferr = s.Repo.Forget(rctx, opts)
		return ferr
	})
	if errors.Is(err, restic.ErrLocked) {
		return res, false, fmt.Errorf("restic repository is locked by a live process (waited %s): %w", s.Repo.RetryLock, err)
	}
	if errors.Is(err, restic.ErrNoRepository) {
		s.initialised.Store(false)
		rec.Add(jctx, domain.JobEvent{Step: step, Message: fmt.Sprintf("no restic repository at %s yet: nothing to forget", restic.RedactLocation(s.Repo.Repository))})
		return res, true, nil
	}
	for k, v := range retentionData(res) {
		summary[k] = v
	}
	if err != nil {
		if res.Removed > 0 {
			return res, false, fmt.Errorf("forget removed %d snapshot(s), then failed: %w", res.Removed, err)
		}
		return res, false, fmt.Errorf("restic forget: %w", err)
	}
	return res, false, nil
}

// prune runs restic prune when forget removed something, and on every
// later attempt: an earlier attempt may have forgotten snapshots and died
// before its prune finished, leaving their data in the repository. It
// adds prune's statistics to res and summary.
func (s *Snapshotter) prune(rctx, jctx context.Context, job domain.Job, rec *jobrun.Recorder, summary map[string]any, res *restic.ForgetResult) error {
	const step = "retention"
	resumed := job.Attempts > 1
	if res.Removed == 0 && !resumed {
		return nil
	}
	why := fmt.Sprintf("%d snapshot(s) forgotten", res.Removed)
	if res.Removed == 0 {
		why = fmt.Sprintf("attempt %d finishes what an earlier attempt may have left", job.Attempts)
	}
	rec.Add(jctx, domain.JobEvent{Step: step, Message: "restic prune: " + why})
	var pr restic.PruneResult
	err := s.unlockedRetry(rctx, jctx, rec, step, summary, func() error {
		var perr error
		pr, perr = s.Repo.Prune(rctx, restic.PruneOptions{})
		return perr
	})
	res.Pruned, res.BlobsFreed, res.BytesFreed, res.BytesRemaining = pr.Pruned, pr.BlobsFreed, pr.BytesFreed, pr.BytesRemaining
	for k, v := range retentionData(*res) {
		summary[k] = v
	}
	if err != nil {
		if res.Removed > 0 {
			return fmt.Errorf("forget removed %d snapshot(s), then prune failed (the next attempt prunes again): %w", res.Removed, err)
		}
		return fmt.Errorf("restic prune: %w", err)
	}
	return nil
}

// retentionMessage is the closing event's level and text: what was kept,
// removed and freed; a warning when prune ran but printed no statistics.
func retentionMessage(res restic.ForgetResult) (level, msg string) {
	level, msg = domain.LevelInfo, fmt.Sprintf("kept %d, removed %d snapshot(s)", res.Kept, res.Removed)
	switch {
	case res.Groups == 0:
		msg = "no snapshots of this site: nothing to forget"
	case res.Removed == 0 && !res.Pruned:
		msg += "; nothing to prune"
	case res.Pruned:
		msg += fmt.Sprintf("; prune freed %s (%d blobs), %s remain in the repository",
			units.Bytes(res.BytesFreed), res.BlobsFreed, units.Bytes(res.BytesRemaining))
	default:
		level, msg = domain.LevelWarn, msg+"; prune ran but printed no statistics, so the space freed is unknown"
	}
	return level, msg
}

// unlockedRetry runs a locking restic step; when it fails on a lock that
// outlasted --retry-lock, locks restic judges stale (older than 30
// minutes: left on another host by a process that died) are cleared and
// the step runs once more. Live locks stay. jctx is the job's context for
// events, rctx the step's.
func (s *Snapshotter) unlockedRetry(rctx, jctx context.Context, rec *jobrun.Recorder, step string, summary map[string]any, run func() error) error {
	err := run()
	if !errors.Is(err, restic.ErrLocked) {
		return err
	}
	n, uerr := s.Repo.UnlockStale(rctx)
	if uerr != nil {
		return fmt.Errorf("%w; looking for stale locks failed: %v", err, uerr)
	}
	if n == 0 {
		return err
	}
	summary["stale_locks_cleared"] = n
	rec.Add(jctx, domain.JobEvent{Step: step, Level: domain.LevelWarn, Data: map[string]any{"stale_locks_cleared": n},
		Message: fmt.Sprintf("cleared %d stale restic lock(s) left by a process that is gone; running again", n)})
	return run()
}

// retentionData is what a retention job reports, in its event and summary.
func retentionData(res restic.ForgetResult) map[string]any {
	removed := res.RemovedIDs
	if len(removed) > maxEventIDs {
		removed = removed[:maxEventIDs]
	}
	return map[string]any{
		"kept":                 res.Kept,
		"removed":              res.Removed,
		"removed_ids":          removed,
		"pruned":               res.Pruned,
		"bytes_freed":          res.BytesFreed,
		"blobs_freed":          res.BlobsFreed,
		"repo_bytes_remaining": res.BytesRemaining,
	}
}

// putRetentionAt records when retention last ran on the site, leaving
// its health as the backups set it.
func (s *Snapshotter) putRetentionAt(ctx context.Context, job domain.Job, rec *jobrun.Recorder) {
	st, err := s.Store.GetSiteStatus(ctx, job.SiteUUID)
	if err == nil {
		at := s.now().Truncate(time.Millisecond)
		st.SiteUUID = job.SiteUUID
		st.LastRetentionAt = &at
		err = s.Store.PutSiteStatus(ctx, st)
	}
	if err != nil {
		rec.Add(ctx, domain.JobEvent{Step: "retention", Level: domain.LevelWarn, Message: "last_retention_at not recorded: " + err.Error()})
	}
}

// SiteReader is the store's site lookup; a Store that has it gives the
// retention the site's own policy.
type SiteReader interface {
	GetSite(ctx context.Context, uuid string) (domain.Site, error)
}

// Where a retention policy came from, for events and the job summary.
const (
	sourceGlobal = "restic_retention_policy"
	sourceSite   = "site policy"
)

// sitePolicy is the retention that applies to a site: its policy's
// override when it has one, else the global restic_retention_policy (also
// for a site deleted meanwhile, whose snapshots stay under the global
// rule).
func (s *Snapshotter) sitePolicy(ctx context.Context, siteUUID string) (config.RetentionPolicy, string, error) {
	sr, ok := s.Store.(SiteReader)
	if !ok {
		return s.Retention, sourceGlobal, nil
	}
	site, err := sr.GetSite(ctx, siteUUID)
	if errors.Is(err, store.ErrNotFound) {
		return s.Retention, sourceGlobal, nil
	}
	if err != nil {
		return config.RetentionPolicy{}, "", fmt.Errorf("read the site's retention policy: %w", err)
	}
	keep, own := policy.Effective(site.Policy, s.Retention)
	if own {
		return keep, sourceSite, nil
	}
	return keep, sourceGlobal, nil
}

// holdRepo takes what a repository-wide operation (what, e.g. "pruning")
// needs, in order: the cluster-wide maintenance lease (as holder), then
// the exclusive side of this process's repository lock, and clears what
// a crash left. Waits are job events. msg says what failed ("" when all
// is held); release gives everything back.
func (s *Snapshotter) holdRepo(ctx context.Context, rec *jobrun.Recorder, step, holder, what string) (release func(), msg string) {
	var held []func()
	release = func() {
		for i := len(held) - 1; i >= 0; i-- {
			held[i]()
		}
	}
	if s.Guard != nil {
		lease, err := s.Guard.Maintenance(ctx, holder, func(other string) {
			rec.Add(ctx, domain.JobEvent{Step: step, Message: "waiting for the repository's maintenance lease: " + other})
		})
		if err != nil {
			return release, "waiting for the repository's maintenance lease: " + err.Error()
		}
		held = append(held, func() { s.Guard.Release(lease) })
	}
	unlock, err := s.repoLock.Exclusive(ctx, func(n int) {
		rec.Add(ctx, domain.JobEvent{Step: step, Message: fmt.Sprintf(
			"waiting for %d backup(s) in this process to finish before %s", n, what)})
	})
	if err != nil {
		release()
		return func() {}, "waiting for the repository: " + err.Error()
	}
	held = append(held, unlock)
	s.recoverRepo(ctx, rec, step, true)
	return release, ""
}
