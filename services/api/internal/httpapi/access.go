package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/observe"
	"github.com/satoru/satoru/shared/store"
)

// Scoped access: every request to a route outside PublicPaths carries a
// bearer token that is the startup token (admin) or one of the tokens
// created through POST /tokens (stored as the SHA-256 of the secret); the
// route's entry in routeRules names the least role it needs, and the
// requests that change something, start work or read snapshot contents
// are recorded in the audit trail.

// Role is what a token may do. Each role may do everything the roles
// below it may.
type Role string

const (
	// RoleViewer reads everything but snapshot contents.
	RoleViewer Role = "viewer"
	// RoleOperator also starts and cancels jobs, starts offsite syncs,
	// downloads snapshot contents and restores to a folder on the Satoru
	// host (never to a site).
	RoleOperator Role = "operator"
	// RoleAdmin may do everything: sites, targets, tokens, the audit
	// trail, restores to a site.
	RoleAdmin Role = "admin"
)

// Roles lists the roles, least first.
var Roles = []Role{RoleViewer, RoleOperator, RoleAdmin}

func (r Role) rank() int {
	for i, x := range Roles {
		if x == r {
			return i + 1
		}
	}
	return 0
}

// Allows reports whether a token of role r may use a route that needs need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// StartupTokenName is the caller name of the startup token
// (SATORU_API_TOKEN, api_token_file or the generated one) in the audit trail.
const StartupTokenName = "startup"

// CodeForbidden is the envelope code of a 403: the token is valid but its
// role may not do this.
const CodeForbidden = "forbidden"

// routeRule is what a route needs and whether it is audited.
type routeRule struct {
	Role Role
	// Action, when set, records every request of the route in the audit
	// trail under this name, whatever its outcome.
	Action string
	// Query are query parameters the audit entry keeps as detail.
	Query []string
}

// routeRules maps every registered route ("METHOD /path/:param", as Echo
// names it) outside PublicPaths to the least role it needs. A route
// registered without an entry needs admin (and TestEveryRouteHasARole
// fails), so a new route is never left open by mistake. Changes (sites,
// targets, tokens, policies), jobs started by hand and every restore or
// download carry an audit Action.
var routeRules = map[string]routeRule{
	"GET " + BasePath + "/me":     {Role: RoleViewer},
	"GET " + BasePath + "/health": {Role: RoleViewer},

	"POST " + BasePath + "/sites":                                   {Role: RoleAdmin, Action: "site.create"},
	"GET " + BasePath + "/sites":                                    {Role: RoleViewer},
	"GET " + BasePath + "/sites/:site_uuid":                         {Role: RoleViewer},
	"PATCH " + BasePath + "/sites/:site_uuid":                       {Role: RoleAdmin, Action: "site.update"},
	"DELETE " + BasePath + "/sites/:site_uuid":                      {Role: RoleAdmin, Action: "site.delete"},
	"GET " + BasePath + "/sites/:site_uuid/policy":                  {Role: RoleViewer},
	"PUT " + BasePath + "/sites/:site_uuid/policy":                  {Role: RoleAdmin, Action: "policy.update"},
	"POST " + BasePath + "/sites/:site_uuid/targets":                {Role: RoleAdmin, Action: "target.create"},
	"GET " + BasePath + "/sites/:site_uuid/targets":                 {Role: RoleViewer},
	"DELETE " + BasePath + "/sites/:site_uuid/targets/:target_hash": {Role: RoleAdmin, Action: "target.delete"},

	"POST " + BasePath + "/sites/:site_uuid/jobs": {Role: RoleOperator, Action: "job.start"},
	"GET " + BasePath + "/jobs":                   {Role: RoleViewer},
	"GET " + BasePath + "/jobs/:job_id":           {Role: RoleViewer},
	"GET " + BasePath + "/jobs/:job_id/events":    {Role: RoleViewer},
	"POST " + BasePath + "/jobs/:job_id/cancel":   {Role: RoleOperator, Action: "job.cancel"},
	"GET " + BasePath + "/events/stream":          {Role: RoleViewer},
	"GET " + BasePath + "/schedules":              {Role: RoleViewer},
	"POST " + BasePath + "/sync":                  {Role: RoleOperator, Action: "sync.start"},
	"GET " + BasePath + "/sync":                   {Role: RoleViewer},

	"GET " + BasePath + "/sites/:site_uuid/snapshots": {Role: RoleViewer},
	"GET " + BasePath + "/snapshots/:id/tree":         {Role: RoleViewer},
	// A diff shows paths and sizes, not contents.
	"GET " + BasePath + "/snapshots/:id/diff": {Role: RoleViewer},
	"POST " + BasePath + "/check":             {Role: RoleOperator, Action: "check.start"},
	"GET " + BasePath + "/check":              {Role: RoleViewer},
	// Snapshot contents: not for viewers.
	"GET " + BasePath + "/snapshots/:id/download": {Role: RoleOperator, Action: "snapshot.download", Query: []string{"path"}},
	// A restore to a site needs admin too (checkRestoreAccess).
	"POST " + BasePath + "/sites/:site_uuid/restores": {Role: RoleOperator, Action: "restore.create"},

	"GET " + BasePath + "/tokens":           {Role: RoleAdmin},
	"POST " + BasePath + "/tokens":          {Role: RoleAdmin, Action: "token.create"},
	"DELETE " + BasePath + "/tokens/:token": {Role: RoleAdmin, Action: "token.revoke"},
	"GET " + BasePath + "/audit":            {Role: RoleAdmin},
}

