package httpapi

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
)

// SyncView is the answer of GET /sync: the sync_state document with what
// the API knows around it.
type SyncView struct {
	domain.SyncState
	// Configured says an offsite repository (restic_b2_repository) is set.
	Configured      bool  `json:"configured"`
	IntervalSeconds int64 `json:"interval_seconds"`
	// OldestPendingAgeSeconds is now minus oldest_pending_at (0 if none).
	OldestPendingAgeSeconds int64 `json:"oldest_pending_age_seconds"`
	// Health is ok, stale, failed or not_configured (see GET /health).
	Health string `json:"health"`
}

// SyncInput is the body of POST /sync: no fields; the body may be empty.
type SyncInput struct{}

var errSyncNotConfigured = conflict("offsite sync is not configured: set restic_b2_repository (and restic_b2_account_id / restic_b2_account_key)")

// createSync queues a restic_sync job: a repository-level job (no site)
// created like a site's job.
func (s *server) createSync(ctx context.Context) (JobAccepted, error) {
	if !s.offsite {
		return JobAccepted{}, errSyncNotConfigured
	}
	return s.enqueue(ctx, domain.Job{ID: s.newID(), Type: domain.JobResticSync, Status: domain.StatusQueued, CreatedAt: s.now().UTC()})
}

func (s *server) getSync(ctx context.Context) (SyncView, error) {
	st, err := s.store.GetSyncState(ctx, domain.OffsiteSyncStateID)
	if err != nil {
		return SyncView{}, storeError(err, "", "")
	}
	if st.ID == "" {
		st.ID = domain.OffsiteSyncStateID
	}
	if st.Status == "" {
		st.Status = domain.HealthUnknown
	}
	h := SyncHealthAt(st, s.offsite, s.syncInterval, s.now().UTC())
	return SyncView{SyncState: st, Configured: s.offsite, IntervalSeconds: h.IntervalSeconds,
		OldestPendingAgeSeconds: h.OldestPendingAgeSeconds, Health: h.Status}, nil
}

// health gathers the aggregate health: service checks, sites, offsite
// sync and disk headroom, measured concurrently where they wait.
func (s *server) health(ctx context.Context) (HealthReport, error) {
	now := s.now().UTC()
	r := HealthReport{CheckedAt: now, Disks: make([]DiskHealth, len(s.disks)), Nodes: []NodeHealth{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.Services = s.runChecks(ctx)
	}()
	var instances []bus.Instance
	var livenessErr error
	if s.services != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			instances, livenessErr = s.services.Services(lctx)
		}()
	}
	var records []bus.Instance
	var owners map[int]string
	var recordsErr error
	if s.services != nil && s.nodes != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			records, recordsErr = s.nodes.NodeRecords(nctx)
			if recordsErr == nil {
				owners, recordsErr = s.nodes.PartitionOwners(nctx)
			}
		}()
	}
	for i, d := range s.disks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d.Remote {
				r.Disks[i] = DiskHealthOf(d, DiskSpace{}, nil)
				return
			}
			space, err := s.diskSpace(d.Path)
			r.Disks[i] = DiskHealthOf(d, space, err)
		}()
	}
	// Sites and statuses from the snapshot GET /sites answers from.
	snap, err := s.siteLists.get(ctx)
	var st domain.SyncState
	if err == nil {
		st, err = s.store.GetSyncState(ctx, domain.OffsiteSyncStateID)
	}
	var cst domain.CheckState
	if err == nil {
		cst, err = s.checkState(ctx)
	}
	var running []domain.Job
	if err == nil && s.services != nil {
		running, err = s.store.ListJobs(ctx, store.JobFilter{Status: domain.StatusRunning, Limit: store.MaxJobLimit})
	}
	wg.Wait()
	if err != nil {
		return HealthReport{}, storeError(err, "", "")
	}
	r.Services = orEmpty(r.Services)
	r.Sites = SummarizeSites(snap.Sites, snap.Statuses)
	r.Sync = SyncHealthAt(st, s.offsite, s.syncInterval, now)
	r.Check = CheckHealthAt(cst, s.checkEvery, now)
	if s.services != nil {
		r.Liveness = LivenessOf(instances, livenessErr, s.expected, now)
		if recordsErr != nil {
			r.NodesError = recordsErr.Error()
		}
		r.Nodes = NodesOf(instances, livenessErr, records, snap.Statuses, running, owners, snap.Sites, now)
	}
	Judge(&r)
	return r, nil
}

// decodeOptionalJSON is decodeJSON for a body that may be left out: no
// body at all is fine, anything sent must be one JSON object without
// unknown fields.
func decodeOptionalJSON(c echo.Context, dst any) error {
	r := c.Request()
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil
	}
	// A chunked body has no length: look for a first byte.
	br := bufio.NewReader(r.Body)
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		return nil
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{br, r.Body}
	return decodeJSON(c, dst)
}
