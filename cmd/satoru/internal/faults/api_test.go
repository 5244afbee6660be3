package faults

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

// api is a client of one satoru process's REST API.
type api struct {
	t     testing.TB
	base  string
	token string
}

// do sends a request and decodes a JSON answer into out; it fails the
// test when the request cannot be made, not on an error status.
func (a *api) do(method, path string, body, out any) int {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		buf, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
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

// site is what a scenario registers: one directory target on an edge.
type site struct {
	name     string
	edge     *testkit.EdgeHost
	path     string // the directory target on the edge
	bwLimit  int    // bandwidth_limit_kbps (KiB/s), 0 = none
	hostPort int    // another port to reach the edge through, 0 = its own
}

// registerSite registers s with its pinned host key and returns its uuid.
func (a *api) registerSite(s site) string {
	a.t.Helper()
	port := s.edge.Port
	if s.hostPort != 0 {
		port = s.hostPort
	}
	body := map[string]any{
		"name": s.name, "host": s.edge.Host, "port": port, "user": s.edge.User,
		"ssh_key_path": s.edge.KeyPath, "host_key": s.edge.HostKeyLine,
		"targets": []map[string]any{{"mode": "directory", "path": s.path}},
	}
	if s.bwLimit > 0 {
		body["bandwidth_limit_kbps"] = s.bwLimit
	}
	var out struct {
		UUID string `json:"site_uuid"`
	}
	if code := a.do("POST", "/api/v1/sites", body, &out); code != http.StatusCreated || out.UUID == "" {
		a.t.Fatalf("register site %s: status %d", s.name, code)
	}
	return out.UUID
}

// startJob queues a job of a site and returns its id.
func (a *api) startJob(siteUUID, typ string) string {
	a.t.Helper()
	var out struct {
		JobID string `json:"job_id"`
	}
	if code := a.do("POST", "/api/v1/sites/"+siteUUID+"/jobs", map[string]string{"type": typ}, &out); code != http.StatusAccepted || out.JobID == "" {
		a.t.Fatalf("start %s job of site %s: status %d", typ, siteUUID, code)
	}
	return out.JobID
}

// startSync queues an offsite sync and returns its job id.
func (a *api) startSync() string {
	a.t.Helper()
	var out struct {
		JobID string `json:"job_id"`
	}
	if code := a.do("POST", "/api/v1/sync", nil, &out); code != http.StatusAccepted || out.JobID == "" {
		a.t.Fatalf("POST /api/v1/sync: status %d", code)
	}
	return out.JobID
}

func (a *api) job(id string) domain.Job {
	a.t.Helper()
	var j domain.Job
	if code := a.do("GET", "/api/v1/jobs/"+id, nil, &j); code != http.StatusOK {
		a.t.Fatalf("GET job %s: status %d", id, code)
	}
	return j
}

// waitJob polls until the job is terminal; ok is false when it is not
// within the time given (the last state read is returned).
func (a *api) waitJob(id string, within time.Duration) (domain.Job, bool) {
	a.t.Helper()
	deadline := time.Now().Add(within)
	for {
		j := a.job(id)
		if j.Status.Terminal() {
			return j, true
		}
		if time.Now().After(deadline) {
			return j, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// mustSucceed waits for the job and fails the test, with its events,
// unless it ends in success.
func (a *api) mustSucceed(id, what string, within time.Duration) domain.Job {
	a.t.Helper()
	j, ok := a.waitJob(id, within)
	if !ok {
		a.t.Fatalf("%s: job %s still %s after %s (attempts %d, error %q)\nevents:\n%s", what, id, j.Status, within, j.Attempts, j.Error, a.dumpEvents(id))
	}
	if j.Status != domain.StatusSuccess {
		a.t.Fatalf("%s: job %s ended %s after %d attempt(s), want success; error %q\nevents:\n%s", what, id, j.Status, j.Attempts, j.Error, a.dumpEvents(id))
	}
	return j
}

func (a *api) events(id string) []domain.JobEvent {
	a.t.Helper()
	var out struct {
		Events []domain.JobEvent `json:"events"`
	}
	if code := a.do("GET", "/api/v1/jobs/"+id+"/events", nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET events of %s: status %d", id, code)
	}
	return out.Events
}

func (a *api) dumpEvents(id string) string {
	a.t.Helper()
	var b strings.Builder
	for _, e := range a.events(id) {
		msg := e.Message
		if len(msg) > 600 {
			msg = msg[:600] + "..."
		}
		fmt.Fprintf(&b, "  #%d %s %s %s %s %s\n", e.Seq, e.TS.Format("15:04:05.000"), e.Step, e.Level, e.TargetHash, msg)
	}
	return b.String()
}

// jobs lists jobs (newest first) matching the query, e.g. "status=running".
func (a *api) jobs(query string) []domain.Job {
	a.t.Helper()
	var out struct {
		Jobs []domain.Job `json:"jobs"`
	}
	if code := a.do("GET", "/api/v1/jobs?limit=500&"+query, nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET jobs?%s: status %d", query, code)
	}
	return out.Jobs
}

// sites lists the registered sites.
func (a *api) sites() []domain.SiteView {
	a.t.Helper()
	var out struct {
		Sites []domain.SiteView `json:"sites"`
	}
	if code := a.do("GET", "/api/v1/sites", nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET sites: status %d", code)
	}
	return out.Sites
}

// targets lists a site's targets.
func (a *api) targets(siteUUID string) []domain.Target {
	a.t.Helper()
	var out struct {
		Targets []domain.Target `json:"targets"`
	}
	if code := a.do("GET", "/api/v1/sites/"+siteUUID+"/targets", nil, &out); code != http.StatusOK {
		a.t.Fatalf("GET targets of %s: status %d", siteUUID, code)
	}
	return out.Targets
}

// waitNoRunning waits until no job is `running` (or `queued`, which a
// crashed job's redelivery passes through), at most until deadline, and
// fails the test naming the jobs still open.
func (a *api) waitNoRunning(deadline time.Time) {
	a.t.Helper()
	for {
		open := append(a.jobs("status=running"), a.jobs("status=queued")...)
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
					j.Type, j.ID, j.SiteUUID, j.Status, j.Attempts, j.Worker, hb, j.Error, a.dumpEvents(j.ID))
			}
			a.t.Fatalf("jobs still open when everything should have settled:%s", b.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// streamEvents reads a job's events through GET /api/v1/events/stream
// (SSE), which replays them from the SATORU_EVENTS stream, until want
// events arrived or within passed.
func (a *api) streamEvents(jobID string, want int, within time.Duration) []domain.JobEvent {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", a.base+"/api/v1/events/stream?job_id="+url.QueryEscape(jobID), nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
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
