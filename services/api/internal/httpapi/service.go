package httpapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/store"
)

// The use cases behind the handlers: plain methods that take decoded
// input and return a response value or an *Error.

// SiteDetail is a site with its status and its targets.
type SiteDetail struct {
	domain.SiteView
	Targets []domain.Target `json:"targets"`
}

// SiteList is the answer of GET /sites.
type SiteList struct {
	Sites []domain.SiteView `json:"sites"`
}

// TargetList is the answer of GET /sites/{uuid}/targets.
type TargetList struct {
	SiteUUID string          `json:"site_uuid"`
	Targets  []domain.Target `json:"targets"`
}

// JobAccepted is the answer of POST /sites/{uuid}/jobs.
type JobAccepted struct {
	JobID  string           `json:"job_id"`
	Status domain.JobStatus `json:"status"`
}

// JobList is the answer of GET /jobs.
type JobList struct {
	Jobs []domain.Job `json:"jobs"`
}

// JobEvents is the answer of GET /jobs/{id}/events.
type JobEvents struct {
	JobID  string            `json:"job_id"`
	Events []domain.JobEvent `json:"events"`
}

// CancelAccepted is the answer of POST /jobs/{id}/cancel.
type CancelAccepted struct {
	JobID           string `json:"job_id"`
	CancelRequested bool   `json:"cancel_requested"`
}

// cleanupTimeout bounds work that must finish after the client left
// (rolling back a half-created site, publishing an inserted job).
const cleanupTimeout = 10 * time.Second

// publishAttempts and publishBackoff: Publish is idempotent per job id,
// so a failed publish is retried a few times before giving up.
var publishBackoff = []time.Duration{0, 200 * time.Millisecond, time.Second}

func siteNotFound(uuid string) string { return fmt.Sprintf("site %q not found", clip(uuid)) }
func jobNotFound(id string) string    { return fmt.Sprintf("job %q not found", clip(id)) }

func normStatus(uuid string, st domain.SiteStatus) domain.SiteStatus {
	st.SiteUUID = uuid
	if st.Health.Status == "" {
		st.Health.Status = domain.HealthUnknown
	}
	return st
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *server) createSite(ctx context.Context, in SiteInput) (SiteDetail, error) {
	site := ApplySite(domain.Site{Port: DefaultSSHPort}, in)
	if err := ValidateSite(&site); err != nil {
		return SiteDetail{}, err
	}
	if in.Policy != nil {
		p, err := ValidatePolicy(in.Policy, "policy.")
		if err != nil {
			return SiteDetail{}, err
		}
		site.Policy = p
	}
	if len(in.Targets) > maxTargets {
		return SiteDetail{}, invalid("targets: at most %d, got %d", maxTargets, len(in.Targets))
	}
	now := s.now().UTC()
	site.UUID = s.newID()
	site.CreatedAt, site.UpdatedAt = now, now
	targets := make([]domain.Target, 0, len(in.Targets))
	seen := map[string]int{}
	for i, raw := range in.Targets {
		t, err := ValidateTarget(raw, fmt.Sprintf("targets[%d].", i))
		if err != nil {
			return SiteDetail{}, err
		}
		hash := domain.TargetHash(t.Mode, t.Path)
		if j, dup := seen[hash]; dup {
			return SiteDetail{}, conflict("targets[%d]: duplicates targets[%d] (%s %q)", i, j, t.Mode, t.Path)
		}
		seen[hash] = i
		targets = append(targets, newTarget(site.UUID, t, now))
	}

	// Whatever happens below, the site list must be read again.
	defer s.siteLists.invalidate()
	if err := s.store.CreateSite(ctx, site); err != nil {
		return SiteDetail{}, storeError(err, "", fmt.Sprintf("a site named %q already exists", site.Name))
	}
	for i, t := range targets {
		if err := s.store.AddTarget(ctx, t); err != nil {
			s.rollbackSite(ctx, site.UUID, targets[:i])
			return SiteDetail{}, storeError(err, "", fmt.Sprintf("targets[%d]: already exists", i))
		}
	}
	// Answer in the order GET gives: by path.
	sort.SliceStable(targets, func(i, j int) bool { return targets[i].Path < targets[j].Path })
	return SiteDetail{
		SiteView: domain.SiteView{Site: site, Status: normStatus(site.UUID, domain.SiteStatus{})},
		Targets:  targets,
	}, nil
}

