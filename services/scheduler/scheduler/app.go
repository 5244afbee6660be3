// Package scheduler is Satoru's scheduler: timers -> job requests. Every Tick it
// reads the sites, the stored schedules (collection "schedules") and, when
// something is due, the active jobs, lets internal/plan decide, then
// writes the jobs, publishes their requests and moves the schedules on.
// The leader also runs the history pass (history.go): it deletes the jobs
// that finished more than history_retention_days ago, a bounded batch per
// tick.
//
// Only the leader fires: the instance holding the lease "scheduler.leader"
// in the NATS KV bucket SATORU_LEASES. Two more guards stand behind it:
// a schedule moves on only if it still holds the value the tick read
// (store.SwapSchedules), and a run's job id is derived from the run
// (plan.JobID), so the store refuses a second job for the same run and
// NATS drops a second publish of it.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/services/scheduler/internal/plan"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/policy"
	"github.com/satoru/satoru/shared/store"
)

// LeaderKey is the scheduler's leader lease in the leases bucket.
const LeaderKey = "scheduler.leader"

// Defaults for zero Settings fields.
const (
	DefaultTick         = 30 * time.Second
	DefaultScanInterval = 24 * time.Hour
	DefaultSyncInterval = 24 * time.Hour
)

// Settings are the scheduler's knobs, taken from config by the caller.
type Settings struct {
	// Instance names this scheduler in the leader lease and the logs
	// (config instance_name).
	Instance string
	// Tick is how often Run ticks (scheduler_tick_seconds; default 30 s).
	Tick time.Duration
	// ScanInterval is how often each site is backed up
	// (site_scan_interval_hours; default 24 h).
	ScanInterval time.Duration
	// RetentionInterval is the least time between two retention runs of a
	// site (retention_interval_hours); 0 = the scheduler queues none.
	RetentionInterval time.Duration
	// VerifyInterval is how often each site's latest snapshot is restore
	// tested (verify_interval_hours; default 168 h); 0 = never.
	VerifyInterval time.Duration
	// SyncInterval is how often the offsite copy runs
	// (restic_sync_interval_hours; default 24 h), when SyncEnabled (an
	// offsite repository is configured).
	SyncInterval time.Duration
	SyncEnabled  bool
	// CheckInterval is how often the repository check runs
	// (restic_check_interval_hours; default 168 h); 0 = never.
	CheckInterval time.Duration
	// LeaderTTL is how long the leader lease lives unrenewed. It is the
	// TTL of the leases bucket (bus.Settings.LeaseTTL, i.e.
	// site_lease_seconds), which NATS enforces; 0 reads it from the
	// bucket. Run renews the lease every LeaderTTL/3.
	LeaderTTL time.Duration
	// StaleAfter is how old a running job's heartbeat_at may grow before
	// the leader recovers the job (job_stale_after_seconds; see
	// recoverStale); 0 turns the recovery off.
	StaleAfter time.Duration
	// MaxAttempts is job_max_attempts: a stale job that used them all is
	// failed, one with attempts left is published again if its request is
	// gone (default 5).
	MaxAttempts int
	// RecoverEvery is the least time between two recovery passes, each of
	// which reads the active jobs (default 1 minute).
	RecoverEvery time.Duration
	// HistoryRetention is history_retention_days: the history pass
	// deletes the jobs (and their events) that finished longer ago; 0
	// turns the pass off.
	HistoryRetention time.Duration
	// AuditRetention is audit_retention_days: each history pass, when it
	// ends, deletes the audit entries recorded longer ago; 0 keeps them.
	AuditRetention time.Duration
	// HistoryEvery is the least time from the end of one history pass to
	// the start of the next (default 1 h); the first starts HistoryDelay
	// (default 1 minute) after this instance became leader.
	HistoryEvery, HistoryDelay time.Duration
	// HistoryPerTick bounds the jobs one tick's share of a pass looks at
	// (default 500), HistoryTimePerTick its time (default 1 s, checked
	// between steps of at most 100 jobs); a pass with more to do goes on
	// at the next tick.
	HistoryPerTick     int
	HistoryTimePerTick time.Duration
}

