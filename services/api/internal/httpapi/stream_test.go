package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/store"
)

func TestParseStreamQuery(t *testing.T) {
	for _, tc := range []struct {
		name   string
		query  string
		lastID string
		want   bus.EventFilter
		errMsg string
	}{
		{name: "nothing", query: ""},
		{name: "site and job", query: "site_uuid=s-1&job_id=j_2", want: bus.EventFilter{SiteUUID: "s-1", JobID: "j_2"}},
		{name: "repository jobs", query: "site_uuid=_repo", want: bus.EventFilter{SiteUUID: "_repo"}},
		{name: "resume", query: "job_id=j", lastID: "42", want: bus.EventFilter{JobID: "j", AfterSeq: 42}},
		{name: "empty site", query: "site_uuid=", errMsg: "site_uuid: must not be empty"},
		{name: "dot", query: "site_uuid=a.b", errMsg: "site_uuid: must not contain"},
		{name: "star", query: "job_id=*", errMsg: "job_id: must not contain"},
		{name: "gt", query: "job_id=%3E", errMsg: "job_id: must not contain"},
		{name: "space", query: "job_id=a%20b", errMsg: "job_id: must not contain"},
		{name: "twice", query: "job_id=a&job_id=b", errMsg: "job_id: give it at most once"},
		{name: "bad last id", lastID: "abc", errMsg: "Last-Event-ID: must be"},
		{name: "negative last id", lastID: "-1", errMsg: "Last-Event-ID: must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got, verr := ParseStreamQuery(q, tc.lastID)
			if tc.errMsg != "" {
				if verr == nil || verr.Status != http.StatusBadRequest || !strings.Contains(verr.Message, tc.errMsg) {
					t.Fatalf("err = %v, want 400 containing %q", verr, tc.errMsg)
				}
				return
			}
			if verr != nil {
				t.Fatal(verr)
			}
			if got != tc.want {
				t.Errorf("filter = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestFormatStepEvent(t *testing.T) {
	ev := bus.StreamedEvent{Seq: 7, Event: events.StepEvent{V: 1, JobID: "j", SiteUUID: "s", JobType: "backup", Status: "running",
		Event: domain.JobEvent{Seq: 3, TS: testNow, Step: "pull", Level: "info", Message: "line one\nline two"}}}
	b, err := FormatStepEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) != 5 || lines[0] != "id: 7" || lines[1] != "event: step" || !strings.HasPrefix(lines[2], "data: {") || lines[3] != "" || lines[4] != "" {
		t.Fatalf("frame = %q", b)
	}
	var back events.StepEvent
	if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &back); err != nil || back.Event.Message != "line one\nline two" {
		t.Fatalf("data = %q (%v)", lines[2], err)
	}
}

// fakeEvents is an EventSource whose feeds the test fills by hand.
type fakeEvents struct {
	mu      sync.Mutex
	err     error
	filters []bus.EventFilter
	feeds   []*fakeFeed
	opened  chan *fakeFeed
}

func newFakeEvents() *fakeEvents { return &fakeEvents{opened: make(chan *fakeFeed, 10)} }

func (f *fakeEvents) FollowEvents(_ context.Context, flt bus.EventFilter) (bus.EventFeed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	flt.Log = nil
	f.filters = append(f.filters, flt)
	fd := &fakeFeed{events: make(chan bus.StreamedEvent), errs: make(chan error, 1), closed: make(chan struct{})}
	f.feeds = append(f.feeds, fd)
	f.opened <- fd
	return fd, nil
}

type fakeFeed struct {
	events chan bus.StreamedEvent
	errs   chan error
	closed chan struct{}
	once   sync.Once
}

func (f *fakeFeed) Next(ctx context.Context) (bus.StreamedEvent, error) {
	select {
	case ev := <-f.events:
		return ev, nil
	case err := <-f.errs:
		return bus.StreamedEvent{}, err
	case <-ctx.Done():
		return bus.StreamedEvent{}, ctx.Err()
	case <-f.closed:
		return bus.StreamedEvent{}, bus.ErrFeedClosed
	}
}

func (f *fakeFeed) Close() { f.once.Do(func() { close(f.closed) }) }

// send hands the handler one event, failing if it does not take it.
func (f *fakeFeed) send(t *testing.T, ev bus.StreamedEvent) {
	t.Helper()
	select {
	case f.events <- ev:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler did not take the event")
	}
}

func (f *fakeFeed) waitClosed(t *testing.T, why string) {
	t.Helper()
	select {
	case <-f.closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("feed not closed 5s after %s", why)
	}
}

// streamServer serves the harness's API on a real listener (a server
// like app.Serve's: request contexts outlive the serve context, and a
// short ReadTimeout and WriteTimeout a stream must survive).
type streamServer struct {
	h      *harness
	src    *fakeEvents
	srv    *http.Server
	base   string
	cancel context.CancelFunc // ends Deps.Context
	logs   *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startStreamServer(t *testing.T, opts ...func(*Deps)) *streamServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ss := &streamServer{src: newFakeEvents(), cancel: cancel, logs: &syncBuf{}}
	ss.h = newHarness(t, append([]func(*Deps){func(d *Deps) {
		d.Context = ctx
		d.Events = ss.src
		d.StreamPing = 200 * time.Millisecond
		d.Log = newDebugLogger(ss.logs)
	}}, opts...)...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ss.srv = &http.Server{
		Handler:      ss.h.e,
		ReadTimeout:  300 * time.Millisecond,
		WriteTimeout: 300 * time.Millisecond,
		BaseContext:  func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	go func() { _ = ss.srv.Serve(ln) }()
	t.Cleanup(func() { _ = ss.srv.Close() })
	ss.base = "http://" + ln.Addr().String()
	return ss
}

// sseClient reads a stream's frames (blocks separated by a blank line).
type sseClient struct {
	resp   *http.Response
	frames chan string
}

func (ss *streamServer) open(t *testing.T, query string, header map[string]string) *sseClient {
	t.Helper()
	req, err := http.NewRequest("GET", ss.base+"/api/v1/events/stream"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	c := &sseClient{resp: resp, frames: make(chan string, 100)}
	go func() {
		defer close(c.frames)
		br := bufio.NewReader(resp.Body)
		var frame strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if line == "\n" {
				c.frames <- frame.String()
				frame.Reset()
				continue
			}
			frame.WriteString(line)
		}
	}()
	return c
}

func (c *sseClient) next(t *testing.T) string {
	t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok {
			t.Fatal("the stream ended")
		}
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5s")
	}
	return ""
}

// waitEnd waits for the stream to end.
func (c *sseClient) waitEnd(t *testing.T, why string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-c.frames:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("the stream is still open 5s after %s", why)
		}
	}
}

func (f *fakeEvents) waitOpened(t *testing.T) *fakeFeed {
	t.Helper()
	select {
	case fd := <-f.opened:
		return fd
	case <-time.After(5 * time.Second):
		t.Fatal("no feed opened")
	}
	return nil
}

func stepEv(seq uint64, job string, n int, status string) bus.StreamedEvent {
	return bus.StreamedEvent{Seq: seq, Event: events.StepEvent{V: 1, JobID: job, SiteUUID: "s1", JobType: "preflight", Status: status,
		Event: domain.JobEvent{Seq: n, TS: testNow, Step: "step", Level: "info", Message: "m"}}}
}

func TestEventStream(t *testing.T) {
	ss := startStreamServer(t)
	c := ss.open(t, "?site_uuid=s1&job_id=j1", map[string]string{"Last-Event-ID": "5"})
	if c.resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", c.resp.StatusCode)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := c.resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if f := c.next(t); f != "retry: 2000\n" {
		t.Fatalf("first frame %q, want the retry delay", f)
	}
	fd := ss.src.waitOpened(t)
	if got, want := ss.src.filters[0], (bus.EventFilter{SiteUUID: "s1", JobID: "j1", AfterSeq: 5}); got != want {
		t.Errorf("filter %+v, want %+v", got, want)
	}

	// Each event is flushed at once, before the next is available.
	for i, status := range []string{"running", "success"} {
		fd.send(t, stepEv(uint64(6+i), "j1", i+1, status))
		f := c.next(t)
		lines := strings.Split(strings.TrimSuffix(f, "\n"), "\n")
		if len(lines) != 3 || lines[0] != fmt.Sprintf("id: %d", 6+i) || lines[1] != "event: step" {
			t.Fatalf("frame %q", f)
		}
		var se events.StepEvent
		if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &se); err != nil || se.Status != status || se.Event.Seq != i+1 {
			t.Fatalf("data %q: %+v %v", lines[2], se, err)
		}
	}

	// Idle: pings, and the stream outlives the server's 300 ms timeouts.
	start := time.Now()
	for pings := 0; pings < 5; {
		if f := c.next(t); f == ": ping\n" {
			pings++
		} else {
			t.Fatalf("frame %q, want a ping", f)
		}
	}
	if time.Since(start) < 900*time.Millisecond {
		t.Fatalf("5 pings within %s: the ping interval is not respected", time.Since(start))
	}
	fd.send(t, stepEv(9, "j1", 3, "running"))
	if f := c.next(t); !strings.HasPrefix(f, "id: 9\n") {
		t.Fatalf("frame after idling %q", f)
	}

	// The client goes away: the feed is closed.
	c.resp.Body.Close()
	fd.waitClosed(t, "the client left")
	logs := ss.logs.String()
	for _, want := range []string{"api: event stream opened", "api: event stream closed"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, testToken) {
		t.Errorf("the log shows the token:\n%s", logs)
	}
}

