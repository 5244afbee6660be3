package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/restic"
)

// CheckStore keeps the repository check's state (check_state).
type CheckStore interface {
	GetCheckState(ctx context.Context) (domain.CheckState, error)
	PutCheckState(ctx context.Context, st domain.CheckState) error
}

// Repository names in check_state and the metrics' label.
const (
	CheckLocal   = "local"
	CheckOffsite = "offsite"
)

// runCheck is a check job: restic check --read-data-subset on the local
// repository, then on the offsite one when configured, under the
// cluster-wide maintenance lease (no prune or offsite copy beside it) and
// the exclusive side of this process's repository lock (restic check
// takes restic's exclusive lock, which this process's backups would
// otherwise fight). Each repository's result goes to check_state whatever
// the outcome; one that fails makes the job (and the state) failed with
// the repository named and restic's message.
func (s *Snapshotter) runCheck(ctx context.Context, job domain.Job, rec *jobrun.Recorder) jobrun.Outcome {
	const step = "check"
	fail := func(msg string) jobrun.Outcome {
		rec.Add(ctx, domain.JobEvent{Step: step, Level: domain.LevelError, Message: msg})
		return jobrun.Outcome{Status: domain.StatusFailed, Error: msg}
	}
	if job.SiteUUID != "" {
		return fail(fmt.Sprintf("check is a repository-level job, but job %s names site %q", job.ID, job.SiteUUID))
	}
	if s.Checks == nil {
		return fail("check: no check_state store wired")
	}
	prev, err := s.Checks.GetCheckState(ctx)
	if err != nil {
		// Writing now could lose last_success_at; leave the state alone.
		return fail("read check state: " + err.Error())
	}
	release, msg := s.holdRepo(ctx, rec, step, "check-"+job.ID, "checking")
	if msg != "" {
		return fail(msg)
	}
	defer release()

	started := s.now().Truncate(time.Millisecond)
	st := prev
	st.ID, st.LastAttemptAt, st.LastJobID, st.Subset = domain.CheckStateID, &started, job.ID, s.CheckSubset
	st.Repositories = []domain.CheckRepoResult{}
	repos := []struct {
		name string
		repo restic.Repo
	}{{CheckLocal, s.Repo}}
	if s.Offsite.Repository != "" {
		repos = append(repos, struct {
			name string
			repo restic.Repo
		}{CheckOffsite, s.Offsite})
	}
	var problems []string
	locked := false
	for _, r := range repos {
		res := s.checkOne(ctx, rec, r.name, r.repo)
		st.Repositories = append(st.Repositories, res.CheckRepoResult)
		if res.Status == domain.HealthFailed {
			problems = append(problems, fmt.Sprintf("%s repository %s: %s", r.name, res.Repository, res.Error))
			locked = locked || res.locked
		}
	}
	if ctx.Err() != nil {
		// Canceled, lease lost or shutting down: the check did not
		// fail, so check_state keeps its status.
		return jobrun.Outcome{Status: domain.StatusFailed, Error: "check stopped: " + context.Cause(ctx).Error()}
	}
	summary := map[string]any{"subset": s.CheckSubset, "repositories": len(st.Repositories)}
	if len(problems) == 0 {
		done := s.now().Truncate(time.Millisecond)
		st.Status, st.Error, st.LastSuccessAt = domain.HealthSuccess, "", &done
	} else {
		st.Status, st.Error = domain.HealthFailed, strings.Join(problems, "; ")
	}
	if err := s.Checks.PutCheckState(ctx, st); err != nil {
		rec.Add(ctx, domain.JobEvent{Step: step, Level: domain.LevelWarn, Message: "check_state not recorded: " + err.Error()})
	}
	s.CheckMetrics.Observe(st)
	if len(problems) > 0 {
		out := jobrun.Outcome{Status: domain.StatusFailed, Error: st.Error, Summary: summary}
		// Locked past --retry-lock by a live process elsewhere: the next
		// attempt may find the repository free.
		out.Retry = locked
		return out
	}
	rec.Add(ctx, domain.JobEvent{Step: step, Message: fmt.Sprintf("%d repository(ies) checked, no errors (read data subset %s)", len(st.Repositories), subsetText(s.CheckSubset))})
	return jobrun.Outcome{Status: domain.StatusSuccess, Summary: summary}
}

type checkOutcome struct {
	domain.CheckRepoResult
	locked bool
}

