package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

// The repository check: POST /check queues a check job (restic check of
// the local repository and the offsite one when configured), GET /check
// answers the check_state document with its judgement, which GET /health
// carries too.

// Check health statuses.
const (
	CheckOK    = "ok"
	CheckStale = "stale"
	// CheckFailed: the last check found errors or could not run.
	CheckFailed = "failed"
	// CheckNever: no check has run yet. Not a problem by itself: a new
	// installation gets its first check within one interval.
	CheckNever = "never"
)

// CheckStateReader is optional: a Store that also implements it
// (*store.Store does) serves GET /check and the check in GET /health;
// without it the check is reported as never run.
type CheckStateReader interface {
	GetCheckState(ctx context.Context) (domain.CheckState, error)
}

// CheckHealth is the repository check's health.
type CheckHealth struct {
	Status        string     `json:"status"`
	LastSuccessAt *time.Time `json:"last_success_at"`
	LastAttemptAt *time.Time `json:"last_attempt_at,omitempty"`
	// IntervalSeconds is restic_check_interval_hours; 0 = never scheduled.
	IntervalSeconds int64  `json:"interval_seconds"`
	Error           string `json:"error,omitempty"`
}

// CheckView is the answer of GET /check: the check_state document, its
// health, and the check job queued or running, if any.
type CheckView struct {
	domain.CheckState
	IntervalSeconds int64  `json:"interval_seconds"`
	Health          string `json:"health"`
	// ActiveJob is the check job queued or running now, if any.
	ActiveJob *domain.Job `json:"active_job,omitempty"`
}

// CheckInput is the body of POST /check: no fields; the body may be empty.
type CheckInput struct{}

// CheckHealthAt judges the check at now: failed when the last attempt
// failed; never when none ran; stale when the check is scheduled and no
// check succeeded within twice its interval; else ok.
func CheckHealthAt(st domain.CheckState, interval time.Duration, now time.Time) CheckHealth {
	h := CheckHealth{LastSuccessAt: st.LastSuccessAt, LastAttemptAt: st.LastAttemptAt,
		IntervalSeconds: int64(max(interval, 0) / time.Second), Error: st.Error}
	switch {
	case st.Status == domain.HealthFailed:
		h.Status = CheckFailed
	case st.LastSuccessAt == nil && st.LastAttemptAt == nil:
		h.Status = CheckNever
	case interval > 0 && (st.LastSuccessAt == nil || now.Sub(*st.LastSuccessAt) > 2*interval):
		h.Status = CheckStale
	default:
		h.Status = CheckOK
	}
	return h
}

// checkProblems are the check's lines of Judge.
func checkProblems(c CheckHealth) []string {
	switch c.Status {
	case CheckFailed:
		return []string{"repository check failed: " + c.Error}
	case CheckStale:
		if c.LastSuccessAt == nil {
			return []string{"repository check has never succeeded"}
		}
		return []string{fmt.Sprintf("repository check is stale: last success %s, more than twice the interval of %s ago",
			c.LastSuccessAt.UTC().Format(time.RFC3339), time.Duration(c.IntervalSeconds)*time.Second)}
	}
	return nil
}

// checkState reads check_state, or an unknown one when the store cannot.
func (s *server) checkState(ctx context.Context) (domain.CheckState, error) {
	r, ok := s.store.(CheckStateReader)
	if !ok {
		return domain.CheckState{ID: domain.CheckStateID, Status: domain.HealthUnknown, Repositories: []domain.CheckRepoResult{}}, nil
	}
	st, err := r.GetCheckState(ctx)
	if err != nil {
		return st, err
	}
	if st.Status == "" {
		st.Status = domain.HealthUnknown
	}
	if st.Repositories == nil {
		st.Repositories = []domain.CheckRepoResult{}
	}
	return st, nil
}

// createCheck queues a check job: repository-level (no site), created
// like the offsite sync's.
func (s *server) createCheck(ctx context.Context) (JobAccepted, error) {
	return s.enqueue(ctx, domain.Job{ID: s.newID(), Type: domain.JobCheck, Status: domain.StatusQueued, CreatedAt: s.now().UTC()})
}

func (s *server) getCheck(ctx context.Context) (CheckView, error) {
	st, err := s.checkState(ctx)
	if err != nil {
		return CheckView{}, storeError(err, "", "")
	}
	h := CheckHealthAt(st, s.checkEvery, s.now().UTC())
	out := CheckView{CheckState: st, IntervalSeconds: h.IntervalSeconds, Health: h.Status}
	for _, status := range []domain.JobStatus{domain.StatusRunning, domain.StatusQueued} {
		jobs, err := s.store.ListJobs(ctx, store.JobFilter{Type: domain.JobCheck, Status: status, Limit: 1})
		if err != nil {
			return CheckView{}, storeError(err, "", "")
		}
		if len(jobs) > 0 {
			out.ActiveJob = &jobs[0]
			break
		}
	}
	return out, nil
}

func (s *server) handleCreateCheck(c echo.Context) error {
	var in CheckInput
	if err := decodeOptionalJSON(c, &in); err != nil {
		return err
	}
	out, err := s.createCheck(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, BasePath+"/jobs/"+out.JobID)
	return c.JSON(http.StatusAccepted, out)
}

func (s *server) handleGetCheck(c echo.Context) error {
	out, err := s.getCheck(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}
