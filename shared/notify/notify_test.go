package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/jobrun"
)

type sink struct {
	mu     sync.Mutex
	bodies []Event
	hits   int
	status int // answer; 0 = 204
}

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits++
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The wire form uses the documented keys.
	var raw map[string]any
	_ = json.Unmarshal(b, &raw)
	for _, k := range []string{"event", "job_id", "site_uuid", "job_type", "status", "error", "at"} {
		if _, ok := raw[k]; !ok {
			http.Error(w, "missing "+k, http.StatusBadRequest)
			return
		}
	}
	s.bodies = append(s.bodies, e)
	if s.status != 0 {
		w.WriteHeader(s.status)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *sink) snapshot() ([]Event, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.bodies...), s.hits
}

func setup(t *testing.T, status int) (*sink, *Jobs, *bytes.Buffer) {
	t.Helper()
	s := &sink{status: status}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	n := &Jobs{
		Webhook: &Webhook{URL: srv.URL + "/hooks/SECRET-TOKEN?token=SECRET-TOKEN", Log: log, Backoff: 10 * time.Millisecond},
		Now:     func() time.Time { return at },
	}
	return s, n, &logs
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func job(id string, typ domain.JobType) domain.Job {
	return domain.Job{ID: id, SiteUUID: "site-1", Type: typ}
}

func TestFailureThenRecovery(t *testing.T) {
	s, n, logs := setup(t, 0)
	ctx := context.Background()

	n.Hook(ctx, job("j1", domain.JobBackup), jobrun.Outcome{Status: domain.StatusFailed, Error: "ssh: connection refused"})
	n.Wait()
	got, _ := s.snapshot()
	if len(got) != 1 {
		t.Fatalf("after a failure the listener got %d events, want 1", len(got))
	}
	want := Event{Event: JobFailed, JobID: "j1", SiteUUID: "site-1", JobType: "backup", Status: "failed",
		Error: "ssh: connection refused", At: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	if got[0] != want {
		t.Errorf("event = %+v, want %+v", got[0], want)
	}

	// Another type of the same site is tracked apart: its success is no recovery.
	n.Hook(ctx, job("j2", domain.JobRetention), jobrun.Outcome{Status: domain.StatusSuccess})
	// A canceled job is neither reported nor remembered.
	n.Hook(ctx, job("j3", domain.JobBackup), jobrun.Outcome{Status: domain.StatusCanceled, Error: jobrun.ErrCanceled.Error()})
	n.Hook(ctx, job("j4", domain.JobBackup), jobrun.Outcome{Status: domain.StatusWarning})
	n.Wait()
	got, _ = s.snapshot()
	if len(got) != 2 || got[1].Event != JobRecovered || got[1].JobID != "j4" || got[1].Status != "warning" {
		t.Fatalf("after failure then warning: events %+v, want a job_recovered for j4", got)
	}

	// Success after success posts nothing.
	n.Hook(ctx, job("j5", domain.JobBackup), jobrun.Outcome{Status: domain.StatusSuccess})
	n.Hook(ctx, job("j6", domain.JobBackup), jobrun.Outcome{Status: domain.StatusSuccess})
	n.Wait()
	if got, hits := s.snapshot(); len(got) != 2 || hits != 2 {
		t.Fatalf("success after success posted: %d events, %d requests", len(got), hits)
	}
	if strings.Contains(logs.String(), "SECRET-TOKEN") {
		t.Errorf("logs show the webhook token:\n%s", logs.String())
	}
}

func TestFirstSuccessIsNoRecovery(t *testing.T) {
	s, n, _ := setup(t, 0)
	n.Hook(context.Background(), job("j1", domain.JobBackup), jobrun.Outcome{Status: domain.StatusSuccess})
	n.Wait()
	if _, hits := s.snapshot(); hits != 0 {
		t.Fatalf("a first success posted %d requests", hits)
	}
}

func TestServerErrorRetriedThenGivenUp(t *testing.T) {
	s, n, logs := setup(t, http.StatusInternalServerError)
	start := time.Now()
	// Hook returns at once: a slow or failing endpoint never holds the job.
	n.Hook(context.Background(), job("j1", domain.JobBackup), jobrun.Outcome{Status: domain.StatusFailed, Error: "boom"})
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("Hook blocked for %s", d)
	}
	n.Wait()
	if _, hits := s.snapshot(); hits != Attempts {
		t.Fatalf("listener got %d requests, want %d tries", hits, Attempts)
	}
	if !strings.Contains(logs.String(), "giving up") || !strings.Contains(logs.String(), "500") {
		t.Errorf("giving up is not logged:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "SECRET-TOKEN") {
		t.Errorf("logs show the webhook token:\n%s", logs.String())
	}
	// Delivery reports failure without panicking or erroring the caller.
	if n.Webhook.Notify(context.Background(), Event{Event: JobFailed}) {
		t.Error("Notify reported delivery against a 500")
	}
}

func TestUnreachableDoesNotLeakToken(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	var logs bytes.Buffer
	w := &Webhook{URL: url + "/hook/SECRET-TOKEN", Log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Backoff: time.Millisecond}
	if w.Notify(context.Background(), Event{Event: JobFailed}) {
		t.Fatal("delivered to a closed port")
	}
	if strings.Contains(logs.String(), "SECRET-TOKEN") || !strings.Contains(logs.String(), "giving up") {
		t.Errorf("logs:\n%s", logs.String())
	}
}

// hookGoroutines counts the goroutines sending an event for Jobs.Hook.
func hookGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "notify.(*Jobs).Hook.func")
}