func routeKey(method, path string) string { return method + " " + path }

// TokenStore keeps the scoped tokens (*store.Store has it). TokenByHash
// and DeleteToken wrap store.ErrNotFound for an unknown token,
// CreateToken store.ErrConflict for a taken name.
type TokenStore interface {
	CreateToken(ctx context.Context, t store.Token) error
	TokenByHash(ctx context.Context, hash string) (store.Token, error)
	ListTokens(ctx context.Context) ([]store.Token, error)
	DeleteToken(ctx context.Context, ref string) (store.Token, error)
}

// AuditLog keeps the audit trail (*store.Store has it).
type AuditLog interface {
	InsertAudit(ctx context.Context, e store.AuditEntry) error
	ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditEntry, error)
}

// access is the server's token and audit state.
type access struct {
	tokens TokenStore // nil: only the startup token works
	audit  AuditLog   // nil: nothing is recorded
	// auditErrors counts audit entries that could not be written.
	auditErrors prometheus.Counter
	// registered are the routes Echo has, as routeKey; a registered route
	// missing from routeRules needs admin.
	registered map[string]bool
}

// newAccess takes the token and audit stores from the Store when it has
// them (*store.Store does; the unit tests' fake does not).
func newAccess(st Store, reg *prometheus.Registry) *access {
	a := &access{auditErrors: observe.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "satoru_api_audit_write_errors_total",
		Help: "Audit entries the API could not write (the request was answered; see the API's error log).",
	}))}
	a.tokens, _ = st.(TokenStore)
	a.audit, _ = st.(AuditLog)
	return a
}

// Caller is who sent a request: the token's name and role.
type Caller struct {
	Name    string `json:"name"`
	Role    Role   `json:"role"`
	TokenID string `json:"token_id,omitempty"`
}

const (
	callerKey      = "caller"
	auditIDsKey    = "audit_ids"
	auditDetailKey = "audit_detail"
)

func callerOf(c echo.Context) (Caller, bool) {
	cl, ok := c.Get(callerKey).(Caller)
	return cl, ok
}

// forbidden is the 403 for a caller whose role is below need.
func forbidden(cl Caller, need Role, what string) *Error {
	return &Error{Status: http.StatusForbidden, Code: CodeForbidden,
		Message: fmt.Sprintf("%s needs the %s role; token %q has the %s role", what, need, cl.Name, cl.Role)}
}

// requireRole refuses the request unless the caller has need; what
// names the thing refused in the message.
func requireRole(c echo.Context, need Role, what string) error {
	cl, ok := callerOf(c)
	if !ok || !cl.Role.Allows(need) {
		return forbidden(cl, need, what)
	}
	return nil
}

// auditID and auditDetail add to the request's audit entry.
func auditID(c echo.Context, key, val string)     { auditNote(c, auditIDsKey, key, val) }
func auditDetail(c echo.Context, key, val string) { auditNote(c, auditDetailKey, key, val) }

func auditNote(c echo.Context, bag, key, val string) {
	if val == "" {
		return
	}
	m, _ := c.Get(bag).(map[string]string)
	if m == nil {
		m = map[string]string{}
		c.Set(bag, m)
	}
	m[key] = clip(val)
}