// Deps are the scheduler's collaborators. Store, Infra and
// Settings.Instance are required; Registry gets the metrics (none if
// nil); Log defaults to discarding, Now to time.Now.
type Deps struct {
	Settings Settings
	Store    *store.Store
	Infra    *bus.Infra
	Registry prometheus.Registerer
	Log      *slog.Logger
	Now      func() time.Time
}

// TickResult is what one tick did.
type TickResult struct {
	// Leader: this instance held the leader lease and did the tick. A
	// follower's result is otherwise empty.
	Leader bool
	// Queued are the jobs this tick wrote and published, by type.
	Queued map[domain.JobType]int
	// JobIDs are their ids.
	JobIDs []string
	// Resumed are due runs whose job existed still queued (a tick that
	// stopped half-way); Republished how many of them were published
	// again because the stream did not hold them. Adopted are due runs
	// whose job was already running.
	Resumed, Republished, Adopted int
	// Waiting are due runs held back because their site (or the
	// repository) has a job queued or running.
	Waiting int
	// Lost are due runs found handled already: their job was stored (by
	// another scheduler, or by an earlier tick that stopped before moving
	// the schedule on), or their schedule moved on meanwhile.
	Lost int
	// Failed are runs that could not be queued (store or publish
	// error); they are due again on the next tick.
	Failed int
	// Schedules made, removed and rescheduled.
	Created, Deleted, Rescheduled int
	// ReadActive: the tick read the active jobs (something was due).
	ReadActive bool
	// Recovery is what the stale-job recovery pass did, if it ran.
	Recovery Recovery
	// History is what the history pass did at this tick, if it ran.
	History History
	// QueuedIn is the wall time from the tick's start until its jobs were
	// written and published; Took the whole tick.
	QueuedIn, Took time.Duration
}

// Total is the number of jobs queued.
func (r TickResult) Total() int {
	n := 0
	for _, v := range r.Queued {
		n += v
	}
	return n
}

// Scheduler is one scheduler instance. Its methods are not safe for
// concurrent use: Run (or a test) calls them from one goroutine.
type Scheduler struct {
	set   Settings
	store *store.Store
	infra *bus.Infra
	log   *slog.Logger
	now   func() time.Time
	m     *metrics
	pm    *policyMetrics

	lease *bus.Lease
	// cache holds the schedules while this instance leads: it is then
	// their only writer, so it reads them from the store when it becomes
	// leader, or after a write that did not go as planned (cacheOK
	// false), not every tick. Writes go to the store and then here.
	cache   map[string]store.Schedule
	cacheOK bool

	// recoveredAt is when the last recovery pass ran (scheduler clock).
	recoveredAt time.Time
	// active are the active jobs the tick in progress read, if it did.
	active      []domain.Job
	activeKnown bool

	// historyNext is when the next history pass may start (scheduler
	// clock; zero until this instance leads); historyOn: a pass is under
	// way and goes on at the next tick.
	historyNext time.Time
	historyOn   bool
}

