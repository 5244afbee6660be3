package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

// countingLists is a store read that counts its calls, answers with the
// current value of version (as one site named "v<version>") and, when
// gate is set, waits for it to close first.
type countingLists struct {
	calls   atomic.Int64
	version atomic.Int64

	mu   sync.Mutex
	gate chan struct{}
	err  error
}

func (c *countingLists) set(gate chan struct{}, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate, c.err = gate, err
}

func (c *countingLists) read(ctx context.Context) (siteSnapshot, error) {
	c.calls.Add(1)
	v := c.version.Load()
	c.mu.Lock()
	gate, err := c.gate, c.err
	c.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return siteSnapshot{}, ctx.Err()
		}
	}
	if err != nil {
		return siteSnapshot{}, err
	}
	return siteSnapshot{Sites: []domain.Site{{Name: fmt.Sprintf("v%d", v)}}}, nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newTestLists(t *testing.T, maxAge time.Duration) (*siteLists, *countingLists, *fakeClock) {
	t.Helper()
	src := &countingLists{}
	clk := &fakeClock{t: testNow}
	l := &siteLists{read: src.read, maxAge: maxAge, now: clk.now, base: context.Background(),
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Cleanup(l.wait)
	return l, src, clk
}

func getName(t *testing.T, l *siteLists) string {
	t.Helper()
	snap, err := l.get(context.Background())
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return snap.Sites[0].Name
}

func TestSiteListsHitsWithinMaxAge(t *testing.T) {
	l, src, clk := newTestLists(t, 2*time.Second)
	if got := getName(t, l); got != "v0" || src.calls.Load() != 1 {
		t.Fatalf("first get = %s after %d reads, want v0 after 1", got, src.calls.Load())
	}
	src.version.Store(1)
	for i := 0; i < 5; i++ {
		clk.advance(400 * time.Millisecond) // up to exactly 2 s
		if got := getName(t, l); got != "v0" {
			t.Fatalf("get at +%d = %s, want the snapshot v0", i, got)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("%d reads within MaxAge, want 1", n)
	}
}

func TestSiteListsStaleWhileRevalidate(t *testing.T) {
	l, src, clk := newTestLists(t, 2*time.Second)
	getName(t, l)
	src.version.Store(1)
	gate := make(chan struct{})
	src.set(gate, nil)
	clk.advance(3 * time.Second)
	// Older than MaxAge: answered at once from the old snapshot while
	// one read runs; more requests meanwhile start no other read.
	for i := 0; i < 5; i++ {
		if got := getName(t, l); got != "v0" {
			t.Fatalf("stale get = %s, want v0 at once", got)
		}
	}
	close(gate)
	l.wait()
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d reads, want 2 (the first and one refresh)", n)
	}
	if got := getName(t, l); got != "v1" {
		t.Errorf("after the refresh get = %s, want v1", got)
	}
	// The refreshed snapshot is dated from when its read began.
	clk.advance(2 * time.Second)
	getName(t, l)
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d reads, want no new one within MaxAge of the refresh", n)
	}
}

func TestSiteListsStalenessBound(t *testing.T) {
	l, src, clk := newTestLists(t, 2*time.Second)
	getName(t, l)
	src.version.Store(1)
	clk.advance(staleFactor*2*time.Second + time.Millisecond)
	// Too old to answer from: this request waits for the read.
	if got := getName(t, l); got != "v1" {
		t.Errorf("get of a snapshot past %d×MaxAge = %s, want the fresh v1", staleFactor, got)
	}
}

func TestSiteListsFailedRefresh(t *testing.T) {
	l, src, clk := newTestLists(t, 2*time.Second)
	getName(t, l)
	src.set(nil, errors.New("store down"))
	clk.advance(3 * time.Second)
	if got := getName(t, l); got != "v0" {
		t.Errorf("get = %s, want the old snapshot while the refresh fails", got)
	}
	l.wait()
	clk.advance(staleFactor * 2 * time.Second)
	if _, err := l.get(context.Background()); err == nil || err.Error() != "store down" {
		t.Errorf("get past the bound with the store down: err = %v", err)
	}
	src.set(nil, nil)
	if got := getName(t, l); got != "v0" {
		t.Errorf("get after the store is back = %s", got)
	}
}

func TestSiteListsInvalidate(t *testing.T) {
	l, src, _ := newTestLists(t, time.Hour)
	getName(t, l)
	src.version.Store(1)
	l.invalidate()
	if got := getName(t, l); got != "v1" {
		t.Errorf("get after invalidate = %s, want v1", got)
	}
	if n := src.calls.Load(); n != 2 {
		t.Errorf("%d reads, want 2", n)
	}
}

// A read that began before a write may have missed it: once the write
// invalidated the snapshot, that read's answer is not kept.
func TestSiteListsInvalidateDuringRead(t *testing.T) {
	l, src, clk := newTestLists(t, 2*time.Second)
	getName(t, l)
	gate := make(chan struct{})
	src.set(gate, nil)
	clk.advance(3 * time.Second)
	getName(t, l) // starts a background read of v0
	src.version.Store(1)
	l.invalidate()
	src.set(nil, nil) // the next read does not wait
	if got := getName(t, l); got != "v1" {
		t.Errorf("get after invalidate = %s, want v1 (not the read in flight)", got)
	}
	close(gate)
	l.wait()
	if got := getName(t, l); got != "v1" {
		t.Errorf("the read begun before the write replaced the snapshot: %s", got)
	}
}