func TestCloseLetsPendingSendsFinish(t *testing.T) {
	s, n, _ := setup(t, 0)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(200 * time.Millisecond)
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	n.Webhook.URL = slow.URL
	n.Hook(context.Background(), job("j1", domain.JobBackup), jobrun.Outcome{Status: domain.StatusFailed, Error: "boom"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Close(ctx)
	if _, hits := s.snapshot(); hits != 1 {
		t.Fatalf("after Close the listener got %d requests, want the pending one", hits)
	}
	if g := hookGoroutines(); g != 0 {
		t.Errorf("%d send goroutine(s) outlive Close", g)
	}
}

func TestCloseDropsSendsAtTheDeadline(t *testing.T) {
	_, n, logs := setup(t, 0)
	release := make(chan struct{})
	var hits atomic.Int32
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select { // an endpoint that never answers in time
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(stuck.Close)
	t.Cleanup(func() { close(release) })
	n.Webhook.URL = stuck.URL + "/hooks/SECRET-TOKEN"
	// A transport slow to give up after cancellation: a Close that did not
	// wait for the send to return would leave it running.
	n.Webhook.Client = &http.Client{Transport: slowCancel{http.DefaultTransport}}
	n.Hook(context.Background(), job("j1", domain.JobBackup), jobrun.Outcome{Status: domain.StatusFailed, Error: "boom"})
	deadline := time.Now().Add(5 * time.Second)
	for hits.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if hits.Load() == 0 {
		t.Fatal("the send never reached the endpoint")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	n.Close(ctx)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s past its deadline of 100ms", d)
	}
	if g := hookGoroutines(); g != 0 {
		t.Errorf("%d send goroutine(s) outlive Close", g)
	}
	// After Close an event is dropped, with a log, and nothing is sent.
	n.Hook(context.Background(), job("j2", domain.JobBackup), jobrun.Outcome{Status: domain.StatusFailed, Error: "boom"})
	if g := hookGoroutines(); g != 0 || hits.Load() != 1 {
		t.Errorf("a Hook after Close started %d send(s); listener hits %d", g, hits.Load())
	}
	for _, want := range []string{"dropping them", "webhook not delivered; giving up", "webhook event dropped: shutting down"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "SECRET-TOKEN") {
		t.Errorf("logs show the webhook token:\n%s", logs.String())
	}
}

type slowCancel struct{ next http.RoundTripper }

func (s slowCancel) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(r)
	if r.Context().Err() != nil {
		time.Sleep(300 * time.Millisecond)
	}
	return resp, err
}