// checkOne runs restic check on one repository, bounded by CheckLimit.
// A repository that does not exist yet (no backup, no sync) has nothing
// to check: that is a success with a note.
func (s *Snapshotter) checkOne(ctx context.Context, rec *jobrun.Recorder, name string, repo restic.Repo) checkOutcome {
	const step = "check"
	loc := restic.RedactLocation(repo.Repository)
	out := checkOutcome{CheckRepoResult: domain.CheckRepoResult{Name: name, Repository: loc}}
	rec.Add(ctx, domain.JobEvent{Step: step, Message: fmt.Sprintf("restic check of the %s repository %s, read data subset %s", name, loc, subsetText(s.CheckSubset)),
		Data: map[string]any{"repository": name}})
	cctx, cancel := jobrun.WithLimit(ctx, s.CheckLimit)
	defer cancel()
	t0 := time.Now()
	cr, err := repo.CheckReport(cctx, restic.CheckOptions{ReadDataSubset: s.CheckSubset})
	if errors.Is(err, restic.ErrLocked) {
		if n, uerr := repo.UnlockStale(cctx); uerr == nil && n > 0 {
			rec.Add(ctx, domain.JobEvent{Step: step, Level: domain.LevelWarn, Message: fmt.Sprintf("cleared %d stale restic lock(s) on the %s repository; checking again", n, name)})
			cr, err = repo.CheckReport(cctx, restic.CheckOptions{ReadDataSubset: s.CheckSubset})
		}
	}
	at := s.now().Truncate(time.Millisecond)
	out.CheckedAt, out.DurationMS = &at, time.Since(t0).Milliseconds()
	out.NumErrors, out.BrokenPacks = cr.NumErrors, cr.BrokenPacks
	switch {
	case errors.Is(err, restic.ErrNoRepository):
		out.Status = domain.HealthSuccess
		rec.Add(ctx, domain.JobEvent{Step: step, Message: fmt.Sprintf("no %s repository at %s yet: nothing to check", name, loc)})
	case err != nil:
		out.Status, out.Error, out.locked = domain.HealthFailed, err.Error(), errors.Is(err, restic.ErrLocked)
		if len(cr.BrokenPacks) > 0 {
			out.Error += fmt.Sprintf(" (%d error(s); damaged packs: %s)", cr.NumErrors, strings.Join(cr.BrokenPacks, ", "))
		}
		rec.Add(ctx, domain.JobEvent{Step: step, Level: domain.LevelError, Message: fmt.Sprintf("%s repository %s: %s", name, loc, out.Error),
			Data: map[string]any{"repository": name, "num_errors": cr.NumErrors, "broken_packs": cr.BrokenPacks}})
	default:
		out.Status = domain.HealthSuccess
		rec.Add(ctx, domain.JobEvent{Step: step, Message: fmt.Sprintf("%s repository %s: no errors", name, loc),
			Data: map[string]any{"repository": name, "duration_ms": out.DurationMS}})
	}
	return out
}

func subsetText(s string) string {
	if s == "" {
		return "none (structure only)"
	}
	return s
}

// CheckMetrics are the repository check's gauges, per repository.
type CheckMetrics struct {
	LastSuccess *prometheus.GaugeVec
	// LastRun lets an alert trust the process whose check is newest:
	// every snapshotter seeds the gauges at start, one runs each check.
	LastRun *prometheus.GaugeVec
	Status  *prometheus.GaugeVec
}

// NewCheckMetrics registers the check's gauges on reg (nil: unregistered),
// reusing collectors already there.
func NewCheckMetrics(reg prometheus.Registerer) *CheckMetrics {
	m := &CheckMetrics{
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "satoru_repo_check_last_success_timestamp_seconds",
			Help: "When restic check last passed on the repository (Unix time)."}, []string{"repository"}),
		LastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "satoru_repo_check_last_run_timestamp_seconds",
			Help: "When restic check of the repository last finished, passed or not (Unix time)."}, []string{"repository"}),
		Status: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "satoru_repo_check_status",
			Help: "1 if the last restic check of the repository passed, 0 if it found errors or could not run."}, []string{"repository"}),
	}
	if reg == nil {
		return m
	}
	m.LastSuccess = observe.Register(reg, m.LastSuccess)
	m.LastRun = observe.Register(reg, m.LastRun)
	m.Status = observe.Register(reg, m.Status)
	return m
}

// Observe sets the gauges from a check state (a state never written sets
// nothing, so no alert fires before the first check).
func (m *CheckMetrics) Observe(st domain.CheckState) {
	if m == nil || st.LastAttemptAt == nil {
		return
	}
	for _, r := range st.Repositories {
		ok := 0.0
		if r.Status == domain.HealthSuccess {
			ok = 1
			if r.CheckedAt != nil {
				m.LastSuccess.WithLabelValues(r.Name).Set(float64(r.CheckedAt.UnixMilli()) / 1000)
			}
		}
		m.Status.WithLabelValues(r.Name).Set(ok)
		if r.CheckedAt != nil {
			m.LastRun.WithLabelValues(r.Name).Set(float64(r.CheckedAt.UnixMilli()) / 1000)
		}
	}
}
