package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/satoru/satoru/shared/events"
)

// StreamFilter narrows GET /events/stream; empty fields are not sent.
type StreamFilter struct {
	SiteUUID string
	JobID    string
}

// Stream is an open GET /events/stream. Close it when done; cancelling
// the context given to OpenStream also ends a blocked Next.
type Stream struct {
	body io.ReadCloser
	sse  *SSEReader
}

// OpenStream opens the live events stream. With a job id the API first
// replays that job's recent events. lastEventID ("" for none) resumes
// after that stream sequence. The stream has no request timeout.
func (c *Client) OpenStream(ctx context.Context, f StreamFilter, lastEventID string) (*Stream, error) {
	q := url.Values{}
	if f.SiteUUID != "" {
		q.Set("site_uuid", f.SiteUUID)
	}
	if f.JobID != "" {
		q.Set("job_id", f.JobID)
	}
	u := c.endpoint(q, "events", "stream")
	resp, err := c.send(ctx, http.MethodGet, u, nil, "text/event-stream", lastEventID)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, decodeError(http.MethodGet, u.Path, resp.StatusCode, data)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: answer is %q, not text/event-stream", u.Path, mt)
	}
	return &Stream{body: resp.Body, sse: NewSSEReader(resp.Body)}, nil
}

// Next returns the next step event and its stream sequence (the SSE id),
// skipping events of other types. It returns io.EOF when the server ended
// the stream.
func (s *Stream) Next() (events.StepEvent, string, error) {
	for {
		ev, err := s.sse.Next()
		if err != nil {
			return events.StepEvent{}, "", err
		}
		if ev.Type != "step" {
			continue
		}
		var se events.StepEvent
		if err := json.Unmarshal([]byte(ev.Data), &se); err != nil {
			return events.StepEvent{}, ev.ID, fmt.Errorf("event %s: decode step event: %w", ev.ID, err)
		}
		return se, ev.ID, nil
	}
}

// LastID is the last stream sequence seen.
func (s *Stream) LastID() string { return s.sse.LastID() }

// Close ends the stream.
func (s *Stream) Close() error { return s.body.Close() }