// hashToken is the hex SHA-256 under which a token is stored.
func hashToken(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

// authenticate finds the caller of a request: the startup token is
// compared in constant time (both sides hashed first); another token is
// looked up by its hash and the stored hash compared again in constant
// time. A store that cannot answer is a 503, never a pass.
func (s *server) authenticate(c echo.Context) (Caller, error) {
	h := c.Request().Header.Get(echo.HeaderAuthorization)
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return Caller{}, errUnauthorized
	}
	sum := hashToken(tok)
	if s.hasTok && subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1 {
		return Caller{Name: StartupTokenName, Role: RoleAdmin}, nil
	}
	if s.access.tokens == nil {
		return Caller{}, errUnauthorized
	}
	t, err := s.access.tokens.TokenByHash(c.Request().Context(), hex.EncodeToString(sum[:]))
	if errors.Is(err, store.ErrNotFound) {
		return Caller{}, errUnauthorized
	}
	if err != nil {
		return Caller{}, unavailable(err, "cannot check the token: the store is unavailable; try again later")
	}
	stored, derr := hex.DecodeString(t.Hash)
	role := Role(t.Role)
	if derr != nil || subtle.ConstantTimeCompare(stored, sum[:]) != 1 || role.rank() == 0 {
		return Caller{}, errUnauthorized
	}
	return Caller{Name: t.Name, Role: role, TokenID: t.ID}, nil
}

// auth requires a valid bearer token on every path but the public ones,
// unknown paths included (so they reveal nothing), then the role the
// route needs; an audited route is recorded whatever the outcome (but a
// request without a valid token is not: it names no one).
func (s *server) auth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if isPublic(c) {
			return next(c)
		}
		cl, err := s.authenticate(c)
		if err != nil {
			return err
		}
		c.Set(callerKey, cl)
		key := routeKey(c.Request().Method, c.Path())
		rule, ok := routeRules[key]
		if !ok {
			if !s.access.registered[key] {
				return next(c) // no such route: Echo answers 404 or 405
			}
			// Registered but not in the table: fail closed.
			rule = routeRule{Role: RoleAdmin}
		}
		if !cl.Role.Allows(rule.Role) {
			err = forbidden(cl, rule.Role, c.Request().Method+" "+c.Path())
		} else {
			if cl.TokenID != "" && key == streamRoute {
				defer s.watchToken(c)()
			}
			err = next(c)
		}
		if rule.Action == "" {
			return err
		}
		// Write the answer now, so the entry holds its status.
		if err != nil {
			c.Error(err)
		}
		s.record(c, cl, rule)
		return nil
	}
}

// streamRoute is the one long-lived request: a scoped token's event
// stream is cut when the token is revoked (watchToken).
const streamRoute = "GET " + BasePath + "/events/stream"

// TokenRecheck is how often an open event stream's scoped token is looked
// up again, so a revoked token's stream ends within it.
var TokenRecheck = 5 * time.Second