// rollbackSite removes a site whose targets could not all be added, so
// nothing half-exists. It runs even if the client has gone.
func (s *server) rollbackSite(ctx context.Context, uuid string, added []domain.Target) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	for _, t := range added {
		if err := s.store.DeleteTarget(ctx, uuid, t.TargetHash); err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("api: roll back target of half-created site", "site_uuid", uuid, "target_hash", t.TargetHash, "err", err)
		}
	}
	if err := s.store.DeleteSite(ctx, uuid); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.log.Error("api: roll back half-created site", "site_uuid", uuid, "err", err)
	}
}

func newTarget(siteUUID string, t TargetInput, now time.Time) domain.Target {
	hash := domain.TargetHash(t.Mode, t.Path)
	return domain.Target{
		ID:         domain.TargetID(siteUUID, hash),
		SiteUUID:   siteUUID,
		TargetHash: hash,
		Mode:       t.Mode,
		Path:       t.Path,
		Excludes:   t.Excludes,
		CreatedAt:  now,
	}
}

func (s *server) getSite(ctx context.Context, uuid string) (SiteDetail, error) {
	site, err := s.store.GetSite(ctx, uuid)
	if err != nil {
		return SiteDetail{}, storeError(err, siteNotFound(uuid), "")
	}
	return s.detail(ctx, site)
}

// detail adds a site's status and targets.
func (s *server) detail(ctx context.Context, site domain.Site) (SiteDetail, error) {
	st, err := s.store.GetSiteStatus(ctx, site.UUID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return SiteDetail{}, storeError(err, "", "")
	}
	targets, err := s.store.ListTargets(ctx, site.UUID)
	if err != nil {
		return SiteDetail{}, storeError(err, "", "")
	}
	return SiteDetail{
		SiteView: domain.SiteView{Site: site, Status: normStatus(site.UUID, st)},
		Targets:  orEmpty(targets),
	}, nil
}

// listSites answers from the site list snapshot (sitecache.go): the
// API's own site writes show at once, statuses up to SiteListMaxAge late.
func (s *server) listSites(ctx context.Context) (SiteList, error) {
	snap, err := s.siteLists.get(ctx)
	if err != nil {
		return SiteList{}, storeError(err, "", "")
	}
	out := make([]domain.SiteView, len(snap.Sites))
	for i, site := range snap.Sites {
		out[i] = domain.SiteView{Site: site, Status: normStatus(site.UUID, snap.Statuses[site.UUID])}
	}
	return SiteList{Sites: out}, nil
}

func (s *server) patchSite(ctx context.Context, uuid string, in SiteInput) (SiteDetail, error) {
	if in.Targets != nil {
		return SiteDetail{}, invalid("targets: cannot be changed with PATCH; use POST /api/v1/sites/{site_uuid}/targets and DELETE /api/v1/sites/{site_uuid}/targets/{target_hash}")
	}
	cur, err := s.store.GetSite(ctx, uuid)
	if err != nil {
		return SiteDetail{}, storeError(err, siteNotFound(uuid), "")
	}
	next := ApplySite(cur, in)
	if err := ValidateSite(&next); err != nil {
		return SiteDetail{}, err
	}
	if in.Policy != nil {
		p, err := ValidatePolicy(in.Policy, "policy.")
		if err != nil {
			return SiteDetail{}, err
		}
		next.Policy = p
	}
	if next != cur {
		next.UpdatedAt = s.now().UTC()
		err := s.store.ReplaceSite(ctx, next)
		s.siteLists.invalidate()
		if err != nil {
			return SiteDetail{}, storeError(err, siteNotFound(uuid), fmt.Sprintf("a site named %q already exists", next.Name))
		}
	}
	return s.detail(ctx, next)
}

func (s *server) deleteSite(ctx context.Context, uuid string) error {
	err := s.store.DeleteSite(ctx, uuid)
	s.siteLists.invalidate()
	if err != nil {
		return storeError(err, siteNotFound(uuid), "")
	}
	if s.siteDeleted != nil {
		if err := s.siteDeleted(ctx, uuid); err != nil {
			s.log.Warn("api: site deleted, but what this host keeps of it was not removed; the pullers' sweep will", "site_uuid", uuid, "err", err)
		}
	}
	return nil
}

