package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/services/api/internal/httpapi"
	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

// Scale check (docs/scale.md): GET /api/v1/sites with 1,000 sites, each
// with a status document, through the real API on the real embedded store
// (FerretDB on SQLite, one connection) and NATS. Run with
//
//	go test -tags ferretdb_no_postgresql,ferretdb_no_mysql -run '^$' \
//	  -bench SitesList1000 -benchtime 200x ./services/api/apiserver/
//
// It reports the p50 and p99 latency of the requests (answered from the
// API's site list snapshot, refreshed in the background every 2 s), of the
// same requests without the snapshot, and, to show where the time goes,
// the same percentiles for the two store reads behind the list
// (ListSites, ListSiteStatuses) and for the merge-and-encode alone.
func BenchmarkSitesList1000(b *testing.B) {
	const sites = 1000
	st, disp := benchStack(b, sites)
	const token = "bench-token"
	cs := &countingStore{Store: st}
	ctx, cancel := context.WithCancel(context.Background())
	// The default SiteListMaxAge: the real API, its site list snapshot
	// included.
	srv := httptest.NewServer(New(Deps{Store: cs, Dispatcher: disp, Token: token, Context: ctx}))
	b.Cleanup(func() { srv.Close(); cancel(); cs.settle() })

	body := getFrom(b, srv, token) // also warms the connection and loads the first snapshot
	if n := countSites(b, body); n != sites {
		b.Fatalf("listed %d sites, want %d", n, sites)
	}
	b.Logf("response: %d bytes", len(body))

	b.Run("GET", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		reads := cs.reads.Load()
		b.ResetTimer()
		// At least three snapshot ages long, so that requests also meet
		// the background refreshes (ns/op is then not per request; the
		// percentiles are).
		begin := time.Now()
		for i := 0; i < b.N || time.Since(begin) < 3*httpapi.DefaultSiteListMaxAge; i++ {
			t0 := time.Now()
			body := getFrom(b, srv, token)
			lat = append(lat, time.Since(t0))
			if i == 0 && countSites(b, body) != sites {
				b.Fatal("wrong number of sites")
			}
		}
		b.StopTimer()
		b.ReportMetric(float64(cs.reads.Load()-reads), "refreshes")
		b.ReportMetric(float64(len(lat)), "requests")
		cs.settle()
		reportPercentiles(b, lat)
	})
	// The same without the snapshot (SiteListMaxAge < 0): both lists
	// read on every request, as before the snapshot.
	b.Run("GET-no-snapshot", func(b *testing.B) {
		usrv := httptest.NewServer(New(Deps{Store: st, Dispatcher: disp, Token: token, SiteListMaxAge: -1}))
		defer usrv.Close()
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			body := getFrom(b, usrv, token)
			lat = append(lat, time.Since(t0))
			if i == 0 && countSites(b, body) != sites {
				b.Fatal("wrong number of sites")
			}
		}
		reportPercentiles(b, lat)
	})
	b.Run("store.ListSites", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, err := st.ListSites(ctx); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		reportPercentiles(b, lat)
	})
	b.Run("store.ListSiteStatuses", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			if _, err := st.ListSiteStatuses(ctx); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		reportPercentiles(b, lat)
	})
	// What is left once the store reads are out of the request (e.g.
	// served from memory): merge and encode 1,000 site views.
	b.Run("encode-only", func(b *testing.B) {
		list, err := st.ListSites(ctx)
		if err != nil {
			b.Fatal(err)
		}
		statuses, err := st.ListSiteStatuses(ctx)
		if err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			t0 := time.Now()
			views := make([]domain.SiteView, len(list))
			for k, s := range list {
				views[k] = domain.SiteView{Site: s, Status: statuses[s.UUID]}
			}
			if _, err := json.Marshal(map[string]any{"sites": views}); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		reportPercentiles(b, lat)
	})
}

// getFrom lists the sites; the latency is until the whole body arrived.
func getFrom(b *testing.B, srv *httptest.Server, token string) []byte {
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/sites", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := srv.Client().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET /api/v1/sites = %d %s", resp.StatusCode, body)
	}
	return body
}

// countSites is how many sites a GET /api/v1/sites body lists.
func countSites(b *testing.B, body []byte) int {
	var list struct {
		Sites []json.RawMessage `json:"sites"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		b.Fatal(err)
	}
	return len(list.Sites)
}

// countingStore counts the site list reads the API makes and how many
// are running.
type countingStore struct {
	*store.Store
	reads  atomic.Int64
	active atomic.Int64
}

func (c *countingStore) ListSites(ctx context.Context) ([]domain.Site, error) {
	c.reads.Add(1)
	c.active.Add(1)
	defer c.active.Add(-1)
	return c.Store.ListSites(ctx)
}

func (c *countingStore) ListSiteStatuses(ctx context.Context) (map[string]domain.SiteStatus, error) {
	c.active.Add(1)
	defer c.active.Add(-1)
	return c.Store.ListSiteStatuses(ctx)
}

// settle waits (up to 10 s) until no list read is running, so none is
// left when the store closes.
func (c *countingStore) settle() {
	for end := time.Now().Add(10 * time.Second); c.active.Load() > 0 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
}

// benchStack starts the embedded NATS and store, declares the bus objects
// and registers n sites with a status each.
func benchStack(b *testing.B, n int) (*store.Store, *bus.Infra) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stack := testkit.StartStack(b)
	st := stack.OpenStore(b)
	nc, err := nats.Connect("", stack.NATS.InProcessOption())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	in, err := bus.Ensure(ctx, js, bus.Settings{LeaseTTL: time.Minute, AckWait: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	list := make([]domain.Site, n)
	for i := range list {
		list[i] = domain.Site{UUID: fmt.Sprintf("5a70b0e4-a000-4000-8000-%012d", i), Name: fmt.Sprintf("site-%04d", i),
			Host: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), Port: 22, User: "backup", SSHKeyPath: "/etc/satoru/id_ed25519",
			HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", CreatedAt: now, UpdatedAt: now}
	}
	if _, err := st.InsertSites(ctx, list); err != nil {
		b.Fatal(err)
	}
	for i, s := range list {
		at := now.Add(-time.Duration(i) * time.Minute)
		if err := st.PutSiteStatus(ctx, domain.SiteStatus{SiteUUID: s.UUID,
			Health:     domain.HealthState{Status: domain.HealthSuccess, Message: "3 targets backed up", UpdatedAt: at},
			LastScanAt: &at, LastSuccessAt: &at, LastJobID: fmt.Sprintf("job-%04d", i)}); err != nil {
			b.Fatal(err)
		}
	}
	return st, in
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	b.Helper()
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
