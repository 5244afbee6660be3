package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/satoru/satoru/services/api/internal/web"
	"github.com/satoru/satoru/shared/disk"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/restore"
)

// BasePath prefixes every API route.
const BasePath = "/api/v1"

// PublicPaths need no token. The dashboard's page and assets hold no
// data (the page asks for the token), so they are public too, and so is
// the API's OpenAPI document.
var PublicPaths = []string{"/healthz", "/readyz", "/metrics", web.IndexPath, web.AssetsPrefix + "*", OpenAPIPath}

// readyTimeout bounds each readiness check.
const readyTimeout = 3 * time.Second

type server struct {
	store   Store
	disp    Dispatcher
	token   [sha256.Size]byte
	hasTok  bool
	ready   []Checker
	log     *slog.Logger
	now     func() time.Time
	newID   func() string
	reg     *prometheus.Registry
	metrics *httpMetrics

	offsite      bool
	syncInterval time.Duration
	checkEvery   time.Duration
	disks        []DiskCheck
	diskSpace    func(path string) (DiskSpace, error)
	repo         Repository
	siteLists    *siteLists
	services     Liveness
	expected     []string
	nodes        NodeRecords

	ctx        context.Context // the server's lifetime (Deps.Context)
	events     EventSource
	streamPing time.Duration
	schedules  ScheduleLister

	restoreGuard *restore.Guard
	siteDeleted  func(ctx context.Context, siteUUID string) error

	access *access // scoped tokens and the audit trail (access.go)
}

// New builds the Echo instance with every route. Deps.Store, Dispatcher
// and NewID must be set.
func New(d Deps) *echo.Echo {
	s := &server{
		store: d.Store, disp: d.Dispatcher, ready: d.Ready,
		log: d.Log, now: d.Now, newID: d.NewID, reg: d.Registry,
		offsite: d.OffsiteConfigured, syncInterval: d.SyncInterval, checkEvery: d.CheckInterval,
		disks: d.Disks, diskSpace: d.DiskSpace, repo: d.Repo,
		services: d.Services, expected: d.ExpectedServices, nodes: d.Nodes,
		ctx: d.Context, events: d.Events, streamPing: d.StreamPing, schedules: d.Schedules,
		restoreGuard: d.RestoreGuard, siteDeleted: d.SiteDeleted,
	}
	if s.ctx == nil {
		s.ctx = context.Background()
	}
	if s.streamPing <= 0 {
		s.streamPing = DefaultStreamPing
	}
	if s.expected == nil {
		s.expected = domain.Services()
	}
	if s.diskSpace == nil {
		s.diskSpace = disk.Stat
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if d.Token != "" {
		s.token, s.hasTok = sha256.Sum256([]byte(d.Token)), true
	} else {
		s.log.Warn("api: no startup API token configured; only scoped tokens (if any) are accepted")
	}
	s.metrics = newHTTPMetrics(s.reg)
	s.access = newAccess(d.Store, s.reg)
	s.siteLists = newSiteLists(d.Store, d.SiteListMaxAge, d.Context, s.log)

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(io.Discard)
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.requestID, s.observe, s.recoverPanic, s.auth)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})))
	e.GET(web.IndexPath, echo.WrapHandler(web.Index()))
	e.GET(web.AssetsPrefix+"*", echo.WrapHandler(web.Assets()))

	g := e.Group(BasePath)
	g.POST("/sites", s.handleCreateSite)
	g.GET("/sites", s.handleListSites)
	g.GET("/sites/:site_uuid", s.handleGetSite)
	g.PATCH("/sites/:site_uuid", s.handlePatchSite)
	g.DELETE("/sites/:site_uuid", s.handleDeleteSite)
	g.POST("/sites/:site_uuid/targets", s.handleAddTarget)
	g.GET("/sites/:site_uuid/targets", s.handleListTargets)
	g.DELETE("/sites/:site_uuid/targets/:target_hash", s.handleDeleteTarget)
	g.POST("/sites/:site_uuid/jobs", s.handleCreateJob)
	g.GET("/jobs", s.handleListJobs)
	g.GET("/jobs/:job_id", s.handleGetJob)
	g.GET("/jobs/:job_id/events", s.handleJobEvents)
	g.POST("/jobs/:job_id/cancel", s.handleCancelJob)
	g.POST("/sync", s.handleCreateSync)
	g.GET("/sync", s.handleGetSync)
	g.POST("/check", s.handleCreateCheck)
	g.GET("/check", s.handleGetCheck)
	g.GET("/health", s.handleHealth)
	g.GET("/sites/:site_uuid/snapshots", s.handleListSnapshots)
	g.GET("/snapshots/:id/tree", s.handleSnapshotTree)
	g.GET("/snapshots/:id/diff", s.handleSnapshotDiff)
	g.GET("/snapshots/:id/download", s.handleDownload)
	g.POST("/sites/:site_uuid/restores", s.handleCreateRestore)
	g.GET("/events/stream", s.handleEventStream)
	g.GET("/schedules", s.handleListSchedules)
	g.GET("/sites/:site_uuid/policy", s.handleGetPolicy)
	g.PUT("/sites/:site_uuid/policy", s.handlePutPolicy)
	g.GET("/me", s.handleMe)
	g.GET("/tokens", s.handleListTokens)
	g.POST("/tokens", s.handleCreateToken)
	g.DELETE("/tokens/:token", s.handleDeleteToken)
	g.GET("/audit", s.handleListAudit)
	// Every route must be in openapi.json too (openapi_test.go checks),
	// and in routeRules (access.go; access_test.go checks).
	e.GET(OpenAPIPath, s.handleOpenAPI)
	s.access.registered = map[string]bool{}
	for _, r := range e.Routes() {
		s.access.registered[routeKey(r.Method, r.Path)] = true
	}
	return e
}

