package client

import (
	"errors"
	"strings"
	"testing"
)

func TestParseBaseURL(t *testing.T) {
	cases := []struct {
		name, in, want, err string
	}{
		{name: "root", in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{name: "trailing slash", in: "http://h:1/", want: "http://h:1"},
		{name: "API root given", in: "https://h/api/v1/", want: "https://h"},
		{name: "behind a prefix", in: "https://h/satoru", want: "https://h/satoru"},
		{name: "no scheme", in: "127.0.0.1:8080", err: "http:// or https://"},
		{name: "other scheme", in: "ftp://h", err: "http:// or https://"},
		{name: "no host", in: "http:///x", err: "no host"},
		{name: "query", in: "http://h/?token=x", err: "query"},
		{name: "user info is redacted in errors", in: "ftp://u:secret@h", err: "u:xxxxx@h"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseBaseURL(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error containing %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error shows the password: %v", err)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("got %v %v, want %s", u, err, tc.want)
			}
		})
	}
}

func TestEndpointEscapesSegments(t *testing.T) {
	c, err := New("http://h:1/pre", "tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	u := c.endpoint(nil, "jobs", "../sites", "events")
	if got, want := u.String(), "http://h:1/pre/api/v1/jobs/..%2Fsites/events"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	u = c.endpoint(map[string][]string{"job_id": {"a b"}}, "events", "stream")
	if got, want := u.String(), "http://h:1/pre/api/v1/events/stream?job_id=a+b"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestDecodeError(t *testing.T) {
	e := decodeError("GET", "/api/v1/sites/x", 404, []byte(`{"error":{"code":"not_found","message":"site \"x\" not found"}}`))
	if e.Status != 404 || e.Code != CodeNotFound || e.Message != `site "x" not found` {
		t.Fatalf("got %+v", e)
	}
	if got := e.Error(); got != `site "x" not found (not_found, HTTP 404)` {
		t.Errorf("Error() = %q", got)
	}
	if !IsCode(errors.Join(errors.New("x"), e), CodeNotFound) {
		t.Errorf("IsCode does not see a wrapped APIError")
	}
	// A proxy's HTML page is no envelope: the status text stands in.
	e = decodeError("GET", "/api/v1/sites", 502, []byte("<html>bad gateway</html>"))
	if e.Code != "" || !strings.Contains(e.Message, "Bad Gateway") {
		t.Fatalf("got %+v", e)
	}
}
