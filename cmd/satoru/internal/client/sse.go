package client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// SSEEvent is one dispatched server-sent event.
type SSEEvent struct {
	ID   string // the last id: seen so far (it carries over, as in browsers)
	Type string // the event: field; "message" when none was given
	Data string // the data: lines joined with "\n"
}

// MaxSSELine bounds one line of the stream; a step event with a restore's
// change list stays far below it.
const MaxSSELine = 4 << 20

// ErrSSELineTooLong is returned for a line longer than MaxSSELine.
var ErrSSELineTooLong = errors.New("event stream line too long")

// SSEReader parses a text/event-stream body (the subset of the HTML
// standard's rules a client needs): lines end with LF, CRLF or CR; a line
// starting with ":" is a comment; "field: value" lines set id, event, data
// and retry; a blank line dispatches the event if it has data. A partial
// event at the end of the stream is dropped.
type SSEReader struct {
	r       *bufio.Reader
	lastID  string
	retry   time.Duration
	pending bool // the previous line ended with CR; skip a following LF
}

// NewSSEReader reads events from r.
func NewSSEReader(r io.Reader) *SSEReader { return &SSEReader{r: bufio.NewReader(r)} }

// LastID is the last event id seen, for Last-Event-ID on a reconnect.
func (s *SSEReader) LastID() string { return s.lastID }

// Retry is the reconnection delay the server asked for (0 when none).
func (s *SSEReader) Retry() time.Duration { return s.retry }

// Next returns the next event with data, or the read error (io.EOF when
// the stream ended).
func (s *SSEReader) Next() (SSEEvent, error) {
	var typ string
	var data strings.Builder
	hasData := false
	for {
		line, err := s.readLine()
		if err != nil {
			return SSEEvent{}, err
		}
		if line == "" {
			if !hasData {
				typ = ""
				continue
			}
			if typ == "" {
				typ = "message"
			}
			return SSEEvent{ID: s.lastID, Type: typ, Data: strings.TrimSuffix(data.String(), "\n")}, nil
		}
		if line[0] == ':' {
			continue
		}
		field, value, found := strings.Cut(line, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch field {
		case "event":
			typ = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				s.lastID = value
			}
		case "retry":
			if ms, err := strconv.ParseUint(value, 10, 31); err == nil {
				s.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
}

// readLine returns one line without its end.
func (s *SSEReader) readLine() (string, error) {
	var b []byte
	for {
		c, err := s.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				// A line cut off by the end of the stream belongs to an
				// event that never completed.
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		if s.pending {
			s.pending = false
			if c == '\n' {
				continue
			}
		}
		switch c {
		case '\n':
			return string(b), nil
		case '\r':
			s.pending = true
			return string(b), nil
		}
		if len(b) >= MaxSSELine {
			return "", fmt.Errorf("%w (more than %d bytes)", ErrSSELineTooLong, MaxSSELine)
		}
		b = append(b, c)
	}
}