// watchToken ends the request (its context) once its scoped token is
// gone from the store, checking every TokenRecheck; the returned stop
// ends the watch. A store error keeps the stream: it is not a revocation.
func (s *server) watchToken(c echo.Context) (stop func()) {
	req := c.Request()
	ctx, cancel := context.WithCancel(req.Context())
	c.SetRequest(req.WithContext(ctx))
	hash := hashToken(bearer(req.Header.Get(echo.HeaderAuthorization)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(TokenRecheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			_, err := s.access.tokens.TokenByHash(ctx, hex.EncodeToString(hash[:]))
			if errors.Is(err, store.ErrNotFound) {
				cl, _ := callerOf(c)
				s.log.Info("api: token revoked; closing its event stream", "token", cl.Name, "request_id", requestID(c))
				cancel()
				return
			}
		}
	}()
	return func() { cancel(); <-done }
}

func bearer(h string) string {
	_, tok, _ := strings.Cut(h, " ")
	return strings.TrimSpace(tok)
}

// auditTimeout bounds the write of one audit entry; it runs even when
// the client has gone.
const auditTimeout = 5 * time.Second

// record writes the audit entry of an answered request. It keeps no
// header and no body, so no secret: only the route, the ids the request
// named or created and the notes the handler made.
func (s *server) record(c echo.Context, cl Caller, rule routeRule) {
	if s.access.audit == nil {
		return
	}
	req := c.Request()
	ids, _ := c.Get(auditIDsKey).(map[string]string)
	if ids == nil {
		ids = map[string]string{}
	}
	for i, name := range c.ParamNames() {
		if vals := c.ParamValues(); i < len(vals) && vals[i] != "" {
			ids[name] = clip(vals[i])
		}
	}
	// A created resource: POST /sites answers with its Location, the job
	// routes with the job's.
	if loc := c.Response().Header().Get(echo.HeaderLocation); loc != "" {
		rest := strings.TrimPrefix(loc, BasePath+"/")
		if kind, id, ok := strings.Cut(rest, "/"); ok && !strings.Contains(id, "/") {
			switch kind {
			case "sites":
				ids["site_uuid"] = clip(id)
			case "jobs":
				ids["job_id"] = clip(id)
			}
		}
	}
	detail, _ := c.Get(auditDetailKey).(map[string]string)
	for _, q := range rule.Query {
		if v := req.URL.Query().Get(q); v != "" {
			if detail == nil {
				detail = map[string]string{}
			}
			detail[q] = clip(v)
		}
	}
	remote := req.RemoteAddr
	if host, _, err := net.SplitHostPort(remote); err == nil {
		remote = host
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	at := s.now()
	e := store.AuditEntry{
		ID: store.AuditID(at, hex.EncodeToString(suffix[:])), At: at,
		Token: cl.Name, Role: string(cl.Role), Remote: remote,
		Action: rule.Action, Method: req.Method, Route: c.Path(), SiteUUID: ids["site_uuid"],
		IDs: ids, Detail: detail, Status: c.Response().Status, RequestID: requestID(c),
	}
	if len(e.IDs) == 0 {
		e.IDs = nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), auditTimeout)
	defer cancel()
	if err := s.access.audit.InsertAudit(ctx, e); err != nil {
		s.access.auditErrors.Inc()
		s.log.Error("api: audit entry not recorded", "action", e.Action, "token", e.Token,
			"site_uuid", e.SiteUUID, "status", e.Status, "request_id", e.RequestID, "err", err)
	}
}

// --- /me, /tokens, /audit ---

// TokenInput is the body of POST /tokens.
type TokenInput struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

// TokenCreated is the answer of POST /tokens: the token and, this once,
// its secret.
type TokenCreated struct {
	store.Token
	Secret string `json:"secret"`
}

// TokenList is the answer of GET /tokens (never a secret).
type TokenList struct {
	Tokens []store.Token `json:"tokens"`
}

// AuditList is the answer of GET /audit: newest first; Next, when set,
// is the `before` of the next page.
type AuditList struct {
	Entries []store.AuditEntry `json:"entries"`
	Next    string             `json:"next,omitempty"`
}

var (
	tokenNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	errNoTokens = unavailable(nil, "scoped tokens are not available from this API (no token store)")
	errNoAudit  = unavailable(nil, "the audit trail is not available from this API (no store)")
)

// ValidateToken checks a POST /tokens body.
func ValidateToken(in TokenInput) *Error {
	switch {
	case !tokenNameRe.MatchString(in.Name):
		return invalid("name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit, got %q", clip(in.Name))
	case in.Name == StartupTokenName:
		return invalid("name: %q is the startup token's name", StartupTokenName)
	case in.Role.rank() == 0:
		return invalid("role: one of viewer, operator, admin, got %q", clip(string(in.Role)))
	}
	return nil
}

// newSecret is a token's secret: 32 random bytes, hex, with a prefix
// that makes a leaked one easy to recognise.
func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	return "satoru_" + hex.EncodeToString(b[:]), nil
}

func (s *server) createToken(ctx context.Context, by Caller, in TokenInput) (TokenCreated, error) {
	if verr := ValidateToken(in); verr != nil {
		return TokenCreated{}, verr
	}
	if s.access.tokens == nil {
		return TokenCreated{}, errNoTokens
	}
	secret, err := newSecret()
	if err != nil {
		return TokenCreated{}, err
	}
	sum := hashToken(secret)
	var id [6]byte
	if _, err := rand.Read(id[:]); err != nil {
		return TokenCreated{}, fmt.Errorf("generate token id: %w", err)
	}
	t := store.Token{Hash: hex.EncodeToString(sum[:]), ID: "tok_" + hex.EncodeToString(id[:]), Name: in.Name,
		Role: string(in.Role), CreatedAt: s.now().UTC().Truncate(time.Millisecond), CreatedBy: by.Name}
	if err := s.access.tokens.CreateToken(ctx, t); err != nil {
		return TokenCreated{}, storeError(err, "", fmt.Sprintf("name: a token named %q exists already", in.Name))
	}
	return TokenCreated{Token: t, Secret: secret}, nil
}

