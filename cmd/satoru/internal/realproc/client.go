package realproc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/testkit"
)

var httpClient = &http.Client{Timeout: 30 * time.Second}

// Client is a client of one satoru process's REST API. Its methods fail
// the test when a request cannot be made or answers other than expected.
type Client struct {
	t     testing.TB
	Base  string // http://host:port
	Token string
}

// NewClient is a client of the API at base (http://host:port) with token.
func NewClient(t testing.TB, base, token string) *Client {
	return &Client{t: t, Base: base, Token: token}
}

// Do sends a request and decodes a JSON answer into out; it fails the
// test when the request cannot be made, not on an error status.
func (a *Client) Do(method, path string, body, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, a.Base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: read answer: %v", method, path, err)
	}
	if out != nil && len(data) > 0 && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			a.t.Fatalf("%s %s: decode %q: %v", method, path, data, err)
		}
	}
	if resp.StatusCode >= 300 {
		a.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
	}
	return resp.StatusCode
}

// Site is what a test registers: one directory target on an edge.
type Site struct {
	Name     string
	Edge     *testkit.EdgeHost
	Path     string // the directory target on the edge
	BWLimit  int    // bandwidth_limit_kbps (KiB/s), 0 = none
	HostPort int    // another port to reach the edge through, 0 = its own
}

// RegisterSite registers s with its pinned host key and returns its uuid.
func (a *Client) RegisterSite(s Site) string {
	a.t.Helper()
	port := s.Edge.Port
	if s.HostPort != 0 {
		port = s.HostPort
	}
	body := map[string]any{
		"name": s.Name, "host": s.Edge.Host, "port": port, "user": s.Edge.User,
		"ssh_key_path": s.Edge.KeyPath, "host_key": s.Edge.HostKeyLine,
		"targets": []map[string]any{{"mode": "directory", "path": s.Path}},
	}
	if s.BWLimit > 0 {
		body["bandwidth_limit_kbps"] = s.BWLimit
	}
	var out struct {
		UUID string `json:"site_uuid"`
	}
	if code := a.Do("POST", "/api/v1/sites", body, &out); code != http.StatusCreated || out.UUID == "" {
		a.t.Fatalf("register site %s: status %d", s.Name, code)
	}
	return out.UUID
}

// StartJob queues a job of a site and returns its id.
func (a *Client) StartJob(siteUUID, typ string) string {
	a.t.Helper()
	var out struct {
		JobID string `json:"job_id"`
	}
	if code := a.Do("POST", "/api/v1/sites/"+siteUUID+"/jobs", map[string]string{"type": typ}, &out); code != http.StatusAccepted || out.JobID == "" {
		a.t.Fatalf("start %s job of site %s: status %d", typ, siteUUID, code)
	}
	return out.JobID
}