// New builds a scheduler from d, filling defaults.
func New(d Deps) (*Scheduler, error) {
	if d.Store == nil || d.Infra == nil {
		return nil, errors.New("scheduler: Store and Infra are required")
	}
	s := d.Settings
	if s.Instance == "" {
		return nil, errors.New("scheduler: Settings.Instance is required")
	}
	if s.Tick <= 0 {
		s.Tick = DefaultTick
	}
	if s.ScanInterval <= 0 {
		s.ScanInterval = DefaultScanInterval
	}
	if s.SyncInterval <= 0 {
		s.SyncInterval = DefaultSyncInterval
	}
	if s.RetentionInterval < 0 {
		s.RetentionInterval = 0
	}
	if s.CheckInterval < 0 {
		s.CheckInterval = 0
	}
	if s.VerifyInterval < 0 {
		s.VerifyInterval = 0
	}
	if s.RecoverEvery <= 0 {
		s.RecoverEvery = DefaultRecoverEvery
	}
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.HistoryRetention < 0 {
		s.HistoryRetention = 0
	}
	if s.HistoryEvery <= 0 {
		s.HistoryEvery = DefaultHistoryEvery
	}
	if s.HistoryDelay <= 0 {
		s.HistoryDelay = DefaultHistoryDelay
	}
	if s.HistoryPerTick <= 0 {
		s.HistoryPerTick = DefaultHistoryPerTick
	}
	if s.HistoryTimePerTick <= 0 {
		s.HistoryTimePerTick = DefaultHistoryTimePerTick
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	return &Scheduler{
		set:   s,
		store: d.Store,
		infra: d.Infra,
		log:   log.With("service", domain.ServiceScheduler, "instance", s.Instance),
		now:   now,
		m:     newMetrics(d.Registry),
		pm:    newPolicyMetrics(d.Registry),
	}, nil
}

// Run ticks every Settings.Tick (the first tick at once) until ctx ends,
// renewing or seeking the leader lease every LeaderTTL/3 in between. A
// failed tick is logged and retried on the next one. On return it gives
// the lease up so another instance takes over at once.
func Run(ctx context.Context, d Deps) error {
	s, err := New(d)
	if err != nil {
		return err
	}
	if err := s.store.EnsureSchedules(ctx); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	ttl := s.set.LeaderTTL
	if ttl <= 0 {
		st, err := s.infra.Leases.Status(ctx)
		if err != nil {
			return fmt.Errorf("scheduler: read the leases bucket: %w", err)
		}
		ttl = st.TTL()
	}
	renewEvery := max(ttl/3, 100*time.Millisecond)
	s.log.Info("scheduler started", "tick", s.set.Tick, "scan_interval", s.set.ScanInterval,
		"retention_interval", s.set.RetentionInterval, "sync_enabled", s.set.SyncEnabled,
		"sync_interval", s.set.SyncInterval, "leader_ttl", ttl, "history_retention", s.set.HistoryRetention)
	defer s.Resign()

	tick := time.NewTicker(s.set.Tick)
	defer tick.Stop()
	renew := time.NewTicker(renewEvery)
	defer renew.Stop()
	s.tickLogged(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			s.tickLogged(ctx)
		case <-renew.C:
			if _, err := s.lead(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("scheduler: leader lease", "err", err)
			}
		}
	}
}

func (s *Scheduler) tickLogged(ctx context.Context) {
	res, err := s.Tick(ctx, s.now())
	switch {
	case err != nil && ctx.Err() == nil:
		s.log.Error("scheduler: tick failed", "err", err)
	case res.Total() > 0 || res.Failed > 0 || res.Lost > 0 || res.Recovery.Failed > 0 || res.Recovery.Republished > 0:
		s.log.Info("scheduler: tick", "queued", res.Total(), "waiting", res.Waiting, "lost", res.Lost,
			"failed", res.Failed, "stale_failed", res.Recovery.Failed, "stale_republished", res.Recovery.Republished, "took", res.Took)
	}
}

// Resign gives the leader lease up, if held.
func (s *Scheduler) Resign() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.lease == nil {
		// A take-over cut short by shutdown may have written the lease
		// without our learning it: remove it if it names this instance.
		if h, ok, err := s.infra.LeaseHolderOf(ctx, LeaderKey); err == nil && ok && h.Worker == s.set.Instance {
			if err := s.infra.Leases.Delete(ctx, LeaderKey); err != nil {
				s.log.Warn("scheduler: release leader lease; it expires by TTL", "err", err)
			}
		}
		return
	}
	if err := s.lease.Release(ctx); err != nil {
		s.log.Warn("scheduler: release leader lease", "err", err)
	}
	s.lease = nil
	s.cacheOK = false
	s.historyNext, s.historyOn = time.Time{}, false
	s.m.leader.Set(0)
	s.pm.reset()
}

