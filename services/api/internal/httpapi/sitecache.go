package httpapi

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

// GET /sites and GET /health need every site and every status. On the
// embedded store the two reads cost ~250 ms with 1,000 sites and hold the
// process's one store connection meanwhile (docs/scale.md), so they are
// served from a snapshot of both lists instead:
//
//   - a snapshot younger than maxAge is answered from at once;
//   - an older one is still answered from at once, while one background
//     read replaces it (stale-while-revalidate);
//   - a snapshot older than staleFactor×maxAge, or none at all, is not
//     answered from: the request waits for a read (one read however many
//     requests wait), so an answer is never more than that stale;
//   - the API's own writes to sites drop the snapshot (invalidate), so a
//     client reads its own writes. Statuses are written by the workers,
//     not through the API: they show in the list up to maxAge late (at
//     most staleFactor×maxAge when no request came for a while).
//     GET /sites/{uuid} always reads the store.

// DefaultSiteListMaxAge is the age up to which the site list snapshot is
// answered from without a refresh (Deps.SiteListMaxAge 0).
const DefaultSiteListMaxAge = 2 * time.Second

// staleFactor bounds a stale answer: a snapshot older than staleFactor ×
// maxAge is refreshed before answering.
const staleFactor = 10

// siteReadTimeout bounds one read of both lists, which runs apart from
// the requests waiting for it.
const siteReadTimeout = 30 * time.Second

// siteSnapshot is one read of the sites (sorted by name) and their
// statuses, shared by every request that answers from it: read-only.
type siteSnapshot struct {
	Sites    []domain.Site
	Statuses map[string]domain.SiteStatus
	// at is when the read began: the snapshot holds every write that
	// ended before it.
	at time.Time
}

// siteLists holds the latest siteSnapshot. Its zero value is not usable:
// see newSiteLists.
type siteLists struct {
	read   func(ctx context.Context) (siteSnapshot, error)
	maxAge time.Duration // < 0: no snapshot, every get reads
	now    func() time.Time
	base   context.Context // reads run under it: they stop when it ends
	log    *slog.Logger

	mu       sync.Mutex
	snap     *siteSnapshot
	gen      uint64    // bumped by invalidate; older reads are not kept
	inflight *siteRead // the read of generation gen in flight, if any
	reads    sync.WaitGroup
}

// siteRead is one read in flight; done closes when snap or err is set.
type siteRead struct {
	gen  uint64
	done chan struct{}
	snap *siteSnapshot
	err  error
}

// newSiteLists serves the two lists of st. maxAge 0 is
// DefaultSiteListMaxAge, negative turns the snapshot off. base nil is
// context.Background.
func newSiteLists(st Store, maxAge time.Duration, base context.Context, log *slog.Logger) *siteLists {
	if maxAge == 0 {
		maxAge = DefaultSiteListMaxAge
	}
	if base == nil {
		base = context.Background()
	}
	return &siteLists{read: readSiteLists(st), maxAge: maxAge, now: time.Now, base: base, log: log}
}

// readSiteLists reads both lists of st, sites first.
func readSiteLists(st Store) func(ctx context.Context) (siteSnapshot, error) {
	return func(ctx context.Context) (siteSnapshot, error) {
		sites, err := st.ListSites(ctx)
		if err != nil {
			return siteSnapshot{}, err
		}
		statuses, err := st.ListSiteStatuses(ctx)
		if err != nil {
			return siteSnapshot{}, err
		}
		return siteSnapshot{Sites: sites, Statuses: statuses}, nil
	}
}

// get is the snapshot to answer from (see the top of this file). Its
// error is the store's, or ctx's when the request ends while it waits.
func (l *siteLists) get(ctx context.Context) (*siteSnapshot, error) {
	if l.maxAge < 0 {
		snap, err := l.read(ctx)
		return &snap, err
	}
	l.mu.Lock()
	if s := l.snap; s != nil {
		age := l.now().Sub(s.at)
		if age <= l.maxAge {
			l.mu.Unlock()
			return s, nil
		}
		if age <= staleFactor*l.maxAge {
			l.startRead()
			l.mu.Unlock()
			return s, nil
		}
	}
	r := l.startRead()
	l.mu.Unlock()
	select {
	case <-r.done:
		return r.snap, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// invalidate drops the snapshot after a write through the API; reads
// begun before it are not kept, as they may have missed the write.
func (l *siteLists) invalidate() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.gen++
	l.snap, l.inflight = nil, nil
}

// startRead returns the read in flight for the current generation,
// starting one if there is none. l.mu is held.
func (l *siteLists) startRead() *siteRead {
	if l.inflight != nil {
		return l.inflight
	}
	r := &siteRead{gen: l.gen, done: make(chan struct{})}
	l.inflight = r
	at := l.now()
	l.reads.Add(1)
	go func() {
		defer l.reads.Done()
		ctx, cancel := context.WithTimeout(l.base, siteReadTimeout)
		snap, err := l.read(ctx)
		cancel()
		l.mu.Lock()
		if l.inflight == r {
			l.inflight = nil
		}
		if err != nil {
			r.err = err
			l.log.Warn("api: read the site list", "err", err)
		} else {
			snap.at = at
			r.snap = &snap
			if r.gen == l.gen && (l.snap == nil || l.snap.at.Before(at)) {
				l.snap = r.snap
			}
		}
		l.mu.Unlock()
		close(r.done)
	}()
	return r
}

// wait waits for the reads in flight (tests).
func (l *siteLists) wait() { l.reads.Wait() }