func TestEventStreamEndsWithTheServer(t *testing.T) {
	ss := startStreamServer(t)
	c := ss.open(t, "", nil)
	c.next(t) // retry
	fd := ss.src.waitOpened(t)
	if got := ss.src.filters[0]; got != (bus.EventFilter{}) {
		t.Errorf("filter %+v, want none", got)
	}

	// As app.Serve does: the serve context ends, then Shutdown waits for
	// the handlers; an open stream must not hold it up.
	ss.cancel()
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	if err := ss.srv.Shutdown(sctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("shutdown took %s with a stream open", took)
	}
	fd.waitClosed(t, "the server stopped")
	c.waitEnd(t, "the server stopped")
	if !strings.Contains(ss.logs.String(), "server stopping") {
		t.Errorf("log does not say why the stream closed:\n%s", ss.logs.String())
	}
}

func TestEventStreamEndsWhenTheFeedFails(t *testing.T) {
	ss := startStreamServer(t)
	c := ss.open(t, "?job_id=j1", nil)
	c.next(t)
	fd := ss.src.waitOpened(t)
	fd.errs <- errors.New("nats: connection closed")
	c.waitEnd(t, "the feed failed")
	if !strings.Contains(ss.logs.String(), "the event feed failed") {
		t.Errorf("log does not say the feed failed:\n%s", ss.logs.String())
	}
}