// TryStartJob is StartJob without the test's FailNow, for goroutines.
func (a *Client) TryStartJob(siteUUID, typ string) (string, error) {
	body, _ := json.Marshal(map[string]string{"type": typ})
	req, err := http.NewRequest("POST", a.Base+"/api/v1/sites/"+siteUUID+"/jobs", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST %s job of %s: %w", typ, siteUUID, err)
	}
	defer resp.Body.Close()
	var out struct {
		JobID string `json:"job_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted || out.JobID == "" {
		return "", fmt.Errorf("POST %s job of %s: status %d, %v", typ, siteUUID, resp.StatusCode, err)
	}
	return out.JobID, nil
}

// StartSync queues an offsite sync and returns its job id.
func (a *Client) StartSync() string {
	a.t.Helper()
	var out struct {
		JobID string `json:"job_id"`
	}
	if code := a.Do("POST", "/api/v1/sync", nil, &out); code != http.StatusAccepted || out.JobID == "" {
		a.t.Fatalf("POST /api/v1/sync: status %d", code)
	}
	return out.JobID
}

// Job reads a job (GET /api/v1/jobs/{id}).
func (a *Client) Job(id string) domain.Job {
	a.t.Helper()
	var j domain.Job
	if code := a.Do("GET", "/api/v1/jobs/"+id, nil, &j); code != http.StatusOK {
		a.t.Fatalf("GET job %s: status %d", id, code)
	}
	return j
}

// WaitJob polls until the job is terminal; ok is false when it is not
// within the time given (the last state read is returned).
func (a *Client) WaitJob(id string, within time.Duration) (domain.Job, bool) {
	a.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := a.Job(id)
		if j.Status.Terminal() {
			return j, true
		}
		if time.Now().After(deadline) {
			return j, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// MustSucceed waits for the job and fails the test, with its events,
// unless it ends in success.
func (a *Client) MustSucceed(id, what string, within time.Duration) domain.Job {
	a.t.Helper()
	j, ok := a.WaitJob(id, within)
	if !ok {
		a.t.Fatalf("%s: job %s still %s after %s (attempts %d, error %q)\nevents:\n%s", what, id, j.Status, within, j.Attempts, j.Error, a.DumpEvents(id))
	}
	if j.Status != domain.StatusSuccess {
		a.t.Fatalf("%s: job %s ended %s after %d attempt(s), want success; error %q\nevents:\n%s", what, id, j.Status, j.Attempts, j.Error, a.DumpEvents(id))
	}
	return j
}

// Events reads a job's step events (GET /api/v1/jobs/{id}/events).
func (a *Client) Events(id string) []domain.JobEvent {
	a.t.Helper()
	var out struct {
		Events []domain.JobEvent `json:"events"`
	}
	if code := a.Do("GET", "/api/v1/jobs/"+id+"/events", nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET events of %s: status %d", id, code)
	}
	return out.Events
}

// DumpEvents is a job's events, one line each, for a failure message.
func (a *Client) DumpEvents(id string) string {
	a.t.Helper()
	var b strings.Builder
	for _, e := range a.Events(id) {
		msg := e.Message
		if len(msg) > 600 {
			msg = msg[:600] + "..."
		}
		fmt.Fprintf(&b, "  #%d %s %s %s %s %s\n", e.Seq, e.TS.Format("15:04:05.000"), e.Step, e.Level, e.TargetHash, msg)
	}
	return b.String()
}

// Jobs lists jobs (newest first) matching the query, e.g. "status=running".
func (a *Client) Jobs(query string) []domain.Job {
	a.t.Helper()
	var out struct {
		Jobs []domain.Job `json:"jobs"`
	}
	if code := a.Do("GET", "/api/v1/jobs?limit=500&"+query, nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET jobs?%s: status %d", query, code)
	}
	return out.Jobs
}

// Sites lists the registered sites.
func (a *Client) Sites() []domain.SiteView {
	a.t.Helper()
	var out struct {
		Sites []domain.SiteView `json:"sites"`
	}
	if code := a.Do("GET", "/api/v1/sites", nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET sites: status %d", code)
	}
	return out.Sites
}

// Targets lists a site's targets.
func (a *Client) Targets(siteUUID string) []domain.Target {
	a.t.Helper()
	var out struct {
		Targets []domain.Target `json:"targets"`
	}
	if code := a.Do("GET", "/api/v1/sites/"+siteUUID+"/targets", nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET targets of %s: status %d", siteUUID, code)
	}
	return out.Targets
}

// WaitNoRunning waits until no job is `running` (or `queued`, which a
// crashed job's redelivery passes through), at most until deadline, and
// fails the test naming the jobs still open.
func (a *Client) WaitNoRunning(deadline time.Time) {
	a.t.Helper()
	for {
		open := append(a.Jobs("status=running"), a.Jobs("status=queued")...)
		if len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, j := range open {
				hb := "never"
				if j.HeartbeatAt != nil {
					hb = j.HeartbeatAt.Format(time.RFC3339)
				}
				fmt.Fprintf(&b, "\n  %s %s site %s: %s, attempts %d, worker %q, heartbeat %s, error %q\n%s",
					j.Type, j.ID, j.SiteUUID, j.Status, j.Attempts, j.Worker, hb, j.Error, a.DumpEvents(j.ID))
			}
			a.t.Fatalf("jobs still open when everything should have settled:%s", b.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// StreamEvents reads a job's events through GET /api/v1/events/stream
// (SSE), which replays them from the SATORU_EVENTS stream, until want
// events arrived or within passed.
func (a *Client) StreamEvents(jobID string, want int, within time.Duration) []domain.JobEvent {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", a.Base+"/api/v1/events/stream?job_id="+url.QueryEscape(jobID), nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatalf("GET events/stream of %s: %v", jobID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		a.t.Fatalf("GET events/stream of %s: %d %s", jobID, resp.StatusCode, b)
	}
	var got []domain.JobEvent
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() && len(got) < want {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev struct {
			Event domain.JobEvent `json:"event"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			a.t.Fatalf("events/stream of %s: decode %q: %v", jobID, data, err)
		}
		got = append(got, ev.Event)
	}
	return got
}
