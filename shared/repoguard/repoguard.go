// Package repoguard holds the guards of Satoru's restic repository that
// must work across processes and hosts, never by an in-process flag:
//
//   - one restic init, ever: under a NATS KV lease, checked again under
//     it, and verified by opening the repository afterwards;
//   - a record, in NATS KV, of every restic process Satoru starts on the
//     repository (host, pid, start time), so that the lock a process left
//     when it died (kill -9, a crash of its worker) is cleared at once by
//     the next job instead of blocking every backup until restic judges it
//     stale after 30 minutes.
package repoguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/tick"
)

// Guard guards one restic repository for one Satoru process.
type Guard struct {
	Infra *bus.Infra
	// Host is this host's name as restic writes it into its locks
	// (os.Hostname): restic unlock clears a dead process's lock only on
	// the host that made it.
	Host string
	// Instance names this Satoru process in records and lease holders.
	Instance string
	Log      *slog.Logger
	// Poll is how often a lease held elsewhere is tried again; 0 means
	// 200 ms.
	Poll time.Duration
}

// New returns a Guard for this host.
func New(infra *bus.Infra, instance string, log *slog.Logger) (*Guard, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("repoguard: host name: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Guard{Infra: infra, Host: host, Instance: instance, Log: log}, nil
}

// Proc is the record of one restic process.
type Proc struct {
	Host string `json:"host"`
	PID  int    `json:"pid"`
	// StartTicks is the process's start time in clock ticks since boot
	// (/proc/<pid>/stat), which tells a reused pid apart; 0 if unknown.
	StartTicks uint64 `json:"start_ticks"`
	Op         string `json:"op"`
	// Repos are the repositories the process may hold locks in (a copy
	// locks its source and its target), as restic.RedactLocation gives
	// them. ClearStale removes each once its locks are cleared.
	Repos     []string  `json:"repos"`
	Instance  string    `json:"instance"`
	StartedAt time.Time `json:"started_at"`

	key      string
	revision uint64
}

// Track returns repo with its restic processes recorded while they run.
// also are the other repositories its commands lock: the source of a
// copy.
func (g *Guard) Track(repo restic.Repo, also ...restic.Repo) restic.Repo {
	repos := []string{restic.RedactLocation(repo.Repository)}
	for _, r := range also {
		repos = append(repos, restic.RedactLocation(r.Repository))
	}
	repo.OnStart = func(op string, pid int) func() { return g.Record(op, pid, repos...) }
	return repo
}

// kvTimeout bounds one record write: the process it records is running
// already, so a slow NATS must not hold up the job for long.
const kvTimeout = 5 * time.Second

// Record records a restic process that runs on the repository and
// returns what removes the record once it ended. Track calls it for every
// restic run; it is exported for processes started some other way.
func (g *Guard) Record(op string, pid int, repos ...string) func() {
	p := Proc{Host: g.Host, PID: pid, StartTicks: startTicks(pid), Op: op, Repos: repos, Instance: g.Instance, StartedAt: time.Now().UTC()}
	key := events.ResticProcKey(g.Host, pid)
	data, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	rev, err := g.Infra.ResticProcs.Put(ctx, key, data)
	cancel()
	if err != nil {
		// The process runs unrecorded: should it die, its lock waits for
		// restic's own 30-minute rule or for the next start's unlock.
		g.Log.Warn("repoguard: restic process not recorded", "op", op, "pid", pid, "err", err)
		return nil
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
		defer cancel()
		err := g.Infra.ResticProcs.Delete(ctx, key, jetstream.LastRevision(rev))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !isWrongRevision(err) {
			g.Log.Warn("repoguard: restic process record not removed", "op", op, "pid", pid, "err", err)
		}
	}
}

// isWrongRevision: the record changed meanwhile (ClearStale removed it,
// or a new process got the same pid); either way it is not ours.
func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// Dead lists the recorded restic processes of this host that are gone:
// their pid no longer exists, or now belongs to a process that started at
// another time. Processes of other hosts are not judged here: restic can
// only clear a dead process's lock on the host that made it.
func (g *Guard) Dead(ctx context.Context) ([]Proc, error) {
	lister, err := g.Infra.ResticProcs.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("repoguard: list restic processes: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	prefix := events.ResticProcPrefix(g.Host)
	var dead []Proc
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		e, err := g.Infra.ResticProcs.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("repoguard: read restic process %s: %w", k, err)
		}
		var p Proc
		if err := json.Unmarshal(e.Value(), &p); err != nil || p.Host != g.Host {
			continue
		}
		p.key, p.revision = k, e.Revision()
		if !alive(p.PID, p.StartTicks) {
			dead = append(dead, p)
		}
	}
	return dead, nil
}

