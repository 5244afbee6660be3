package node

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/testkit"
)

// sseFrame is one block of an event stream.
type sseFrame struct {
	id      uint64
	event   string
	data    string
	retry   string
	comment string
}

// sseStream reads GET /api/v1/events/stream over real HTTP.
type sseStream struct {
	t      *testing.T
	resp   *http.Response
	frames chan sseFrame
}

// openSSE opens the stream with the token (and Last-Event-ID when
// lastID is not empty); it must answer 200 text/event-stream.
func openSSE(t *testing.T, c *client, query, lastID string) *sseStream {
	t.Helper()
	req, err := http.NewRequest("GET", c.base+"/api/v1/events/stream"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("open stream%s: %d %s %s", query, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	s := &sseStream{t: t, resp: resp, frames: make(chan sseFrame, 1000)}
	go s.read()
	return s
}

func (s *sseStream) read() {
	defer close(s.frames)
	br := bufio.NewReader(s.resp.Body)
	var f sseFrame
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimSuffix(line, "\n")
		field, value, _ := strings.Cut(line, ": ")
		switch field {
		case "":
			if line == "" {
				s.frames <- f
				f = sseFrame{}
				continue
			}
			f.comment = value // ": ping"
		case "id":
			f.id, _ = strconv.ParseUint(value, 10, 64)
		case "event":
			f.event = value
		case "data":
			f.data = value
		case "retry":
			f.retry = value
		}
	}
}

// next returns the next frame, failing at the deadline or stream end.
func (s *sseStream) next(deadline time.Time) sseFrame {
	s.t.Helper()
	select {
	case f, ok := <-s.frames:
		if !ok {
			s.t.Fatal("the event stream ended")
		}
		return f
	case <-time.After(time.Until(deadline)):
		s.t.Fatal("no event before the deadline")
	}
	return sseFrame{}
}

type streamedStep struct {
	id uint64
	ev events.StepEvent
}

// untilTerminal reads step events of job until the one carrying a
// terminal status; ids must increase.
func (s *sseStream) untilTerminal(job string, within time.Duration) []streamedStep {
	s.t.Helper()
	deadline := time.Now().Add(within)
	var out []streamedStep
	var last uint64
	for {
		f := s.next(deadline)
		if f.event != "step" {
			continue // the retry line, pings
		}
		if f.id <= last {
			s.t.Fatalf("event id %d after %d", f.id, last)
		}
		last = f.id
		var ev events.StepEvent
		if err := json.Unmarshal([]byte(f.data), &ev); err != nil {
			s.t.Fatalf("event %d data %q: %v", f.id, f.data, err)
		}
		if ev.JobID != job {
			continue
		}
		out = append(out, streamedStep{id: f.id, ev: ev})
		if domain.JobStatus(ev.Status).Terminal() {
			return out
		}
	}
}

func TestEventStreamThroughAPI(t *testing.T) {
	edge := testkit.StartEdgeHost(t)
	n, stop := startNode(t, loadConfig(t, testEnv(t.TempDir())), All)
	c := newClient(t, n)
	dir := filepath.Join(edge.Dir, "www")
	mkdir(t, dir)
	site := c.registerSite(edge, siteOpts{name: "edge-stream", targets: []map[string]any{{"mode": "directory", "path": dir}}})

	// A live stream for the site, opened before the job exists.
	live := openSSE(t, c, "?site_uuid="+site, "")
	if f := live.next(time.Now().Add(5 * time.Second)); f.retry != "2000" {
		t.Fatalf("first frame %+v, want retry: 2000", f)
	}
	id := c.startJob(site, "preflight")
	got := live.untilTerminal(id, 60*time.Second)
	final := got[len(got)-1].ev
	for i, s := range got {
		if s.ev.SiteUUID != site || s.ev.JobType != "preflight" || s.ev.V != events.StepEventV1 {
			t.Errorf("event %d: %+v", s.id, s.ev)
		}
		if i > 0 && s.ev.Event.Seq <= got[i-1].ev.Event.Seq {
			t.Errorf("job event seq %d after %d", s.ev.Event.Seq, got[i-1].ev.Event.Seq)
		}
	}
	// The final event is published just before the job document is
	// finished: poll until it is terminal, then compare.
	j := c.waitJob(id, 30*time.Second)
	if string(j.Status) != final.Status {
		t.Fatalf("last streamed status %q, job %s is %q", final.Status, id, j.Status)
	}
	if j.Status != domain.StatusSuccess {
		t.Errorf("preflight %s: %s (%s)", id, j.Status, j.Error)
	}
	// The stream carried every recorded event of the job.
	stored := c.events(id)
	if len(stored) != len(got) {
		t.Errorf("%d events streamed, %d stored:\n%s", len(got), len(stored), dumpEvents(stored))
	}
	for i := range min(len(stored), len(got)) {
		if stored[i].Seq != got[i].ev.Event.Seq || stored[i].Step != got[i].ev.Event.Step {
			t.Errorf("event %d: streamed #%d %s, stored #%d %s", i, got[i].ev.Event.Seq, got[i].ev.Event.Step, stored[i].Seq, stored[i].Step)
		}
	}

	t.Run("a stream opened after the job replays it", func(t *testing.T) {
		replay := openSSE(t, c.with(t), "?job_id="+id, "")
		again := replay.untilTerminal(id, 10*time.Second)
		if len(again) != len(got) {
			t.Fatalf("replayed %d events, %d were streamed live", len(again), len(got))
		}
		for i := range again {
			if again[i].id != got[i].id || again[i].ev.Event.Seq != got[i].ev.Event.Seq {
				t.Errorf("replayed event %d: id %d seq %d, live id %d seq %d", i, again[i].id, again[i].ev.Event.Seq, got[i].id, got[i].ev.Event.Seq)
			}
		}
		// Last-Event-ID resumes after the given event.
		resumed := openSSE(t, c.with(t), "?site_uuid="+site+"&job_id="+id, strconv.FormatUint(got[0].id, 10))
		rest := resumed.untilTerminal(id, 10*time.Second)
		if len(rest) != len(got)-1 || rest[0].id != got[1].id {
			t.Errorf("resumed after id %d: %d events starting at %d, want %d starting at %d", got[0].id, len(rest), rest[0].id, len(got)-1, got[1].id)
		}
	})

	t.Run("token and filters are checked", func(t *testing.T) {
		resp, err := http.Get(c.base + "/api/v1/events/stream?job_id=" + id)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("without token: %d, want 401", resp.StatusCode)
		}
		var e apiError
		if code := c.with(t).do("GET", "/api/v1/events/stream?site_uuid=a.b", nil, &e); code != http.StatusBadRequest || e.Error.Code != "invalid_argument" || !strings.Contains(e.Error.Message, "site_uuid") {
			t.Errorf("bad site_uuid: %d %+v, want 400 naming site_uuid", code, e)
		}
	})

	t.Run("schedules and the OpenAPI document", func(t *testing.T) {
		var out struct {
			Schedules []map[string]any `json:"schedules"`
		}
		if code := c.with(t).do("GET", "/api/v1/schedules", nil, &out); code != http.StatusOK || out.Schedules == nil {
			t.Errorf("schedules: %d %+v, want 200 with a list", code, out)
		}
		for _, sc := range out.Schedules {
			if sc["id"] == nil || sc["kind"] == nil || sc["next_run_at"] == nil {
				t.Errorf("schedule without id, kind or next_run_at: %v", sc)
			}
		}
		if code := c.with(t).do("GET", "/api/v1/schedules?site_uuid="+site, nil, &out); code != http.StatusOK {
			t.Errorf("schedules of a site: %d", code)
		}
		resp, err := http.Get(c.base + "/api/v1/openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			OpenAPI string                    `json:"openapi"`
			Paths   map[string]map[string]any `json:"paths"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("openapi.json without token: %d %v", resp.StatusCode, err)
		}
		if !strings.HasPrefix(doc.OpenAPI, "3.") || doc.Paths["/api/v1/events/stream"]["get"] == nil {
			t.Errorf("document %s without the stream route", doc.OpenAPI)
		}
	})

	// Stopping the node must not wait for open streams (the graceful
	// shutdown would otherwise hang until its 15 s timeout).
	open := openSSE(t, c, "", "")
	open.next(time.Now().Add(5 * time.Second))
	start := time.Now()
	stop()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stopping the node took %s with a stream open", took)
	}
	deadline := time.After(5 * time.Second)
	for ended := false; !ended; {
		select {
		case _, ok := <-open.frames:
			ended = !ok
		case <-deadline:
			t.Fatal("the stream is still open after the node stopped")
		}
	}
}
