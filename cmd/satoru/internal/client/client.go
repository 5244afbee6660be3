// Package client is a typed client of Satoru's REST API (services/api):
// one method per endpoint the CLI uses, the error envelope decoded into
// *APIError, and a reader for the live events stream.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// BasePath prefixes every API route.
const BasePath = "/api/v1"

// Defaults.
const (
	// DefaultRequestTimeout bounds one ordinary request (not the events
	// stream). Listing snapshots runs restic, hence the generous value.
	DefaultRequestTimeout = 2 * time.Minute
	// maxResponse bounds a response body read into memory.
	maxResponse = 64 << 20
)

// Client talks to one Satoru API with one bearer token.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	// RequestTimeout bounds each request but the events stream; 0 = none.
	RequestTimeout time.Duration
}

// New returns a client of the API at baseURL (see ParseBaseURL) that
// sends token as its bearer token. hc nil means a fresh client without a
// global timeout (the events stream stays open for as long as it runs).
func New(baseURL, token string, hc *http.Client) (*Client, error) {
	u, err := ParseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return &Client{base: u, token: token, hc: hc, RequestTimeout: DefaultRequestTimeout}, nil
}

// ParseBaseURL checks an API address: http or https, a host, no query or
// fragment. A trailing "/" or "/api/v1" is dropped, so both the server's
// root and its API root are accepted.
func ParseBaseURL(s string) (*url.URL, error) {
	// Parse failures do not echo the input: it may hold a password.
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		return nil, errors.New("API URL: must start with http:// or https:// (e.g. http://127.0.0.1:8080)")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, errors.New("API URL: not a valid URL (e.g. http://127.0.0.1:8080)")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("API URL %q: must start with http:// or https://", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("API URL %q: has no host", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("API URL %q: must not have a query or fragment", u.Redacted())
	}
	u.Path = strings.TrimSuffix(strings.TrimRight(u.Path, "/"), BasePath)
	u.RawPath = ""
	return u, nil
}

// BaseURL is the API address as given, any user info redacted.
func (c *Client) BaseURL() string { return c.base.Redacted() }

// APIError is an error answer of the API: its HTTP status and the
// envelope's code and message.
type APIError struct {
	Status  int
	Code    string // invalid_argument, unauthorized, not_found, conflict, unavailable, internal; "" when the body was no envelope
	Message string
	Method  string
	Path    string
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = "error"
	}
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, code, e.Status)
}

// Error codes of the envelope.
const (
	CodeInvalidArgument = "invalid_argument"
	CodeUnauthorized    = "unauthorized"
	CodeNotFound        = "not_found"
	CodeConflict        = "conflict"
	CodeUnavailable     = "unavailable"
	CodeInternal        = "internal"
)

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool {
	var e *APIError
	return errors.As(err, &e) && e.Code == code
}

// UnreachableError means no HTTP answer came back: connection refused,
// DNS, TLS, a timeout.
type UnreachableError struct {
	URL string // redacted
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the Satoru API at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Body carries an answer's raw JSON, for callers that print it as is.
// Embedding it adds no JSON fields.
type Body struct{ raw json.RawMessage }

// Raw is the answer's JSON as the API sent it.
func (b Body) Raw() json.RawMessage { return b.raw }

func (b *Body) setRaw(data []byte) { b.raw = data }

type rawSetter interface{ setRaw([]byte) }

// endpoint is BasePath plus segments, each escaped as one path segment
// (an id holding "/" cannot reach another route).
func (c *Client) endpoint(q url.Values, segs ...string) *url.URL {
	u := *c.base
	raw := u.EscapedPath() + BasePath
	p := u.Path + BasePath
	for _, s := range segs {
		raw += "/" + url.PathEscape(s)
		p += "/" + s
	}
	u.Path, u.RawPath = p, raw
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return &u
}

// do sends one request with a JSON body (if any) and decodes a 2xx
// answer into out (if any); other answers become *APIError.
func (c *Client) do(ctx context.Context, method string, u *url.URL, body, out any) error {
	if c.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.RequestTimeout)
		defer cancel()
	}
	resp, err := c.send(ctx, method, u, body, "application/json", "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, u.Path, err)
	}
	if len(data) > maxResponse {
		return fmt.Errorf("%s %s: answer is larger than %d bytes", method, u.Path, maxResponse)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(method, u.Path, resp.StatusCode, data)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, u.Path, err)
	}
	if r, ok := out.(rawSetter); ok {
		r.setRaw(data)
	}
	return nil
}

// send builds and sends a request. The token goes in the header only.
func (c *Client) send(ctx context.Context, method string, u *url.URL, body any, accept, lastEventID string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("%s %s: encode body: %w", method, u.Path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, u.Path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", accept)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", method, u.Path, ctx.Err())
		}
		// url.Error repeats method and URL; keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, &UnreachableError{URL: c.base.Redacted(), Err: err}
	}
	return resp, nil
}

// decodeError turns an error answer into *APIError; a body that is not
// the envelope (a proxy's page) gives the HTTP status text.
func decodeError(method, path string, status int, data []byte) *APIError {
	e := &APIError{Status: status, Method: method, Path: path}
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &env) == nil && env.Error.Code != "" {
		e.Code, e.Message = env.Error.Code, env.Error.Message
		return e
	}
	e.Message = fmt.Sprintf("%s %s: %s", method, path, http.StatusText(status))
	return e
}
