package httpapi

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/store"
)

// fakeStore is a small in-memory Store. fail[method] makes that method
// fail; log records every successful write (and the dispatcher's calls)
// in order.
type fakeStore struct {
	mu       sync.Mutex
	sites    map[string]domain.Site
	statuses map[string]domain.SiteStatus
	targets  map[string]domain.Target
	jobs     map[string]domain.Job
	events   map[string][]domain.JobEvent
	sync     *domain.SyncState
	fail     map[string]error
	log      *[]string
}

func newFakeStore(log *[]string) *fakeStore {
	return &fakeStore{
		sites: map[string]domain.Site{}, statuses: map[string]domain.SiteStatus{},
		targets: map[string]domain.Target{}, jobs: map[string]domain.Job{},
		events: map[string][]domain.JobEvent{}, fail: map[string]error{}, log: log,
	}
}

func (f *fakeStore) check(method string) error { return f.fail[method] }
func (f *fakeStore) record(s string)           { *f.log = append(*f.log, s) }

func (f *fakeStore) CreateSite(_ context.Context, s domain.Site) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("CreateSite"); err != nil {
		return err
	}
	for _, o := range f.sites {
		if o.Name == s.Name || o.UUID == s.UUID {
			return fmt.Errorf("store: create site: %w", store.ErrConflict)
		}
	}
	f.sites[s.UUID] = s
	f.record("CreateSite " + s.UUID)
	return nil
}

func (f *fakeStore) GetSite(_ context.Context, uuid string) (domain.Site, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("GetSite"); err != nil {
		return domain.Site{}, err
	}
	s, ok := f.sites[uuid]
	if !ok {
		return s, fmt.Errorf("store: get site: %w", store.ErrNotFound)
	}
	return s, nil
}

func (f *fakeStore) ListSites(context.Context) ([]domain.Site, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListSites"); err != nil {
		return nil, err
	}
	out := []domain.Site{}
	for _, s := range f.sites {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *fakeStore) ReplaceSite(_ context.Context, s domain.Site) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ReplaceSite"); err != nil {
		return err
	}
	if _, ok := f.sites[s.UUID]; !ok {
		return fmt.Errorf("store: replace site: %w", store.ErrNotFound)
	}
	for _, o := range f.sites {
		if o.Name == s.Name && o.UUID != s.UUID {
			return fmt.Errorf("store: replace site: %w", store.ErrConflict)
		}
	}
	f.sites[s.UUID] = s
	f.record("ReplaceSite " + s.UUID)
	return nil
}

func (f *fakeStore) DeleteSite(_ context.Context, uuid string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("DeleteSite"); err != nil {
		return err
	}
	_, ok := f.sites[uuid]
	delete(f.sites, uuid)
	delete(f.statuses, uuid)
	for id, t := range f.targets {
		if t.SiteUUID == uuid {
			delete(f.targets, id)
		}
	}
	if !ok {
		return fmt.Errorf("store: delete site: %w", store.ErrNotFound)
	}
	f.record("DeleteSite " + uuid)
	return nil
}

func (f *fakeStore) GetSiteStatus(_ context.Context, uuid string) (domain.SiteStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("GetSiteStatus"); err != nil {
		return domain.SiteStatus{}, err
	}
	if st, ok := f.statuses[uuid]; ok {
		return st, nil
	}
	return domain.SiteStatus{SiteUUID: uuid, Health: domain.HealthState{Status: domain.HealthUnknown}}, nil
}

func (f *fakeStore) ListSiteStatuses(context.Context) (map[string]domain.SiteStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListSiteStatuses"); err != nil {
		return nil, err
	}
	out := map[string]domain.SiteStatus{}
	for k, v := range f.statuses {
		out[k] = v
	}
	return out, nil
}

func (f *fakeStore) AddTarget(_ context.Context, t domain.Target) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("AddTarget"); err != nil {
		return err
	}
	id := domain.TargetID(t.SiteUUID, t.TargetHash)
	if _, ok := f.targets[id]; ok {
		return fmt.Errorf("store: add target: %w", store.ErrConflict)
	}
	f.targets[id] = t
	f.record("AddTarget " + id)
	if n := f.fail["AddTarget#after"]; n != nil {
		f.fail["AddTarget"] = n // the next AddTarget fails
	}
	return nil
}