// --- middleware ---

const requestIDKey = "request_id"

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// requestID takes a sane X-Request-Id from the client or makes one, and
// echoes it in the response.
func (s *server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !requestIDRe.MatchString(id) {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		c.Set(requestIDKey, id)
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		return next(c)
	}
}

func requestID(c echo.Context) string {
	id, _ := c.Get(requestIDKey).(string)
	return id
}

// observe writes errors through the error handler, then logs the request
// (never its headers) and counts it by route.
func (s *server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		req, status := c.Request(), c.Response().Status
		route := c.Path()
		if route == "" || status == http.StatusNotFound && !strings.Contains(route, ":") && route != req.URL.Path {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		s.metrics.observe(req.Method, route, status, elapsed)
		level := slog.LevelInfo
		if isPublic(c) {
			level = slog.LevelDebug
		}
		s.log.Log(req.Context(), level, "api request", "method", req.Method, "path", req.URL.Path,
			"status", status, "duration_ms", elapsed.Milliseconds(), "request_id", requestID(c))
		return nil
	}
}

// recoverPanic turns a handler panic into a 500 with the envelope.
func (s *server) recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = &Error{Status: http.StatusInternalServerError, Code: CodeInternal,
					Message: "internal error", Cause: fmt.Errorf("panic: %v", r)}
			}
		}()
		return next(c)
	}
}

// isPublic says the matched route is one of PublicPaths. For exact routes
// the request path must be the route itself too, so an unmatched path
// that Echo files under a route (a 404) is not public.
func isPublic(c echo.Context) bool {
	p, route := echo.GetPath(c.Request()), c.Path()
	for _, pub := range PublicPaths {
		if route != pub {
			continue
		}
		if strings.HasSuffix(pub, "*") || p == pub {
			return true
		}
	}
	return false
}

var errUnauthorized = &Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
	Message: "missing or invalid token: send Authorization: Bearer <token>"}

// --- metrics ---

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newHTTPMetrics registers the API's metrics on reg, reusing collectors
// already registered there (a second New on one registry).
func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "satoru_api_requests_total",
			Help: "API requests, by method, route and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "satoru_api_request_duration_seconds",
			Help:    "API request latency, by method and route.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
	}
	m.requests = observe.Register(reg, m.requests)
	m.duration = observe.Register(reg, m.duration)
	return m
}

func (m *httpMetrics) observe(method, route string, status int, d time.Duration) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "other" // bound the label's values
	}
	m.requests.WithLabelValues(method, route, fmt.Sprint(status)).Inc()
	m.duration.WithLabelValues(method, route).Observe(d.Seconds())
}

// --- health ---

func (s *server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// CheckResult is one readiness check's outcome. Error says only "failed"
// or "timeout": /readyz needs no token, so details go to the log.
type CheckResult struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Readiness is the body of /readyz.
type Readiness struct {
	Status string         `json:"status,omitempty"`
	Error  *EnvelopeError `json:"error,omitempty"`
	Checks []CheckResult  `json:"checks"`
}

// runChecks runs every checker at once, each bounded by readyTimeout.
func (s *server) runChecks(ctx context.Context) []CheckResult {
	out := make([]CheckResult, len(s.ready))
	var wg sync.WaitGroup
	for i, ch := range s.ready {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, readyTimeout)
			defer cancel()
			err := ch.Check(cctx)
			out[i] = CheckResult{Name: ch.Name(), OK: err == nil}
			if err != nil {
				out[i].Error = "failed"
				if errors.Is(err, context.DeadlineExceeded) || cctx.Err() != nil {
					out[i].Error = "timeout"
				}
				s.log.Warn("api: readiness check failed", "check", ch.Name(), "err", err)
			}
		}()
	}
	wg.Wait()
	return out
}

func (s *server) readyz(c echo.Context) error {
	checks := s.runChecks(c.Request().Context())
	var failed []string
	for _, r := range checks {
		if !r.OK {
			failed = append(failed, r.Name)
		}
	}
	if len(failed) > 0 {
		return c.JSON(http.StatusServiceUnavailable, Readiness{
			Error:  &EnvelopeError{Code: CodeUnavailable, Message: "not ready: " + strings.Join(failed, ", ")},
			Checks: checks,
		})
	}
	return c.JSON(http.StatusOK, Readiness{Status: "ready", Checks: checks})
}