func TestEventStreamErrors(t *testing.T) {
	t.Run("token required", func(t *testing.T) {
		h := newHarness(t, func(d *Deps) { d.Events = newFakeEvents() })
		wantError(t, h.request("GET", "/api/v1/events/stream", "", nil), http.StatusUnauthorized, CodeUnauthorized, "token")
		wantError(t, h.request("GET", "/api/v1/events/stream?access_token="+testToken, "", nil), http.StatusUnauthorized, CodeUnauthorized, "token")
	})
	t.Run("bad filter names the field", func(t *testing.T) {
		src := newFakeEvents()
		h := newHarness(t, func(d *Deps) { d.Events = src })
		wantError(t, h.do("GET", "/api/v1/events/stream?site_uuid=a.b", ""), http.StatusBadRequest, CodeInvalidArgument, "site_uuid")
		wantError(t, h.do("GET", "/api/v1/events/stream?job_id=", ""), http.StatusBadRequest, CodeInvalidArgument, "job_id")
		if len(src.filters) != 0 {
			t.Errorf("a feed was opened for a bad request: %+v", src.filters)
		}
	})
	t.Run("no event source is 503", func(t *testing.T) {
		h := newHarness(t)
		wantError(t, h.do("GET", "/api/v1/events/stream", ""), http.StatusServiceUnavailable, CodeUnavailable, "not available")
	})
	t.Run("the feed cannot start: 503", func(t *testing.T) {
		src := newFakeEvents()
		src.err = errors.New("nats: no responders")
		h := newHarness(t, func(d *Deps) { d.Events = src })
		rec := h.do("GET", "/api/v1/events/stream", "")
		wantError(t, rec, http.StatusServiceUnavailable, CodeUnavailable, "try again later")
		if strings.Contains(rec.Body.String(), "no responders") {
			t.Errorf("the answer names internals: %s", rec.Body)
		}
	})
}