func (s *server) addTarget(ctx context.Context, siteUUID string, in TargetInput) (domain.Target, error) {
	t, verr := ValidateTarget(in, "")
	if verr != nil {
		return domain.Target{}, verr
	}
	if _, err := s.store.GetSite(ctx, siteUUID); err != nil {
		return domain.Target{}, storeError(err, siteNotFound(siteUUID), "")
	}
	target := newTarget(siteUUID, t, s.now().UTC())
	if err := s.store.AddTarget(ctx, target); err != nil {
		return domain.Target{}, storeError(err, siteNotFound(siteUUID),
			fmt.Sprintf("site %s already has the %s target %q (target_hash %s)", siteUUID, t.Mode, t.Path, target.TargetHash))
	}
	return target, nil
}

func (s *server) listTargets(ctx context.Context, siteUUID string) (TargetList, error) {
	if _, err := s.store.GetSite(ctx, siteUUID); err != nil {
		return TargetList{}, storeError(err, siteNotFound(siteUUID), "")
	}
	targets, err := s.store.ListTargets(ctx, siteUUID)
	if err != nil {
		return TargetList{}, storeError(err, "", "")
	}
	return TargetList{SiteUUID: siteUUID, Targets: orEmpty(targets)}, nil
}

func (s *server) deleteTarget(ctx context.Context, siteUUID, hash string) error {
	if err := s.store.DeleteTarget(ctx, siteUUID, hash); err != nil {
		return storeError(err, fmt.Sprintf("site %q has no target %q", clip(siteUUID), clip(hash)), "")
	}
	return nil
}

// createJob records a queued job, then publishes its request. If the
// request cannot be published (after retries), the job is marked failed
// when the store can (JobFinisher) so no queued job is left that no worker
// will ever take, and the caller gets 503.
func (s *server) createJob(ctx context.Context, siteUUID string, in JobInput) (JobAccepted, error) {
	if err := ValidateJobType(in.Type); err != nil {
		return JobAccepted{}, err
	}
	site, err := s.store.GetSite(ctx, siteUUID)
	if err != nil {
		return JobAccepted{}, storeError(err, siteNotFound(siteUUID), "")
	}
	note, verr := s.manualJobPolicy(site, in.Force)
	if verr != nil {
		return JobAccepted{}, verr
	}
	return s.enqueue(ctx, domain.Job{
		ID:         s.newID(),
		SiteUUID:   siteUUID,
		Type:       in.Type,
		Status:     domain.StatusQueued,
		CreatedAt:  s.now().UTC(),
		Trigger:    domain.TriggerManual,
		PolicyNote: note,
	})
}

// enqueue inserts a queued job, then publishes its request (see
// createJob). Repository-level jobs have no site.
func (s *server) enqueue(ctx context.Context, job domain.Job) (JobAccepted, error) {
	if job.Trigger == "" {
		job.Trigger = domain.TriggerManual // every job the API queues was asked for by hand
	}
	if err := s.store.InsertJob(ctx, job); err != nil {
		return JobAccepted{}, storeError(err, "", "")
	}
	req := events.RequestFor(job)
	// The job exists now: publish it even if the client goes away.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := s.publish(pctx, req); err != nil {
		s.log.Error("api: publish job request", "job_id", job.ID, "site_uuid", job.SiteUUID, "type", job.Type, "err", err)
		what := "it stays queued until it is published again"
		if f, ok := s.store.(JobFinisher); ok {
			ferr := f.FinishJob(pctx, job.ID, domain.StatusFailed,
				"not dispatched: the job queue was unavailable when the job was created", nil, s.now().UTC())
			if ferr == nil {
				what = "it was marked failed"
			} else {
				s.log.Error("api: mark undispatched job failed", "job_id", job.ID, "err", ferr)
			}
		}
		return JobAccepted{}, unavailable(err, "job %s could not be queued because the job queue is unavailable (%s); try again later", job.ID, what)
	}
	return JobAccepted{JobID: job.ID, Status: domain.StatusQueued}, nil
}

func (s *server) publish(ctx context.Context, req events.JobRequest) error {
	var err error
	for _, wait := range publishBackoff {
		if wait > 0 {
			select {
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			case <-time.After(wait):
			}
		}
		if err = s.disp.Publish(ctx, req); err == nil {
			return nil
		}
		if errors.Is(err, events.ErrInvalid) {
			return err // retrying cannot help
		}
	}
	return err
}

