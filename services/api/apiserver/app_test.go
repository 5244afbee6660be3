package apiserver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/restic"
	"github.com/satoru/satoru/shared/store"
)

// The real implementations satisfy the interfaces.
var (
	_ Store       = (*store.Store)(nil)
	_ JobFinisher = (*store.Store)(nil)
	_ Dispatcher  = (*bus.Infra)(nil)
	_ Repository  = restic.Repo{}
)

// nopStore knows no site; enough to see that New wires the routes.
type nopStore struct{ Store }

func (nopStore) ListSites(context.Context) ([]domain.Site, error) { return nil, nil }
func (nopStore) ListSiteStatuses(context.Context) (map[string]domain.SiteStatus, error) {
	return nil, nil
}
func (nopStore) GetSite(context.Context, string) (domain.Site, error) {
	return domain.Site{}, store.ErrNotFound
}

type nopDispatcher struct{}

func (nopDispatcher) Publish(context.Context, events.JobRequest) error { return nil }
func (nopDispatcher) RequestCancel(context.Context, string) error      { return nil }

func TestServeAndShutdown(t *testing.T) {
	slow := make(chan struct{})
	h := New(Deps{Store: nopStore{}, Dispatcher: nopDispatcher{}, Token: "t",
		Ready: []Checker{CheckFunc("store", func(context.Context) error { return nil })}})
	h.GET("/slow", func(c echoContext) error {
		close(slow)
		time.Sleep(300 * time.Millisecond)
		return c.String(http.StatusOK, "done")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, ln, h) }()
	base := "http://" + ln.Addr().String()

	get := func(path string, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz", ""); code != 200 || !strings.Contains(body, `"name":"store"`) {
		t.Errorf("readyz = %d %s", code, body)
	}
	if code, _ := get("/api/v1/sites", ""); code != 401 {
		t.Errorf("no token = %d", code)
	}
	if code, body := get("/api/v1/sites", "t"); code != 200 || strings.TrimSpace(body) != `{"sites":[]}` {
		t.Errorf("sites = %d %s", code, body)
	}

	// A request in flight when the context ends still gets its answer.
	slowDone := make(chan string, 1)
	go func() {
		_, body := get("/slow", "t")
		slowDone <- body
	}()
	<-slow
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after the context ended")
	}
	if body := <-slowDone; body != "done" {
		t.Errorf("in-flight request got %q", body)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Errorf("still listening after shutdown")
	}
}

func TestServeReportsListenerErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	err = Serve(context.Background(), ln, http.NotFoundHandler())
	if err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve on a closed listener = %v", err)
	}
}

func TestNewDefaultsToUUIDs(t *testing.T) {
	var published events.JobRequest
	st := &oneSiteStore{}
	h := New(Deps{Store: st, Dispatcher: recordDispatcher{&published}, Token: "t"})
	req, _ := http.NewRequest("POST", "/api/v1/sites/s1/jobs", strings.NewReader(`{"type":"preflight"}`))
	req.Header.Set("Authorization", "Bearer t")
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("create job = %d %s", rec.Code, rec.Body)
	}
	if _, err := uuid.Parse(st.job.ID); err != nil || published.JobID != st.job.ID {
		t.Errorf("job id %q is not a uuid (published %q)", st.job.ID, published.JobID)
	}
	if st.job.CreatedAt.IsZero() || time.Since(st.job.CreatedAt) > time.Minute {
		t.Errorf("created_at = %v, want now", st.job.CreatedAt)
	}
}