// fakeSchedules is a ScheduleLister.
type fakeSchedules struct {
	list []store.Schedule
	err  error
}

func (f fakeSchedules) ListSchedules(context.Context) ([]store.Schedule, error) { return f.list, f.err }

func TestListSchedules(t *testing.T) {
	next := testNow.Add(time.Hour)
	scs := []store.Schedule{
		{ID: "backup:s1", Kind: store.ScheduleBackup, SiteUUID: "s1", IntervalSeconds: 3600, NextRunAt: next},
		{ID: "backup:s2", Kind: store.ScheduleBackup, SiteUUID: "s2", IntervalSeconds: 3600, NextRunAt: next},
		{ID: "sync", Kind: store.ScheduleSync, IntervalSeconds: 86400, NextRunAt: next},
	}
	h := newHarness(t, func(d *Deps) { d.Schedules = fakeSchedules{list: scs} })

	rec := h.do("GET", "/api/v1/schedules", "")
	if rec.Code != http.StatusOK {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	var raw map[string][]map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw["schedules"]) != 3 || raw["schedules"][0]["next_run_at"] != next.Format(time.RFC3339) || raw["schedules"][2]["site_uuid"] != nil {
		t.Errorf("body %s", rec.Body)
	}
	got := decode[ScheduleList](t, h.do("GET", "/api/v1/schedules?site_uuid=s2", ""))
	if len(got.Schedules) != 1 || got.Schedules[0].ID != "backup:s2" {
		t.Errorf("filtered: %+v", got)
	}
	if got := decode[ScheduleList](t, h.do("GET", "/api/v1/schedules?site_uuid=none", "")); got.Schedules == nil || len(got.Schedules) != 0 {
		t.Errorf("no match: %+v, want an empty list", got)
	}
	wantError(t, h.do("GET", "/api/v1/schedules?site_uuid=a*", ""), http.StatusBadRequest, CodeInvalidArgument, "site_uuid")
	wantError(t, h.do("GET", "/api/v1/schedules?site_uuid=a&site_uuid=b", ""), http.StatusBadRequest, CodeInvalidArgument, "site_uuid")
	wantError(t, h.request("GET", "/api/v1/schedules", "", nil), http.StatusUnauthorized, CodeUnauthorized, "token")

	down := newHarness(t, func(d *Deps) {
		d.Schedules = fakeSchedules{err: errors.New("store: list schedules: connection refused")}
	})
	wantError(t, down.do("GET", "/api/v1/schedules", ""), http.StatusServiceUnavailable, CodeUnavailable, "store is unavailable")
	none := newHarness(t)
	wantError(t, none.do("GET", "/api/v1/schedules", ""), http.StatusServiceUnavailable, CodeUnavailable, "not available")
}

func newDebugLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