func (f *fakeStore) ListTargets(_ context.Context, siteUUID string) ([]domain.Target, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListTargets"); err != nil {
		return nil, err
	}
	out := []domain.Target{}
	for _, t := range f.targets {
		if t.SiteUUID == siteUUID {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func (f *fakeStore) DeleteTarget(_ context.Context, siteUUID, hash string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("DeleteTarget"); err != nil {
		return err
	}
	id := domain.TargetID(siteUUID, hash)
	if _, ok := f.targets[id]; !ok {
		return fmt.Errorf("store: delete target: %w", store.ErrNotFound)
	}
	delete(f.targets, id)
	f.record("DeleteTarget " + id)
	return nil
}

func (f *fakeStore) InsertJob(_ context.Context, j domain.Job) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("InsertJob"); err != nil {
		return err
	}
	if _, ok := f.jobs[j.ID]; ok {
		return fmt.Errorf("store: insert job: %w", store.ErrConflict)
	}
	f.jobs[j.ID] = j
	f.record("InsertJob " + j.ID)
	return nil
}

func (f *fakeStore) GetJob(_ context.Context, id string) (domain.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("GetJob"); err != nil {
		return domain.Job{}, err
	}
	j, ok := f.jobs[id]
	if !ok {
		return j, fmt.Errorf("store: get job: %w", store.ErrNotFound)
	}
	return j, nil
}

func (f *fakeStore) ListJobs(_ context.Context, q store.JobFilter) ([]domain.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListJobs"); err != nil {
		return nil, err
	}
	out := []domain.Job{}
	for _, j := range f.jobs {
		if (q.SiteUUID == "" || j.SiteUUID == q.SiteUUID) && (q.Type == "" || j.Type == q.Type) && (q.Status == "" || j.Status == q.Status) {
			out = append(out, j)
		}
	}
	// Deliberately unsorted beyond map order: the API sorts.
	if q.Limit > 0 && len(out) > q.Limit {
		sort.Slice(out, func(i, k int) bool { return out[i].CreatedAt.After(out[k].CreatedAt) })
		out = out[:q.Limit]
	}
	return out, nil
}

func (f *fakeStore) ListEvents(_ context.Context, jobID string) ([]domain.JobEvent, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("ListEvents"); err != nil {
		return nil, err
	}
	return f.events[jobID], nil
}

func (f *fakeStore) GetSyncState(_ context.Context, id string) (domain.SyncState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("GetSyncState"); err != nil {
		return domain.SyncState{}, err
	}
	if f.sync == nil || f.sync.ID != id {
		return domain.SyncState{ID: id, Status: domain.HealthUnknown}, nil
	}
	return *f.sync, nil
}

// FinishJob makes the fake a JobFinisher.
func (f *fakeStore) FinishJob(_ context.Context, id string, status domain.JobStatus, errMsg string, _ map[string]any, at time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("FinishJob"); err != nil {
		return err
	}
	j, ok := f.jobs[id]
	if !ok {
		return store.ErrNotFound
	}
	j.Status, j.Error, j.FinishedAt = status, errMsg, &at
	f.jobs[id] = j
	f.record("FinishJob " + id + " " + string(status))
	return nil
}

func (f *fakeStore) counts() (sites, targets, jobs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sites), len(f.targets), len(f.jobs)
}

// plainStore hides FinishJob, for the case of a store without it.
type plainStore struct{ Store }

type fakeDispatcher struct {
	mu         sync.Mutex
	published  []events.JobRequest
	canceled   []string
	publishErr error
	cancelErr  error
	log        *[]string
	attempts   int
}

func (d *fakeDispatcher) Publish(_ context.Context, r events.JobRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.attempts++
	if d.publishErr != nil {
		return d.publishErr
	}
	if err := r.Validate(); err != nil {
		return err
	}
	d.published = append(d.published, r)
	*d.log = append(*d.log, "Publish "+r.JobID)
	return nil
}

func (d *fakeDispatcher) RequestCancel(_ context.Context, jobID string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancelErr != nil {
		return d.cancelErr
	}
	d.canceled = append(d.canceled, jobID)
	*d.log = append(*d.log, "RequestCancel "+jobID)
	return nil
}

type fakeChecker struct {
	name string
	err  error
}

func (c fakeChecker) Name() string                { return c.name }
func (c fakeChecker) Check(context.Context) error { return c.err }

var errStoreDown = errors.New("server selection error: mongodb://admin:s3cr3t@db:27017 connection refused")
