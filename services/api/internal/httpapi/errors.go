package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/store"
)

// Error codes of the envelope.
const (
	CodeInvalidArgument = "invalid_argument"
	CodeNotFound        = "not_found"
	CodeConflict        = "conflict"
	CodeUnauthorized    = "unauthorized"
	CodeUnavailable     = "unavailable"
	CodeInternal        = "internal"
)

// Error is an API error: the HTTP status, the envelope's code and message
// (safe to show), and the internal cause (logged, never sent).
type Error struct {
	Status  int
	Code    string
	Message string
	Cause   error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Message + ": " + e.Cause.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

// Envelope is the body of every error response.
type Envelope struct {
	Error EnvelopeError `json:"error"`
}

// EnvelopeError is the envelope's content.
type EnvelopeError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func invalid(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) *Error {
	return &Error{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf(format, args...)}
}

func unavailable(cause error, format string, args ...any) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: fmt.Sprintf(format, args...), Cause: cause}
}

// storeError maps a store failure. The sentinels become 404/409 with the
// given messages; anything else is the store being unreachable or broken,
// a 503 whose message names no internals.
func storeError(err error, notFoundMsg, conflictMsg string) *Error {
	var apiErr *Error
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, store.ErrNotFound) && notFoundMsg != "":
		return notFound("%s", notFoundMsg)
	case errors.Is(err, store.ErrConflict) && conflictMsg != "":
		return conflict("%s", conflictMsg)
	}
	return unavailable(err, "the store is unavailable; try again later")
}

// codeFor picks the envelope code of an HTTP status.
func codeFor(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return CodeUnauthorized
	case status == http.StatusNotFound:
		return CodeNotFound
	case status == http.StatusConflict:
		return CodeConflict
	case status == http.StatusServiceUnavailable:
		return CodeUnavailable
	case status >= 500:
		return CodeInternal
	}
	return CodeInvalidArgument
}

// errorHandler writes every error, Echo's own included (unknown route,
// wrong method, body too large), as the envelope. Server faults are logged
// with their cause and answered with the request id only.
func (s *server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	req := c.Request()
	var e *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &e):
	case errors.As(err, &he):
		e = &Error{Status: he.Code, Code: codeFor(he.Code), Cause: he.Internal}
		switch he.Code {
		case http.StatusNotFound:
			e.Message = fmt.Sprintf("no such endpoint: %s %s", req.Method, req.URL.Path)
		case http.StatusMethodNotAllowed:
			e.Message = fmt.Sprintf("method %s is not allowed on %s", req.Method, req.URL.Path)
		case http.StatusRequestEntityTooLarge:
			e.Message = fmt.Sprintf("request body is larger than %d bytes", maxBody)
		default:
			if m, ok := he.Message.(string); ok && he.Code < 500 {
				e.Message = m
			} else {
				e.Message = http.StatusText(he.Code)
			}
		}
	default:
		e = &Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: "internal error", Cause: err}
	}
	if e.Status >= 500 && req.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away mid-request; nobody reads the answer and
		// nothing is wrong with the server.
		e = &Error{Status: 499, Code: CodeUnavailable, Message: "request canceled by the client"}
	}
	if e.Status >= 500 {
		id := requestID(c)
		s.log.Error("api request failed", "method", req.Method, "path", req.URL.Path,
			"status", e.Status, "request_id", id, "err", e.Cause)
		e.Message = fmt.Sprintf("%s (request id %s)", e.Message, id)
	}
	if e.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="satoru"`)
	}
	if req.Method == http.MethodHead {
		_ = c.NoContent(e.Status) // already the error path: a failed write has no one to go to
		return
	}
	if err := c.JSON(e.Status, Envelope{Error: EnvelopeError{Code: e.Code, Message: e.Message}}); err != nil {
		s.log.Debug("api: write error response", "err", err)
	}
}
