package node

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/notify"
	"github.com/satoru/satoru/shared/testkit"
)

// TestWebhookOnFailedJob: with webhook_url set, a preflight that fails
// (closed port, one attempt) is POSTed to the listener as job_failed.
func TestWebhookOnFailedJob(t *testing.T) {
	var (
		mu     sync.Mutex
		got    []notify.Event
		badReq []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPost || r.URL.Path != "/hook/e2e-token" || r.Header.Get("Content-Type") != "application/json" {
			badReq = append(badReq, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		var e notify.Event
		if err := json.Unmarshal(b, &e); err != nil {
			badReq = append(badReq, "body "+string(b))
		}
		got = append(got, e)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()

	edge := testkit.StartEdgeHost(t)
	cfg := loadConfig(t, testEnv(t.TempDir(), "SATORU_JOB_MAX_ATTEMPTS=1", "SATORU_WEBHOOK_URL="+srv.URL+"/hook/e2e-token"))
	n, _ := startNode(t, cfg, All)
	c := newClient(t, n)

	site := c.registerSite(edge, siteOpts{name: "edge-webhook", port: testkit.FreePort(t)})
	id := c.startJob(site, "preflight")
	j := c.waitJob(id, 30*time.Second)
	if j.Status != domain.StatusFailed {
		t.Fatalf("preflight against a closed port: %s, want failed", j.Status)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A first success of another site is no recovery: nothing more is posted.
	ok := c.registerSite(edge, siteOpts{name: "edge-webhook-ok"})
	if j := c.waitJob(c.startJob(ok, "preflight"), 30*time.Second); j.Status != domain.StatusSuccess {
		t.Fatalf("preflight of a reachable site: %s (%s)", j.Status, j.Error)
	}
	time.Sleep(300 * time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	if len(badReq) > 0 {
		t.Errorf("malformed webhook requests: %q", badReq)
	}
	if len(got) != 1 {
		t.Fatalf("listener got %d events, want exactly one job_failed: %+v", len(got), got)
	}
	e := got[0]
	if e.Event != notify.JobFailed || e.JobID != id || e.SiteUUID != site || e.JobType != "preflight" ||
		e.Status != "failed" || !strings.Contains(strings.ToLower(e.Error), "refused") || e.At.IsZero() {
		t.Errorf("event = %+v, want job_failed for preflight %s of site %s saying refused", e, id, site)
	}
}
