package client

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestSSEReader(t *testing.T) {
	type want struct{ id, typ, data string }
	cases := []struct {
		name  string
		in    string
		want  []want
		retry time.Duration
		err   error // after the events
	}{
		{
			name: "the API's framing: retry, step events, pings",
			in: "retry: 2000\n\n" +
				"id: 7\nevent: step\ndata: {\"a\":1}\n\n" +
				": ping\n\n" +
				"id: 8\nevent: step\ndata: {\"a\":2}\n\n",
			want:  []want{{"7", "step", `{"a":1}`}, {"8", "step", `{"a":2}`}},
			retry: 2 * time.Second,
			err:   io.EOF,
		},
		{
			name: "multi-line data joined with LF, no space after the colon kept",
			in:   "data:first\ndata: second\ndata:  indented\n\n",
			want: []want{{"", "message", "first\nsecond\n indented"}},
			err:  io.EOF,
		},
		{
			name: "CRLF and lone CR line ends",
			in:   "id: 1\r\nevent: step\r\ndata: x\r\n\r\nid: 2\revent: step\rdata: y\r\r",
			want: []want{{"1", "step", "x"}, {"2", "step", "y"}},
			err:  io.EOF,
		},
		{
			name: "an event without data is not dispatched and its type does not leak",
			in:   "event: step\nid: 3\n\ndata: z\n\n",
			want: []want{{"3", "message", "z"}},
			err:  io.EOF,
		},
		{
			name: "id carries over; an id with NUL is ignored; unknown fields ignored",
			in:   "id: 5\ndata: a\n\nid: 6\x00\nfoo: bar\ndata: b\n\n",
			want: []want{{"5", "message", "a"}, {"5", "message", "b"}},
			err:  io.EOF,
		},
		{
			name: "a field name alone is an empty value",
			in:   "data\ndata\n\n",
			want: []want{{"", "message", "\n"}},
			err:  io.EOF,
		},
		{
			name: "bad retry is ignored",
			in:   "retry: soon\ndata: a\n\n",
			want: []want{{"", "message", "a"}},
			err:  io.EOF,
		},
		{
			name: "a partial event at the end is dropped",
			in:   "id: 1\ndata: whole\n\nid: 2\ndata: part",
			want: []want{{"1", "message", "whole"}},
			err:  io.ErrUnexpectedEOF,
		},
		{
			name: "an unterminated event before EOF is dropped too",
			in:   "data: x\n",
			err:  io.EOF,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := NewSSEReader(strings.NewReader(tc.in))
			for i, w := range tc.want {
				ev, err := r.Next()
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
				if ev.ID != w.id || ev.Type != w.typ || ev.Data != w.data {
					t.Errorf("event %d: got %+v, want %+v", i, ev, w)
				}
			}
			if _, err := r.Next(); !errors.Is(err, tc.err) {
				t.Errorf("after the events: got %v, want %v", err, tc.err)
			}
			if r.Retry() != tc.retry {
				t.Errorf("retry %s, want %s", r.Retry(), tc.retry)
			}
		})
	}
}

func TestSSEReaderLineCap(t *testing.T) {
	in := "data: " + strings.Repeat("x", MaxSSELine) + "\n\n"
	_, err := NewSSEReader(strings.NewReader(in)).Next()
	if !errors.Is(err, ErrSSELineTooLong) {
		t.Fatalf("got %v, want ErrSSELineTooLong", err)
	}
}