func TestSiteListsConcurrentFirstGetsReadOnce(t *testing.T) {
	l, src, _ := newTestLists(t, 2*time.Second)
	gate := make(chan struct{})
	src.set(gate, nil)
	const n = 20
	var wg sync.WaitGroup
	names := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snap, err := l.get(context.Background())
			if err == nil {
				names[i] = snap.Sites[0].Name
			}
		}()
	}
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others queue up
	close(gate)
	wg.Wait()
	if c := src.calls.Load(); c != 1 {
		t.Errorf("%d concurrent gets made %d reads, want 1", n, c)
	}
	for i, name := range names {
		if name != "v0" {
			t.Errorf("get %d = %q", i, name)
		}
	}
}

func TestSiteListsWaiterLeaves(t *testing.T) {
	l, src, _ := newTestLists(t, 2*time.Second)
	gate := make(chan struct{})
	src.set(gate, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.get(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want the request's", err)
	}
	close(gate)
	l.wait()
	// The read went on without the request and is kept.
	if got := getName(t, l); got != "v0" || src.calls.Load() != 1 {
		t.Errorf("get = %s after %d reads", got, src.calls.Load())
	}
}

func TestSiteListsOff(t *testing.T) {
	l, src, _ := newTestLists(t, -1)
	for i := 0; i < 3; i++ {
		src.version.Store(int64(i))
		if got := getName(t, l); got != fmt.Sprintf("v%d", i) {
			t.Errorf("get %d = %s", i, got)
		}
	}
	if n := src.calls.Load(); n != 3 {
		t.Errorf("%d reads, want one per get", n)
	}
}

// Through the API: the list (and /health) answer from the snapshot, the
// API's own site writes show at once, GET /sites/{uuid} stays exact.
func TestSiteListSnapshotThroughAPI(t *testing.T) {
	var counted *listCounter
	h := newHarness(t, func(d *Deps) {
		d.SiteListMaxAge = time.Hour
		counted = &listCounter{fakeStore: d.Store.(*fakeStore)}
		d.Store = counted
	})
	h.createSite(`{"name":"a-site","host":"h","user":"u"}`)
	names := func() []string {
		t.Helper()
		var out []string
		for _, s := range decode[SiteList](t, h.do("GET", "/api/v1/sites", "")).Sites {
			out = append(out, s.Name+":"+string(s.Status.Health.Status))
		}
		return out
	}
	if got := fmt.Sprint(names()); got != "[a-site:unknown]" {
		t.Fatalf("list = %s", got)
	}
	before := counted.lists.Load()

	// A worker writes a status: the list shows it only once the snapshot
	// is refreshed; the site itself shows it at once.
	h.store.mu.Lock()
	h.store.statuses["id-1"] = domain.SiteStatus{SiteUUID: "id-1", Health: domain.HealthState{Status: domain.HealthFailed}}
	h.store.mu.Unlock()
	if got := fmt.Sprint(names()); got != "[a-site:unknown]" {
		t.Errorf("list within MaxAge = %s, want the snapshot", got)
	}
	if r := decode[HealthReport](t, h.do("GET", "/api/v1/health", "")); r.Sites.Total != 1 || r.Sites.ByStatus[domain.HealthFailed] != 0 {
		t.Errorf("health sites = %+v, want the snapshot", r.Sites)
	}
	if one := decode[SiteDetail](t, h.do("GET", "/api/v1/sites/id-1", "")); one.Status.Health.Status != domain.HealthFailed {
		t.Errorf("GET /sites/id-1 status = %s, want failed at once", one.Status.Health.Status)
	}
	if n := counted.lists.Load() - before; n != 0 {
		t.Errorf("%d list reads for cached answers", n)
	}

	// The API's own writes show at once.
	h.createSite(`{"name":"b-site","host":"h","user":"u"}`)
	if got := fmt.Sprint(names()); got != "[a-site:failed b-site:unknown]" {
		t.Errorf("list after create = %s", got)
	}
	if rec := h.do("PATCH", "/api/v1/sites/id-2", `{"name":"c-site"}`); rec.Code != 200 {
		t.Fatalf("patch = %d %s", rec.Code, rec.Body)
	}
	if got := fmt.Sprint(names()); got != "[a-site:failed c-site:unknown]" {
		t.Errorf("list after patch = %s", got)
	}
	if rec := h.do("DELETE", "/api/v1/sites/id-1", ""); rec.Code != 204 {
		t.Fatalf("delete = %d %s", rec.Code, rec.Body)
	}
	if got := fmt.Sprint(names()); got != "[c-site:unknown]" {
		t.Errorf("list after delete = %s", got)
	}
	if r := decode[HealthReport](t, h.do("GET", "/api/v1/health", "")); r.Sites.Total != 1 {
		t.Errorf("health after delete: %d sites", r.Sites.Total)
	}
}

// listCounter counts the reads of the site list.
type listCounter struct {
	*fakeStore
	lists atomic.Int64
}

func (c *listCounter) ListSites(ctx context.Context) ([]domain.Site, error) {
	c.lists.Add(1)
	return c.fakeStore.ListSites(ctx)
}