// lead renews the leader lease, or tries to take it, and reports whether
// this instance leads.
func (s *Scheduler) lead(ctx context.Context) (bool, error) {
	if s.lease != nil {
		err := s.lease.Renew(ctx)
		if err == nil {
			return true, nil
		}
		if ctx.Err() != nil {
			// Stopping, not lost: keep the lease so Resign releases it.
			return false, ctx.Err()
		}
		s.log.Warn("scheduler: lost the leader lease", "err", err)
		s.lease = nil
		s.cacheOK = false
		s.historyNext, s.historyOn = time.Time{}, false
		s.m.leader.Set(0)
		s.pm.reset()
	}
	l, err := s.infra.AcquireKey(ctx, LeaderKey, bus.LeaseHolder{Worker: s.set.Instance})
	if errors.Is(err, bus.ErrLeaseHeld) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.lease = l
	s.cacheOK = false // read the schedules afresh: another leader may have written them
	s.m.leader.Set(1)
	s.log.Info("scheduler: leading")
	return true, nil
}

// Tick does one round at now if this instance leads (taking the lease if
// it is free): see the package comment and plan.Plan for the rules.
func (s *Scheduler) Tick(ctx context.Context, now time.Time) (TickResult, error) {
	start := time.Now()
	// Times are kept as the store keeps them (UTC, milliseconds), so the
	// schedules in memory equal the ones read back after a restart.
	now = now.UTC().Truncate(time.Millisecond)
	leader, err := s.lead(ctx)
	if err != nil || !leader {
		return TickResult{}, err
	}
	if s.historyNext.IsZero() {
		s.historyNext = now.Add(s.set.HistoryDelay)
	}
	s.active, s.activeKnown = nil, false
	res, err := s.work(ctx, now)
	if ctx.Err() == nil {
		rec, rerr := s.recoverStale(ctx, now, s.active, s.activeKnown)
		res.Recovery = rec
		if rerr != nil {
			s.log.Error("scheduler: recovery pass", "err", rerr)
		}
	}
	if ctx.Err() == nil {
		res.History = s.purgeHistory(ctx, now)
	}
	s.active, s.activeKnown = nil, false
	res.Leader = true
	res.Took = time.Since(start)
	s.m.observe(res, err)
	return res, err
}

// work is the tick of a leader: plan, write the schedule changes, queue
// the runs that are due, then move their schedules on.
func (s *Scheduler) work(ctx context.Context, now time.Time) (TickResult, error) {
	start := time.Now()
	res := TickResult{Queued: map[domain.JobType]int{}}
	out, err := s.planTick(ctx, now, &res)
	if err != nil {
		return res, err
	}
	if err := s.applySchedules(ctx, out, &res); err != nil {
		return res, err
	}
	for _, w := range out.Waiting {
		s.log.Debug("scheduler: run waits", "kind", w.Kind, "site_uuid", w.SiteUUID, "due", w.Due, "reason", w.Reason())
	}
	res.Waiting = len(out.Waiting)

	var mv moves
	s.fire(ctx, out.Fire, &res, &mv)
	s.resume(ctx, out.Resume, &res, &mv)
	for _, r := range out.Adopt {
		res.Adopted++
		mv.add(r)
	}
	res.QueuedIn = time.Since(start)
	return res, s.moveOn(ctx, mv, &res)
}

