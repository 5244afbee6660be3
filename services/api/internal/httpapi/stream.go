package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/bus"
)

// GET /events/stream: the job step events of stream SATORU_EVENTS as
// Server-Sent Events, one "step" event per StepEvent, its id the stream
// sequence. With job_id the job's events still held by the stream are
// replayed first; without it only new events are sent; Last-Event-ID
// resumes after a sequence. The token comes in the Authorization header
// like everywhere else (the dashboard reads the stream with fetch()).

// DefaultStreamPing is how long a stream may be idle before a ": ping"
// comment keeps proxies from closing it.
const DefaultStreamPing = 15 * time.Second

// streamRetryMS is the reconnect delay an SSE client is told to use.
const streamRetryMS = 2000

var errNoEvents = unavailable(nil, "the live event stream is not available from this API")

// ParseStreamQuery validates the query of GET /events/stream and the
// Last-Event-ID header into a filter. site_uuid and job_id are optional,
// but given they must be subject tokens.
func ParseStreamQuery(q url.Values, lastEventID string) (bus.EventFilter, *Error) {
	var f bus.EventFilter
	for _, p := range []struct {
		name string
		dst  *string
	}{{"site_uuid", &f.SiteUUID}, {"job_id", &f.JobID}} {
		v, given, err := oneParam(q, p.name)
		if err != nil {
			return f, err
		}
		if !given {
			continue
		}
		if msg := bus.TokenProblem(v); msg != "" {
			return f, invalid("%s: %s, got %q", p.name, msg, clip(v))
		}
		*p.dst = v
	}
	if lastEventID != "" {
		n, err := strconv.ParseUint(lastEventID, 10, 64)
		if err != nil {
			return f, invalid("Last-Event-ID: must be the id of an event received before (a stream sequence number), got %q", clip(lastEventID))
		}
		f.AfterSeq = n
	}
	return f, nil
}

// oneParam reads a query parameter given at most once.
func oneParam(q url.Values, name string) (string, bool, *Error) {
	v, ok := q[name]
	switch {
	case !ok:
		return "", false, nil
	case len(v) > 1:
		return "", false, invalid("%s: give it at most once", name)
	}
	return v[0], true, nil
}

// FormatStepEvent is one step event in the SSE wire format.
func FormatStepEvent(ev bus.StreamedEvent) ([]byte, error) {
	data, err := json.Marshal(ev.Event)
	if err != nil {
		return nil, fmt.Errorf("encode step event of job %s: %w", ev.Event.JobID, err)
	}
	out := make([]byte, 0, len(data)+40)
	out = fmt.Appendf(out, "id: %d\nevent: step\ndata: ", ev.Seq)
	out = append(out, data...)
	return append(out, '\n', '\n'), nil
}

func (s *server) handleEventStream(c echo.Context) error {
	req := c.Request()
	f, verr := ParseStreamQuery(req.URL.Query(), req.Header.Get("Last-Event-ID"))
	if verr != nil {
		return verr
	}
	if s.events == nil {
		return errNoEvents
	}
	// The request's context ends when the client goes; a graceful
	// shutdown only cancels it after handlers return, so the stream also
	// ends with the server's lifetime.
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	f.Log = s.log
	feed, err := s.events.FollowEvents(ctx, f)
	if err != nil {
		if req.Context().Err() != nil {
			return req.Context().Err() // the client left: nobody reads the answer
		}
		return unavailable(err, "the live event stream is unavailable; try again later")
	}
	defer feed.Close()

	resp := c.Response()
	rc := http.NewResponseController(resp.Writer)
	// A server WriteTimeout would cut a long stream.
	_ = rc.SetWriteDeadline(time.Time{})
	h := resp.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	resp.WriteHeader(http.StatusOK)
	send := func(b []byte) error {
		if _, err := resp.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	log := s.log.With("site_uuid", f.SiteUUID, "job_id", f.JobID, "request_id", requestID(c))
	if err := send(fmt.Appendf(nil, "retry: %d\n\n", streamRetryMS)); err != nil {
		log.Debug("api: event stream not opened", "err", err)
		return nil
	}
	log.Debug("api: event stream opened", "after_seq", f.AfterSeq)
	sent, why := 0, "client gone"
	defer func() { log.Debug("api: event stream closed", "events", sent, "reason", why) }()
	for {
		nctx, ncancel := context.WithTimeout(ctx, s.streamPing)
		ev, err := feed.Next(nctx)
		ncancel()
		var out []byte
		switch {
		case ctx.Err() != nil:
			if s.ctx.Err() != nil {
				why = "server stopping"
			}
			return nil
		case err == nil:
			if out, err = FormatStepEvent(ev); err != nil {
				log.Warn("api: event stream: skip event", "seq", ev.Seq, "err", err)
				continue
			}
			sent++
		case errors.Is(err, context.DeadlineExceeded):
			out = []byte(": ping\n\n")
		default:
			// The feed failed (NATS gone too long): end the stream; the
			// client reconnects after the retry delay with Last-Event-ID.
			why = "feed failed"
			log.Warn("api: event stream ended: the event feed failed", "err", err)
			return nil
		}
		if err := send(out); err != nil {
			return nil
		}
	}
}