// alive reports whether pid runs and is the process that started at
// ticks (when known).
func alive(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	if ticks == 0 {
		return true
	}
	now := startTicks(pid)
	return now == 0 || now == ticks
}

// startTicks reads field 22 of /proc/<pid>/stat; 0 when it cannot.
func startTicks(pid int) uint64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	const startField = 22 - 3 // fields 3.. follow the name
	if len(f) <= startField {
		return 0
	}
	n, err := strconv.ParseUint(f[startField], 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// ClearStale clears the locks that restic processes of this host left in
// the given repositories when they died, when there are any: `restic
// unlock` on each of those repositories under the cluster-wide unlock
// lease (it removes only locks restic itself judges stale, never live
// ones; never --remove-all). A dead process's record loses the
// repositories cleared and goes once none is left, so a copy's lock in a
// repository this caller does not know waits for the caller that does.
// It returns the dead processes it cleared up after. With no dead process
// it costs one KV listing, no restic run.
func (g *Guard) ClearStale(ctx context.Context, repos ...restic.Repo) ([]Proc, error) {
	dead, err := g.deadIn(ctx, repos)
	if err != nil || len(dead) == 0 {
		return nil, err
	}
	lease, err := g.Hold(ctx, events.RepoUnlockKey, "unlock")
	if err != nil {
		return nil, err
	}
	defer g.Release(lease)
	// Looked at again under the lease: whoever held it may have cleared
	// these already.
	if dead, err = g.deadIn(ctx, repos); err != nil || len(dead) == 0 {
		return nil, err
	}
	removed := 0
	cleared := map[string]bool{}
	for _, r := range repos {
		loc := restic.RedactLocation(r.Repository)
		if !slices.ContainsFunc(dead, func(p Proc) bool { return slices.Contains(p.Repos, loc) }) {
			continue
		}
		r.OnStart = nil // unlock takes no lock: nothing to record
		n, err := r.UnlockStale(ctx)
		if err != nil && !errors.Is(err, restic.ErrNoRepository) {
			return nil, fmt.Errorf("repoguard: clear locks of %d dead restic process(es) in %s: %w", len(dead), loc, err)
		}
		removed += n
		cleared[loc] = true
	}
	for _, p := range dead {
		left := slices.DeleteFunc(slices.Clone(p.Repos), func(loc string) bool { return cleared[loc] })
		if len(left) == 0 {
			err = g.Infra.ResticProcs.Delete(ctx, p.key, jetstream.LastRevision(p.revision))
		} else {
			p.Repos = left
			var data []byte
			if data, err = json.Marshal(p); err == nil {
				_, err = g.Infra.ResticProcs.Update(ctx, p.key, data, p.revision)
			}
		}
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && !isWrongRevision(err) {
			g.Log.Warn("repoguard: dead restic process record not updated", "pid", p.PID, "err", err)
		}
	}
	g.Log.Warn("repoguard: cleared locks of restic processes that died", "dead", len(dead), "locks_removed", removed)
	return dead, nil
}

// deadIn is Dead narrowed to processes with locks in one of repos.
func (g *Guard) deadIn(ctx context.Context, repos []restic.Repo) ([]Proc, error) {
	dead, err := g.Dead(ctx)
	if err != nil {
		return nil, err
	}
	locs := make([]string, 0, len(repos))
	for _, r := range repos {
		locs = append(locs, restic.RedactLocation(r.Repository))
	}
	return slices.DeleteFunc(dead, func(p Proc) bool {
		return !slices.ContainsFunc(p.Repos, func(loc string) bool { return slices.Contains(locs, loc) })
	}), nil
}

// Hold takes the cluster-wide lease key, waiting while another process
// holds it, and keeps it renewed until Release. purpose names the holder
// in the lease.
func (g *Guard) Hold(ctx context.Context, key, purpose string) (*Held, error) {
	return g.hold(ctx, key, purpose, nil)
}

// Maintenance takes the cluster-wide maintenance lease
// (events.RepoMaintenanceKey) for purpose ("retention <job>", "sync
// <job>"), waiting while another process's maintenance holds it. Prune and
// the offsite copy hold it, so two of them never run at once on any host:
// restic's own locks would make the second fail after --retry-lock instead.
// Backups never take it: restic's shared locks keep prune from breaking
// them. waiting, when set, is told once who holds the lease.
func (g *Guard) Maintenance(ctx context.Context, purpose string, waiting func(holder string)) (*Held, error) {
	return g.hold(ctx, events.RepoMaintenanceKey, purpose, waiting)
}

// TryMaintenance takes the maintenance lease only when it is free: nil
// and the holder's description when another process holds it. For
// best-effort work (a clean-up prune) that the next retention redoes.
func (g *Guard) TryMaintenance(ctx context.Context, purpose string) (*Held, string, error) {
	h := bus.LeaseHolder{JobID: purpose + ":" + uuid.NewString(), Worker: g.Instance}
	lease, err := g.Infra.AcquireKey(ctx, events.RepoMaintenanceKey, h)
	if errors.Is(err, bus.ErrLeaseHeld) {
		return nil, err.Error(), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("repoguard: lease %s: %w", events.RepoMaintenanceKey, err)
	}
	held, err := g.keep(ctx, lease)
	return held, "", err
}

func (g *Guard) hold(ctx context.Context, key, purpose string, waiting func(holder string)) (*Held, error) {
	// A holder of its own, so two goroutines of one process never both
	// "take over" the same lease.
	h := bus.LeaseHolder{JobID: purpose + ":" + uuid.NewString(), Worker: g.Instance}
	poll := g.Poll
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	for {
		lease, err := g.Infra.AcquireKey(ctx, key, h)
		if err == nil {
			return g.keep(ctx, lease)
		}
		if !errors.Is(err, bus.ErrLeaseHeld) {
			return nil, fmt.Errorf("repoguard: lease %s: %w", key, err)
		}
		if waiting != nil {
			waiting(err.Error())
			waiting = nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("repoguard: waiting for lease %s (%v): %w", key, err, context.Cause(ctx))
		case <-t.C:
		}
	}
}

// Held is a lease kept renewed by its own goroutine.
type Held struct {
	lease *bus.Lease
	stop  context.CancelFunc
	done  chan struct{}
}

func (g *Guard) keep(ctx context.Context, lease *bus.Lease) (*Held, error) {
	every := 5 * time.Second
	if st, err := g.Infra.Leases.Status(ctx); err == nil && st.TTL() > 0 {
		every = st.TTL() / 3
	}
	kctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	h := &Held{lease: lease, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick.Every(kctx, every, func() bool {
			if err := lease.Renew(kctx); err != nil && kctx.Err() == nil {
				g.Log.Error("repoguard: lease lost", "key", lease.Key(), "err", err)
				return false
			}
			return true
		})
	}()
	return h, nil
}

// Release stops renewing h and gives the lease up.
func (g *Guard) Release(h *Held) {
	if h == nil {
		return
	}
	h.stop()
	<-h.done
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	if err := h.lease.Release(ctx); err != nil {
		g.Log.Warn("repoguard: lease release failed; it expires by TTL", "key", h.lease.Key(), "err", err)
	}
}

// EnsureInit makes sure the repository exists, initialising it at most
// once across every process: a repository that opens needs nothing; else,
// under the init lease, it is looked at again (another process may have
// just made it), initialised if still missing, and opened once more to
// prove the init worked. A local repository that a crashed init left with
// keys but no config is cleared of those keys first: a key without its
// config can only make the next open fail.
func (g *Guard) EnsureInit(ctx context.Context, repo restic.Repo) (created bool, err error) {
	repo.OnStart = nil // init and open take no lock
	err = repo.Open(ctx)
	if err == nil || !errors.Is(err, restic.ErrNoRepository) {
		return false, err
	}
	lease, err := g.Hold(ctx, events.RepoInitKey, "init")
	if err != nil {
		return false, err
	}
	defer g.Release(lease)
	err = repo.Open(ctx)
	if err == nil || !errors.Is(err, restic.ErrNoRepository) {
		return false, err
	}
	if err := g.clearOrphanKeys(repo.Repository); err != nil {
		return false, err
	}
	if err := repo.Init(ctx); err != nil {
		return false, err
	}
	if err := repo.Open(ctx); err != nil {
		return true, fmt.Errorf("restic repository %s does not open after init: %w", restic.RedactLocation(repo.Repository), err)
	}
	return true, nil
}

// clearOrphanKeys removes the key files of a local repository that has no
// config (an init killed between writing its key and its config).
func (g *Guard) clearOrphanKeys(location string) error {
	if restic.Scheme(location) != "local" {
		return nil
	}
	dir := strings.TrimPrefix(location, "local:")
	if _, err := os.Stat(filepath.Join(dir, "config")); err == nil {
		return nil
	}
	keys, err := os.ReadDir(filepath.Join(dir, "keys"))
	if err != nil {
		return nil // no keys folder: nothing to clear
	}
	for _, k := range keys {
		p := filepath.Join(dir, "keys", k.Name())
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("repoguard: remove key %s left by an unfinished init: %w", p, err)
		}
		g.Log.Warn("repoguard: removed a key left by an unfinished restic init", "key", p)
	}
	return nil
}