// planTick reads what the plan needs and plans the tick. The active jobs
// are read only when a run is due, once per tick: on the embedded store
// that reads the whole jobs collection.
func (s *Scheduler) planTick(ctx context.Context, now time.Time, res *TickResult) (plan.Output, error) {
	sites, err := s.store.ListSites(ctx)
	if err != nil {
		return plan.Output{}, fmt.Errorf("scheduler: %w", err)
	}
	if err := s.loadSchedules(ctx); err != nil {
		return plan.Output{}, fmt.Errorf("scheduler: %w", err)
	}
	in := plan.Input{
		Now: now,
		Settings: plan.Settings{ScanInterval: s.set.ScanInterval, RetentionInterval: s.set.RetentionInterval,
			SyncInterval: s.set.SyncInterval, SyncEnabled: s.set.SyncEnabled, CheckInterval: s.set.CheckInterval, VerifyInterval: s.set.VerifyInterval},
		Sites:     make([]string, len(sites)),
		Schedules: make([]store.Schedule, 0, len(s.cache)),
	}
	for i, site := range sites {
		in.Sites[i] = site.UUID
		if site.Policy.IsZero() {
			continue
		}
		if in.Policies == nil {
			in.Policies = map[string]policy.Compiled{}
		}
		pol, err := policy.Compile(site.Policy)
		if err != nil {
			// The API validates policies; one that fails here (a zone
			// gone from the time zone database) falls back to the global
			// schedule, but a pause still holds.
			s.log.Error("scheduler: site policy unusable; following the global schedule", "site_uuid", site.UUID, "err", err)
			pol = policy.Compiled{Paused: site.Policy.Paused}
		}
		in.Policies[site.UUID] = pol
	}
	for _, sc := range s.cache {
		in.Schedules = append(in.Schedules, sc)
	}
	s.pm.set(in.Sites, in.Policies, s.set.ScanInterval, now)
	out := plan.Plan(in)
	if !out.NeedActive {
		return out, nil
	}
	if in.Active, err = s.store.ActiveJobs(ctx, ""); err != nil {
		return plan.Output{}, fmt.Errorf("scheduler: %w", err)
	}
	in.ActiveKnown = true
	res.ReadActive = true
	s.active, s.activeKnown = in.Active, true
	return plan.Plan(in), nil
}

// moves are the schedule moves of the runs a tick handled.
type moves struct {
	swaps []store.ScheduleSwap
	runs  []plan.Run
	// lost are the runs counted in TickResult.Lost already, by job id.
	lost map[string]bool
}

func (m *moves) add(r plan.Run) {
	m.swaps, m.runs = append(m.swaps, r.Swap), append(m.runs, r)
}

func (m *moves) addLost(r plan.Run) {
	if m.lost == nil {
		m.lost = map[string]bool{}
	}
	m.lost[r.Job.ID] = true
	m.add(r)
}

// fire queues the new runs: one insert for all their jobs, then their
// requests (the job document is written first, then published).
func (s *Scheduler) fire(ctx context.Context, runs []plan.Run, res *TickResult, mv *moves) {
	if len(runs) == 0 {
		return
	}
	jobs := make([]domain.Job, len(runs))
	for i, r := range runs {
		jobs[i] = r.Job
	}
	inserted, ierr := s.store.InsertJobs(ctx, jobs)
	if ierr != nil {
		s.log.Error("scheduler: write jobs", "err", ierr)
	}
	var pub []plan.Run
	var reqs []events.JobRequest
	for i, r := range runs {
		switch {
		case inserted[i]:
			pub = append(pub, r)
			reqs = append(reqs, events.RequestFor(r.Job))
		case ierr == nil:
			// Its id exists: the same run was queued already, by
			// another scheduler or before a restart. Move the schedule
			// on (if nobody did).
			res.Lost++
			mv.addLost(r)
		default:
			res.Failed++
		}
	}
	for i, err := range s.infra.PublishAll(ctx, reqs) {
		r := pub[i]
		if err != nil {
			// Written, not published: the next tick finds it queued and
			// publishes it again (resume).
			s.log.Error("scheduler: publish job request", "job_id", r.Job.ID, "site_uuid", r.SiteUUID, "type", r.Job.Type, "err", err)
			res.Failed++
			continue
		}
		res.Queued[r.Job.Type]++
		res.JobIDs = append(res.JobIDs, r.Job.ID)
		mv.add(r)
	}
}