// JobQuery is GET /jobs' query, parsed.
type JobQuery = store.JobFilter

// ParseJobQuery validates the query parameters of GET /jobs.
func ParseJobQuery(q map[string][]string) (JobQuery, *Error) {
	f := JobQuery{Limit: DefaultJobLimit}
	one := func(name string) (string, *Error) {
		v, _, err := oneParam(q, name)
		return v, err
	}
	site, err := one("site_uuid")
	if err != nil {
		return f, err
	}
	if len(site) > 128 || strings.ContainsFunc(site, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return f, invalid("site_uuid: not a site id, got %q", clip(site))
	}
	f.SiteUUID = site
	typ, err := one("type")
	if err != nil {
		return f, err
	}
	if typ != "" {
		if !validJobType(domain.JobType(typ)) {
			return f, invalid("type: must be one of preflight, backup, retention, restic_sync, restore, check, got %q", clip(typ))
		}
		f.Type = domain.JobType(typ)
	}
	status, err := one("status")
	if err != nil {
		return f, err
	}
	if status != "" {
		if !validJobStatus(domain.JobStatus(status)) {
			return f, invalid("status: must be one of queued, running, success, warning, failed, canceled, got %q", clip(status))
		}
		f.Status = domain.JobStatus(status)
	}
	limit, err := one("limit")
	if err != nil {
		return f, err
	}
	if limit != "" {
		n, perr := strconv.Atoi(limit)
		if perr != nil || n < 1 || n > MaxJobLimit {
			return f, invalid("limit: must be an integer from 1 to %d, got %q", MaxJobLimit, clip(limit))
		}
		f.Limit = n
	}
	return f, nil
}

func validJobType(t domain.JobType) bool {
	switch t {
	case domain.JobPreflight, domain.JobBackup, domain.JobRetention, domain.JobResticSync, domain.JobRestore, domain.JobCheck, domain.JobVerify:
		return true
	}
	return false
}

func validJobStatus(s domain.JobStatus) bool {
	switch s {
	case domain.StatusQueued, domain.StatusRunning, domain.StatusSuccess, domain.StatusWarning, domain.StatusFailed, domain.StatusCanceled:
		return true
	}
	return false
}

func (s *server) listJobs(ctx context.Context, f JobQuery) (JobList, error) {
	jobs, err := s.store.ListJobs(ctx, f)
	if err != nil {
		return JobList{}, storeError(err, "", "")
	}
	sort.SliceStable(jobs, func(i, j int) bool {
		if !jobs[i].CreatedAt.Equal(jobs[j].CreatedAt) {
			return jobs[i].CreatedAt.After(jobs[j].CreatedAt)
		}
		return jobs[i].ID > jobs[j].ID
	})
	if f.Limit > 0 && len(jobs) > f.Limit {
		jobs = jobs[:f.Limit]
	}
	return JobList{Jobs: orEmpty(jobs)}, nil
}

func (s *server) getJob(ctx context.Context, id string) (domain.Job, error) {
	job, err := s.store.GetJob(ctx, id)
	if err != nil {
		return domain.Job{}, storeError(err, jobNotFound(id), "")
	}
	return job, nil
}

func (s *server) jobEvents(ctx context.Context, id string) (JobEvents, error) {
	if _, err := s.getJob(ctx, id); err != nil {
		return JobEvents{}, err
	}
	evs, err := s.store.ListEvents(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return JobEvents{}, storeError(err, "", "")
	}
	return JobEvents{JobID: id, Events: orEmpty(evs)}, nil
}

// cancelJob asks the worker holding the job (or the next to take it) to
// cancel it; the API itself never writes the job.
func (s *server) cancelJob(ctx context.Context, id string) (CancelAccepted, error) {
	job, err := s.getJob(ctx, id)
	if err != nil {
		return CancelAccepted{}, err
	}
	if job.Status.Terminal() {
		return CancelAccepted{}, conflict("job %s is already %s", job.ID, job.Status)
	}
	if err := s.disp.RequestCancel(ctx, job.ID); err != nil {
		return CancelAccepted{}, unavailable(err, "could not request the cancel because the job queue is unavailable; try again later")
	}
	return CancelAccepted{JobID: job.ID, CancelRequested: true}, nil
}
