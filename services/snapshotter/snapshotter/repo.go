package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/tick"
	"github.com/satoru/satoru/shared/units"
)

// cleanupLimit bounds the clean-up after a failed backup: it must not hold
// the repository for long, and the next retention finishes what it could
// not.
const cleanupLimit = 2 * time.Minute

// cleanupRetryLock is how long the clean-up waits for other processes'
// backups to let go of the repository before it gives up.
const cleanupRetryLock = 30 * time.Second

// ensureRepo makes sure the repository exists, initialising it under the
// cluster-wide init lease. A repository known to exist costs nothing.
func (s *Snapshotter) ensureRepo(ctx context.Context) (created bool, err error) {
	if s.initialised.Load() {
		return false, nil
	}
	// Without a guard (unit tests of one snapshotter on a repository made
	// beforehand) the repository is initialised unguarded.
	if s.Guard != nil {
		created, err = s.Guard.EnsureInit(ctx, s.Repo)
	} else {
		created, err = s.Repo.EnsureInit(ctx)
	}
	if err != nil {
		return false, fmt.Errorf("restic repository %s: %w", restic.RedactLocation(s.Repo.Repository), err)
	}
	s.initialised.Store(true)
	return created, nil
}

// recoverRepo clears the locks that restic processes of this host left
// when they died (a crash, kill -9), at once rather than after restic's
// 30-minute staleness rule; when one of them was a backup, the data it
// wrote and never indexed is pruned away too. rec, when not nil, gets the
// job's events. It costs one KV listing when nothing died. maintaining
// says the caller (retention) holds the maintenance lease and this
// process's repository lock alone, which the clean-up then does not take
// again.
func (s *Snapshotter) recoverRepo(ctx context.Context, rec *jobrun.Recorder, step string, maintaining bool) {
	if s.Guard == nil {
		return
	}
	dead, err := s.Guard.ClearStale(ctx, s.Repo)
	if err != nil {
		s.event(ctx, rec, step, domain.LevelWarn, "clearing the locks of restic processes that died: "+err.Error(), nil)
		return
	}
	if len(dead) == 0 {
		return
	}
	backups := 0
	for _, p := range dead {
		if p.Op == "backup" {
			backups++
		}
	}
	s.event(ctx, rec, step, domain.LevelWarn, fmt.Sprintf(
		"cleared the repository locks of %d restic process(es) that died (crash or kill)", len(dead)),
		map[string]any{"dead_restic_processes": len(dead)})
	if backups > 0 {
		s.cleanup(ctx, rec, step, fmt.Sprintf("%d restic backup(s) died", backups), maintaining)
	}
}

// cleanup prunes what failed or killed backups left in the repository:
// packs that no index references. It only deletes (--max-unused
// unlimited: nothing is repacked), holds this process's repository lock
// exclusively, waits at most cleanupRetryLock for other processes and runs
// at most cleanupLimit; what it cannot do now the next retention does.
// It is maintenance: unless maintaining (the caller holds both already), it
// takes the cluster-wide maintenance lease when free and is skipped when
// another process's prune or offsite copy holds it, never waiting for one.
func (s *Snapshotter) cleanup(ctx context.Context, rec *jobrun.Recorder, step, why string, maintaining bool) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupLimit)
	defer cancel()
	if !maintaining {
		if s.Guard != nil {
			held, holder, err := s.Guard.TryMaintenance(cctx, "cleanup")
			if err != nil {
				s.event(ctx, rec, step, domain.LevelWarn, "repository clean-up skipped: "+err.Error(), nil)
				return
			}
			if held == nil {
				s.event(ctx, rec, step, domain.LevelWarn, fmt.Sprintf(
					"repository clean-up after %s skipped: another maintenance holds the repository (%s); the next retention prunes it", why, holder), nil)
				return
			}
			defer s.Guard.Release(held)
		}
		release, err := s.repoLock.Exclusive(cctx, nil)
		if err != nil {
			s.event(ctx, rec, step, domain.LevelWarn, "repository clean-up skipped: "+err.Error(), nil)
			return
		}
		defer release()
	}
	repo := s.Repo
	repo.RetryLock = cleanupRetryLock
	res, err := repo.Prune(cctx, restic.PruneOptions{MaxUnused: "unlimited"})
	if err != nil {
		level := domain.LevelWarn
		msg := fmt.Sprintf("repository clean-up after %s failed (the next retention prunes it): %v", why, err)
		if errors.Is(err, restic.ErrLocked) {
			msg = fmt.Sprintf("repository clean-up after %s skipped: the repository is busy (the next retention prunes it)", why)
		}
		s.event(ctx, rec, step, level, msg, nil)
		return
	}
	s.event(ctx, rec, step, domain.LevelInfo, fmt.Sprintf("repository cleaned up after %s: %s freed",
		why, units.Bytes(res.BytesFreed)), map[string]any{"bytes_freed": res.BytesFreed})
}

// event records a job event when there is a job, else logs it.
func (s *Snapshotter) event(ctx context.Context, rec *jobrun.Recorder, step string, level, msg string, data map[string]any) {
	if rec != nil {
		rec.Add(ctx, domain.JobEvent{Step: step, Level: level, Message: msg, Data: data})
		return
	}
	if s.Log == nil {
		return
	}
	switch level {
	case domain.LevelWarn, domain.LevelError:
		s.Log.Warn(msg, "step", step)
	default:
		s.Log.Info(msg, "step", step)
	}
}

// prepareRepo runs when the service starts: the repository is opened (or
// initialised, once across every process) before the first job needs it,
// and what a crash of the previous run left is cleared. Failures are
// logged; jobs try again.
func (s *Snapshotter) prepareRepo(ctx context.Context) {
	s.recoverRepo(ctx, nil, "start", false)
	created, err := s.ensureRepo(ctx)
	switch {
	case err != nil:
		s.event(ctx, nil, "start", domain.LevelWarn, "restic repository not ready; jobs will try again: "+err.Error(), nil)
	case created:
		s.event(ctx, nil, "start", domain.LevelInfo, "initialised restic repository "+restic.RedactLocation(s.Repo.Repository), nil)
	}
}

// watchLocks clears dead processes' locks every interval until ctx ends,
// so a lock never outlives its owner by much more than that, even with no
// job coming.
func (s *Snapshotter) watchLocks(ctx context.Context, every time.Duration) {
	if s.Guard == nil || every <= 0 {
		return
	}
	tick.Every(ctx, every, func() bool { s.recoverRepo(ctx, nil, "locks", false); return true })
}