// resume queues again the runs whose job an earlier tick wrote and then
// stopped before moving the schedule on: their request is published
// again unless the stream still holds it.
func (s *Scheduler) resume(ctx context.Context, runs []plan.Run, res *TickResult, mv *moves) {
	for _, r := range runs {
		res.Resumed++
		got, err := s.infra.Requeue(ctx, events.RequestFor(r.Job))
		if err != nil {
			s.log.Error("scheduler: publish resumed job request", "job_id", r.Job.ID, "site_uuid", r.SiteUUID, "err", err)
			res.Failed++
			continue
		}
		if got == bus.RequeuePublished {
			res.Republished++
		}
		mv.add(r)
	}
}

// moveOn moves the schedules of the handled runs on, each only if it
// still holds what was read; one that moved meanwhile was run by another
// scheduler.
func (s *Scheduler) moveOn(ctx context.Context, mv moves, res *TickResult) error {
	if len(mv.swaps) == 0 {
		return nil
	}
	swapped, err := s.store.SwapSchedules(ctx, mv.swaps)
	for i, ok := range swapped {
		if ok {
			s.cache[mv.swaps[i].Schedule.ID] = mv.swaps[i].Schedule
			continue
		}
		s.cacheOK = false // read afresh next tick
		if err == nil && !mv.lost[mv.runs[i].Job.ID] {
			s.log.Warn("scheduler: schedule moved on meanwhile; another scheduler ran it",
				"schedule", mv.swaps[i].Schedule.ID, "job_id", mv.runs[i].Job.ID)
			res.Lost++
		}
	}
	if err != nil {
		s.cacheOK = false
		return fmt.Errorf("scheduler: %w", err)
	}
	return nil
}

// loadSchedules reads the schedules into the cache unless it is valid.
func (s *Scheduler) loadSchedules(ctx context.Context) error {
	if s.cacheOK {
		return nil
	}
	all, err := s.store.ListSchedules(ctx)
	if err != nil {
		return err
	}
	s.cache = make(map[string]store.Schedule, len(all))
	for _, sc := range all {
		s.cache[sc.ID] = sc
	}
	s.cacheOK = true
	return nil
}

// applySchedules writes the plan's schedule changes, then the cache. A
// change that did not apply (another scheduler wrote first) marks the
// cache for a reload; the runs planned on it are guarded by their swaps
// and job ids.
func (s *Scheduler) applySchedules(ctx context.Context, out plan.Output, res *TickResult) error {
	if len(out.Create) > 0 {
		n, err := s.store.InsertSchedules(ctx, out.Create)
		res.Created = n
		if err != nil {
			s.cacheOK = false
			return fmt.Errorf("scheduler: %w", err)
		}
		if n < len(out.Create) {
			s.cacheOK = false
		}
		for _, sc := range out.Create {
			s.cache[sc.ID] = sc
		}
	}
	if len(out.Delete) > 0 {
		n, err := s.store.DeleteSchedules(ctx, out.Delete...)
		res.Deleted = n
		if err != nil {
			s.cacheOK = false
			return fmt.Errorf("scheduler: %w", err)
		}
		for _, id := range out.Delete {
			delete(s.cache, id)
		}
	}
	if len(out.Reschedule) > 0 {
		swapped, err := s.store.SwapSchedules(ctx, out.Reschedule)
		for i, ok := range swapped {
			if !ok {
				s.cacheOK = false
				continue
			}
			res.Rescheduled++
			s.cache[out.Reschedule[i].Schedule.ID] = out.Reschedule[i].Schedule
		}
		if err != nil {
			s.cacheOK = false
			return fmt.Errorf("scheduler: %w", err)
		}
	}
	return nil
}
