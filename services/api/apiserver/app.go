// Package app assembles Satoru's REST API: New builds the HTTP handler
// from its dependencies, Serve runs it on a listener until the context
// ends. main (or `satoru up`) only wires.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/services/api/internal/httpapi"
)

// Store is what the API reads and writes; see httpapi.Store for the
// error contract (store.ErrNotFound / store.ErrConflict). *store.Store
// satisfies it.
type Store = httpapi.Store

// JobFinisher, when the Store also has it, lets the API mark failed a job
// whose request could not be published. *store.Store has it.
type JobFinisher = httpapi.JobFinisher

// Dispatcher hands job requests and cancel requests to the workers.
// *bus.Infra satisfies it.
type Dispatcher = httpapi.Dispatcher

// Repository is the local restic repository the snapshot, browse,
// download and restore endpoints read. restic.Repo satisfies it.
type Repository = httpapi.Repository

// Liveness lists the live service instances for GET /api/v1/health
// (Deps.Services). *bus.Infra satisfies it.
type Liveness = httpapi.Liveness

// EventSource follows the job step events for GET /api/v1/events/stream
// (Deps.Events). *bus.Infra satisfies it.
type EventSource = httpapi.EventSource

// ScheduleLister lists the scheduler's schedules for GET /api/v1/schedules
// (Deps.Schedules). *store.Store satisfies it.
type ScheduleLister = httpapi.ScheduleLister

// Checker is one readiness check for /readyz.
type Checker = httpapi.Checker

// CheckFunc makes a Checker from a name and a function.
func CheckFunc(name string, fn func(ctx context.Context) error) Checker {
	return checkFunc{name: name, fn: fn}
}

type checkFunc struct {
	name string
	fn   func(ctx context.Context) error
}

func (c checkFunc) Name() string                    { return c.name }
func (c checkFunc) Check(ctx context.Context) error { return c.fn(ctx) }

// Deps is what the API needs. Store and Dispatcher are required; Token is
// the admin bearer token (empty refuses every /api/v1 request); Registry
// gets the API's metrics and is served on /metrics (a new one if nil);
// Ready are the /readyz checks; Log defaults to discarding, Now to
// time.Now, NewID to uuid.NewString.
type Deps = httpapi.Deps

// DiskCheck is a path whose free space GET /api/v1/health reports against
// its minimum: give staging_root and restic_repo_path with
// staging_min_free_bytes / staging_min_free_percent in Deps.Disks.
type DiskCheck = httpapi.DiskCheck

// DiskSpace is a filesystem's free and total bytes (Deps.DiskSpace).
type DiskSpace = httpapi.DiskSpace

// New builds the API handler: /healthz, /readyz, /metrics and /api/v1.
func New(d Deps) *echo.Echo {
	if d.NewID == nil {
		d.NewID = uuid.NewString
	}
	return httpapi.New(d)
}

// ShutdownTimeout bounds the graceful shutdown of Serve.
const ShutdownTimeout = 15 * time.Second

// Serve serves h on ln until ctx is done, then shuts down gracefully:
// it stops accepting, lets requests in flight finish (up to
// ShutdownTimeout, then closes them) and returns. It returns nil after a
// clean shutdown and the error if serving fails. It closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("api: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		_ = srv.Close()
		return fmt.Errorf("api: shutdown: %w", err)
	}
	return nil
}

// NodeRecords lists the worker nodes' instance records for GET
// /api/v1/health (Deps.Nodes). *bus.Infra satisfies it.
type NodeRecords = httpapi.NodeRecords