func (s *server) handleMe(c echo.Context) error {
	cl, _ := callerOf(c)
	return c.JSON(http.StatusOK, cl)
}

func (s *server) handleCreateToken(c echo.Context) error {
	var in TokenInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	auditDetail(c, "name", in.Name)
	auditDetail(c, "role", string(in.Role))
	cl, _ := callerOf(c)
	out, err := s.createToken(c.Request().Context(), cl, in)
	if err != nil {
		return err
	}
	auditID(c, "token_id", out.ID)
	return c.JSON(http.StatusCreated, out)
}

func (s *server) handleListTokens(c echo.Context) error {
	if s.access.tokens == nil {
		return errNoTokens
	}
	list, err := s.access.tokens.ListTokens(c.Request().Context())
	if err != nil {
		return storeError(err, "", "")
	}
	return c.JSON(http.StatusOK, TokenList{Tokens: orEmpty(list)})
}

func (s *server) handleDeleteToken(c echo.Context) error {
	if s.access.tokens == nil {
		return errNoTokens
	}
	ref := c.Param("token")
	t, err := s.access.tokens.DeleteToken(c.Request().Context(), ref)
	if err != nil {
		return storeError(err, fmt.Sprintf("token %q not found (give its id or name; see GET /api/v1/tokens)", clip(ref)), "")
	}
	auditID(c, "token_id", t.ID)
	auditDetail(c, "name", t.Name)
	auditDetail(c, "role", t.Role)
	return c.NoContent(http.StatusNoContent)
}

// MaxAuditLimit bounds one page of GET /audit.
const MaxAuditLimit = 1000

// ParseAuditQuery validates GET /audit's filters: token, action,
// site_uuid, since and until (RFC 3339), before (a page cursor) and
// limit (1..1000, default 100).
func ParseAuditQuery(c echo.Context) (store.AuditFilter, *Error) {
	q := c.QueryParams()
	var f store.AuditFilter
	for _, p := range []struct {
		name string
		dst  *string
	}{{"token", &f.Token}, {"action", &f.Action}, {"site_uuid", &f.SiteUUID}, {"before", &f.Before}} {
		v, _, err := oneParam(q, p.name)
		if err != nil {
			return f, err
		}
		*p.dst = v
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &f.Since}, {"until", &f.Until}} {
		v, given, err := oneParam(q, p.name)
		if err != nil {
			return f, err
		}
		if !given {
			continue
		}
		t, perr := time.Parse(time.RFC3339, v)
		if perr != nil {
			return f, invalid("%s: an RFC 3339 time like 2026-01-02T15:04:05Z, got %q", p.name, clip(v))
		}
		*p.dst = t
	}
	f.Limit = 100
	if v, given, err := oneParam(q, "limit"); err != nil {
		return f, err
	} else if given {
		var n int
		if _, serr := fmt.Sscanf(v, "%d", &n); serr != nil || fmt.Sprint(n) != v || n < 1 || n > MaxAuditLimit {
			return f, invalid("limit: a whole number from 1 to %d, got %q", MaxAuditLimit, clip(v))
		}
		f.Limit = n
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		return f, invalid("until: must be after since")
	}
	return f, nil
}

func (s *server) handleListAudit(c echo.Context) error {
	f, verr := ParseAuditQuery(c)
	if verr != nil {
		return verr
	}
	if s.access.audit == nil {
		return errNoAudit
	}
	list, err := s.access.audit.ListAudit(c.Request().Context(), f)
	if err != nil {
		return storeError(err, "", "")
	}
	out := AuditList{Entries: orEmpty(list)}
	if len(list) == f.Limit {
		out.Next = list[len(list)-1].ID
	}
	return c.JSON(http.StatusOK, out)
}

// checkRestoreAccess: an operator restores to a folder on the Satoru
// host only; a restore back to a site needs admin. It also notes the
// destination kind and snapshot in the audit entry.
func checkRestoreAccess(c echo.Context, in RestoreInput) error {
	auditDetail(c, "snapshot_id", in.SnapshotID)
	if d := in.Destination; d != nil && d.ToSite != nil && *d.ToSite {
		auditDetail(c, "destination", "site")
		return requireRole(c, RoleAdmin, "a restore to a site")
	}
	auditDetail(c, "destination", "local")
	return nil
}
