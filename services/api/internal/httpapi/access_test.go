package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/conns"
	"github.com/satoru/satoru/shared/store"
	"github.com/satoru/satoru/shared/testkit"
)

// TestEveryRouteHasARole: every registered route outside PublicPaths is
// in routeRules (so none is left to the fail-closed default by mistake),
// every entry is a registered route, and openapi.json documents each
// operation's role (x-satoru-role) and a 403 where a viewer is refused.
func TestEveryRouteHasARole(t *testing.T) {
	h := newHarness(t)
	public := map[string]bool{}
	for _, p := range PublicPaths {
		public[p] = true
	}
	registered := map[string]bool{}
	for _, r := range h.e.Routes() {
		if r.Method == echo.RouteNotFound || public[r.Path] {
			continue
		}
		key := routeKey(r.Method, r.Path)
		registered[key] = true
		rule, ok := routeRules[key]
		if !ok {
			t.Errorf("route %s has no entry in routeRules (access.go): say which role it needs", key)
			continue
		}
		if rule.Role.rank() == 0 {
			t.Errorf("route %s: role %q is not a role", key, rule.Role)
		}
	}
	for key := range routeRules {
		if !registered[key] {
			t.Errorf("routeRules lists %s, which is not registered", key)
		}
	}
	if len(registered) < 25 {
		t.Errorf("only %d protected routes seen", len(registered))
	}

	_, raw := loadOpenAPI(t)
	for p, itemAny := range raw["paths"].(map[string]any) {
		for m, opAny := range itemAny.(map[string]any) {
			if !httpMethods[m] {
				continue
			}
			key := routeKey(strings.ToUpper(m), strings.NewReplacer("{", ":", "}", "").Replace(p))
			rule, ok := routeRules[key]
			op := opAny.(map[string]any)
			if !ok {
				if op["x-satoru-role"] != nil {
					t.Errorf("%s: x-satoru-role on a public route", key)
				}
				continue
			}
			if op["x-satoru-role"] != string(rule.Role) {
				t.Errorf("%s: openapi x-satoru-role = %v, routeRules says %s", key, op["x-satoru-role"], rule.Role)
			}
			if _, has403 := op["responses"].(map[string]any)["403"]; has403 != (rule.Role != RoleViewer) {
				t.Errorf("%s: documents 403 = %v, but needs %s", key, has403, rule.Role)
			}
		}
	}
}

func TestAccessSchemasMatchTheGoTypes(t *testing.T) {
	_, raw := loadOpenAPI(t)
	for name, v := range map[string]any{
		"Caller":       Caller{},
		"TokenInput":   TokenInput{},
		"Token":        store.Token{},
		"TokenCreated": TokenCreated{},
		"TokenList":    TokenList{},
		"AuditEntry":   store.AuditEntry{},
		"AuditList":    AuditList{},
	} {
		t.Run(name, func(t *testing.T) {
			matchSchema(t, raw, name, reflect.TypeOf(v), resolve(t, raw, map[string]any{"$ref": "#/components/schemas/" + name}))
		})
	}
}

func TestRoleAllows(t *testing.T) {
	for _, tc := range []struct {
		have, need Role
		want       bool
	}{
		{RoleViewer, RoleViewer, true}, {RoleViewer, RoleOperator, false}, {RoleViewer, RoleAdmin, false},
		{RoleOperator, RoleViewer, true}, {RoleOperator, RoleOperator, true}, {RoleOperator, RoleAdmin, false},
		{RoleAdmin, RoleViewer, true}, {RoleAdmin, RoleAdmin, true},
		{"", RoleViewer, false}, {"root", RoleViewer, false},
	} {
		if got := tc.have.Allows(tc.need); got != tc.want {
			t.Errorf("%q.Allows(%q) = %v, want %v", tc.have, tc.need, got, tc.want)
		}
	}
}

// accessEnv is the API over the real embedded store and NATS.
type accessEnv struct {
	t     *testing.T
	e     *echo.Echo
	store *store.Store
	reg   *prometheus.Registry
	// secrets of the tokens made by newAccessEnv, by role name.
	secrets map[Role]string
}

func newAccessEnv(t *testing.T) *accessEnv {
	t.Helper()
	stack := testkit.StartStack(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := conns.Open(ctx, conns.Options{Name: "access-test", NATSURL: stack.NATSURL, MongoURI: stack.StoreURI,
		Bus: bus.Settings{LeaseTTL: 10 * time.Second, AckWait: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if _, err := stack.Store.IndexIDs(ctx); err != nil {
		t.Fatal(err)
	}
	env := &accessEnv{t: t, store: c.Store, reg: prometheus.NewRegistry(), secrets: map[Role]string{}}
	env.e = New(Deps{Store: c.Store, Dispatcher: c.Bus, Events: c.Bus, Token: testToken, Registry: env.reg,
		NewID: uuid.NewString})
	for _, r := range Roles {
		rec := env.as(testToken, "POST", "/api/v1/tokens", `{"name":"`+string(r)+`-1","role":"`+string(r)+`"}`)
		if rec.Code != http.StatusCreated {
			t.Fatalf("create %s token: %d %s", r, rec.Code, rec.Body)
		}
		out := decode[TokenCreated](t, rec)
		if out.Role != string(r) || !strings.HasPrefix(out.Secret, "satoru_") || out.CreatedBy != StartupTokenName {
			t.Fatalf("created %+v", out)
		}
		env.secrets[r] = out.Secret
	}
	return env
}

func (env *accessEnv) as(secret, method, path, body string) *httptest.ResponseRecorder {
	env.t.Helper()
	var r *strings.Reader
	if body != "" {
		r = strings.NewReader(body)
	} else {
		r = strings.NewReader("")
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	rec := httptest.NewRecorder()
	env.e.ServeHTTP(rec, req)
	return rec
}

func (env *accessEnv) audit(query string) AuditList {
	env.t.Helper()
	rec := env.as(testToken, "GET", "/api/v1/audit?"+query, "")
	if rec.Code != http.StatusOK {
		env.t.Fatalf("GET /audit?%s = %d %s", query, rec.Code, rec.Body)
	}
	return decode[AuditList](env.t, rec)
}

// TestScopedAccessByRole: each role against a representative set of
// routes, on the real store. Allowed requests get their real answer
// (here often 503 or 409: no repository, no offsite), refused ones 403
// with a message naming the role needed.
func TestScopedAccessByRole(t *testing.T) {
	env := newAccessEnv(t)
	rec := env.as(testToken, "POST", "/api/v1/sites", `{"name":"edge-1","host":"h","user":"u"}`)
	if rec.Code != http.StatusCreated {
		t.Fatalf("create site: %d %s", rec.Code, rec.Body)
	}
	site := decode[SiteDetail](t, rec).UUID
	S := "/api/v1/sites/" + site

	type call struct{ method, path, body string }
	cases := []struct {
		name string
		call
		// want is the status for each role; 403 means refused.
		viewer, operator, admin int
		need                    Role
	}{
		{"list sites", call{"GET", "/api/v1/sites", ""}, 200, 200, 200, ""},
		{"read site", call{"GET", S, ""}, 200, 200, 200, ""},
		{"list jobs", call{"GET", "/api/v1/jobs", ""}, 200, 200, 200, ""},
		{"health", call{"GET", "/api/v1/health", ""}, 200, 200, 200, ""},
		{"browse", call{"GET", "/api/v1/snapshots/abcdef12/tree?path=/", ""}, 503, 503, 503, ""},
		{"download", call{"GET", "/api/v1/snapshots/abcdef12/download?path=/x", ""}, 403, 503, 503, RoleOperator},
		{"run backup", call{"POST", S + "/jobs", `{"type":"preflight"}`}, 403, 202, 202, RoleOperator},
		{"start sync", call{"POST", "/api/v1/sync", ""}, 403, 409, 409, RoleOperator},
		{"restore to a folder", call{"POST", S + "/restores", `{"snapshot_id":"abcdef12","paths":["/x"],"destination":{"local_path":"/tmp/r"}}`}, 403, 503, 503, RoleOperator},
		{"restore to the site", call{"POST", S + "/restores", `{"snapshot_id":"abcdef12","paths":["/x"],"destination":{"to_site":true,"path":"/x"}}`}, 403, 403, 503, RoleAdmin},
		{"add target", call{"POST", S + "/targets", `{"mode":"directory","path":"/srv"}`}, 403, 403, 201, RoleAdmin},
		{"change site", call{"PATCH", S, `{"port":2222}`}, 403, 403, 200, RoleAdmin},
		{"add site", call{"POST", "/api/v1/sites", `{"name":"edge-NAME","host":"h","user":"u"}`}, 403, 403, 201, RoleAdmin},
		{"list tokens", call{"GET", "/api/v1/tokens", ""}, 403, 403, 200, RoleAdmin},
		{"make token", call{"POST", "/api/v1/tokens", `{"name":"t-NAME","role":"viewer"}`}, 403, 403, 201, RoleAdmin},
		{"read audit", call{"GET", "/api/v1/audit", ""}, 403, 403, 200, RoleAdmin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range Roles {
				want := map[Role]int{RoleViewer: tc.viewer, RoleOperator: tc.operator, RoleAdmin: tc.admin}[r]
				body := strings.ReplaceAll(tc.body, "NAME", string(r))
				rec := env.as(env.secrets[r], tc.method, tc.path, body)
				if rec.Code != want {
					t.Errorf("%s: %s %s = %d, want %d; %s", r, tc.method, tc.path, rec.Code, want, rec.Body)
					continue
				}
				if want == http.StatusForbidden {
					need := tc.need
					if r == RoleViewer && need == RoleAdmin && tc.method == "POST" && strings.HasSuffix(tc.path, "/restores") {
						need = RoleOperator // the route's own need comes first
					}
					wantError(t, rec, http.StatusForbidden, CodeForbidden, "needs the "+string(need)+" role")
					if !strings.Contains(rec.Body.String(), string(r)+"-1") {
						t.Errorf("%s: the 403 does not name the token: %s", r, rec.Body)
					}
				}
			}
		})
	}

	// GET /me names the caller.
	for _, r := range Roles {
		me := decode[Caller](t, env.as(env.secrets[r], "GET", "/api/v1/me", ""))
		if me.Name != string(r)+"-1" || me.Role != r || !strings.HasPrefix(me.TokenID, "tok_") {
			t.Errorf("GET /me as %s = %+v", r, me)
		}
	}
	if me := decode[Caller](t, env.as(testToken, "GET", "/api/v1/me", "")); me.Name != StartupTokenName || me.Role != RoleAdmin {
		t.Errorf("GET /me with the startup token = %+v", me)
	}
	// An unknown token and no token: 401, never 403.
	wantError(t, env.as("satoru_00", "GET", "/api/v1/sites", ""), http.StatusUnauthorized, CodeUnauthorized, "token")
	wantError(t, env.as("", "GET", "/api/v1/me", ""), http.StatusUnauthorized, CodeUnauthorized, "token")
	// A valid token on an unknown path still gets a 404.
	wantError(t, env.as(env.secrets[RoleViewer], "GET", "/api/v1/nope", ""), http.StatusNotFound, CodeNotFound, "no such endpoint")
}

// TestTokenRevokeTakesEffectAtOnce: a revoked token is refused by the
// very next request; the list never shows a secret or its hash.
func TestTokenRevokeTakesEffectAtOnce(t *testing.T) {
	env := newAccessEnv(t)
	op := env.secrets[RoleOperator]
	if rec := env.as(op, "GET", "/api/v1/sites", ""); rec.Code != http.StatusOK {
		t.Fatalf("before revoke: %d %s", rec.Code, rec.Body)
	}
	rec := env.as(testToken, "GET", "/api/v1/tokens", "")
	list := decode[TokenList](t, rec)
	if len(list.Tokens) != 3 {
		t.Fatalf("tokens = %+v", list.Tokens)
	}
	for _, s := range env.secrets {
		sum := hashToken(s)
		for _, leak := range []string{s, strings.TrimPrefix(s, "satoru_"), string(sum[:4])} {
			if strings.Contains(rec.Body.String(), leak) {
				t.Errorf("GET /tokens shows a secret or its hash: %s", rec.Body)
			}
		}
	}
	var opID string
	for _, tk := range list.Tokens {
		if tk.Name == "operator-1" {
			opID = tk.ID
		}
	}
	// Revoke by name; the id works too (below).
	if rec := env.as(testToken, "DELETE", "/api/v1/tokens/operator-1", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	wantError(t, env.as(op, "GET", "/api/v1/sites", ""), http.StatusUnauthorized, CodeUnauthorized, "token")
	wantError(t, env.as(testToken, "DELETE", "/api/v1/tokens/"+opID, ""), http.StatusNotFound, CodeNotFound, "not found")

	viewerID := ""
	for _, tk := range list.Tokens {
		if tk.Name == "viewer-1" {
			viewerID = tk.ID
		}
	}
	if rec := env.as(env.secrets[RoleAdmin], "DELETE", "/api/v1/tokens/"+viewerID, ""); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke by id: %d %s", rec.Code, rec.Body)
	}
	wantError(t, env.as(env.secrets[RoleViewer], "GET", "/api/v1/me", ""), http.StatusUnauthorized, CodeUnauthorized, "token")

	// Names are unique and checked; "startup" is taken.
	wantError(t, env.as(testToken, "POST", "/api/v1/tokens", `{"name":"admin-1","role":"viewer"}`), http.StatusConflict, CodeConflict, "exists already")
	wantError(t, env.as(testToken, "POST", "/api/v1/tokens", `{"name":"startup","role":"viewer"}`), http.StatusBadRequest, CodeInvalidArgument, "startup")
	wantError(t, env.as(testToken, "POST", "/api/v1/tokens", `{"name":"x","role":"root"}`), http.StatusBadRequest, CodeInvalidArgument, "role")
	wantError(t, env.as(testToken, "POST", "/api/v1/tokens", `{"name":"a b","role":"viewer"}`), http.StatusBadRequest, CodeInvalidArgument, "name")
	// The startup token keeps working.
	if rec := env.as(testToken, "GET", "/api/v1/tokens", ""); rec.Code != http.StatusOK {
		t.Fatalf("startup token: %d", rec.Code)
	}
}

// TestRevokedTokenEndsItsEventStream: an open event stream of a scoped
// token ends once the token is revoked (the one request that outlives a
// single check); the startup token's stream goes on.
func TestRevokedTokenEndsItsEventStream(t *testing.T) {
	old := TokenRecheck
	TokenRecheck = 100 * time.Millisecond
	t.Cleanup(func() { TokenRecheck = old })
	env := newAccessEnv(t)
	srv := httptest.NewServer(env.e)
	t.Cleanup(srv.Close)
	open := func(secret string) (*http.Response, *bufio.Reader) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/events/stream", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := srv.Client().Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("open stream: %v %v", err, resp)
		}
		t.Cleanup(func() { resp.Body.Close() })
		br := bufio.NewReader(resp.Body)
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
			t.Fatalf("stream starts %q %v", line, err)
		}
		if line, err := br.ReadString('\n'); err != nil || line != "\n" {
			t.Fatalf("stream's first message ends with %q %v", line, err)
		}
		return resp, br
	}
	_, viewerStream := open(env.secrets[RoleViewer])
	_, adminStream := open(testToken)
	if rec := env.as(testToken, "DELETE", "/api/v1/tokens/viewer-1", ""); rec.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", rec.Code, rec.Body)
	}
	ended := make(chan error, 1)
	go func() { _, err := io.ReadAll(viewerStream); ended <- err }()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked token's event stream is still open after 5 s")
	}
	// The startup token's stream is still open: nothing more arrives, and
	// no EOF, within a few rechecks.
	got := make(chan error, 1)
	go func() { _, err := adminStream.ReadByte(); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("the startup token's stream ended or sent data: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestAuditWriteFailureIsCounted: with the store gone, a change is
// answered (503) but its audit entry cannot be written: the API counts it
// in satoru_api_audit_write_errors_total (alert SatoruAuditWriteFailing).
// The startup token still authenticates; a scoped one cannot be checked
// and is refused with 503, never let through.
func TestAuditWriteFailureIsCounted(t *testing.T) {
	env := newAccessEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := env.store.Close(ctx); err != nil {
		t.Fatal(err)
	}
	wantError(t, env.as(testToken, "POST", "/api/v1/sites", `{"name":"edge-1","host":"h","user":"u"}`), http.StatusServiceUnavailable, CodeUnavailable, "store")
	wantError(t, env.as(env.secrets[RoleAdmin], "GET", "/api/v1/sites", ""), http.StatusServiceUnavailable, CodeUnavailable, "cannot check the token")
	mf, err := env.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64 = -1
	for _, f := range mf {
		if f.GetName() == "satoru_api_audit_write_errors_total" {
			got = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if got != 1 {
		t.Errorf("satoru_api_audit_write_errors_total = %v, want 1", got)
	}
}

// TestAuditTrail: changes, jobs started by hand, restores and downloads
// are recorded with who, when, from where, what and the outcome, and no
// secret; reads are not; the listing filters and pages.
func TestAuditTrail(t *testing.T) {
	env := newAccessEnv(t)
	start := time.Now().Add(-time.Second)
	site := decode[SiteDetail](t, env.as(env.secrets[RoleAdmin], "POST", "/api/v1/sites", `{"name":"edge-1","host":"h","user":"u"}`)).UUID
	S := "/api/v1/sites/" + site
	env.as(env.secrets[RoleViewer], "GET", S, "") // a read: not recorded
	job := decode[JobAccepted](t, env.as(env.secrets[RoleOperator], "POST", S+"/jobs", `{"type":"preflight"}`)).JobID
	env.as(env.secrets[RoleViewer], "POST", S+"/jobs", `{"type":"backup"}`) // refused: recorded as 403
	env.as(env.secrets[RoleOperator], "POST", S+"/restores", `{"snapshot_id":"abcdef12","paths":["/x"],"destination":{"to_site":true,"path":"/x"}}`)
	env.as(env.secrets[RoleOperator], "GET", "/api/v1/snapshots/abcdef12/download?path=/etc/x", "")
	env.as(testToken, "POST", S+"/targets", `{"mode":"directory","path":"/srv"}`)
	made := decode[TokenCreated](t, env.as(testToken, "POST", "/api/v1/tokens", `{"name":"ci","role":"operator"}`))
	env.as(testToken, "DELETE", "/api/v1/tokens/ci", "")
	env.as(testToken, "DELETE", S, "")

	all := env.audit("")
	raw, _ := json.Marshal(all)
	for _, s := range append([]string{made.Secret, testToken}, env.secrets[RoleAdmin], env.secrets[RoleOperator]) {
		if strings.Contains(string(raw), s) {
			t.Fatalf("the audit trail holds a secret: %s", raw)
		}
	}
	// Newest first: the 3 token.create of newAccessEnv are the oldest.
	var actions []string
	for _, e := range all.Entries {
		actions = append(actions, e.Action+":"+e.Token+":"+itoa(e.Status))
	}
	want := []string{
		"site.delete:startup:204", "token.revoke:startup:204", "token.create:startup:201", "target.create:startup:201",
		"snapshot.download:operator-1:503", "restore.create:operator-1:403", "job.start:viewer-1:403", "job.start:operator-1:202",
		"site.create:admin-1:201", "token.create:startup:201", "token.create:startup:201", "token.create:startup:201",
	}
	if !reflect.DeepEqual(actions, want) {
		t.Fatalf("audit actions\n got %q\nwant %q", actions, want)
	}
	byAction := map[string]store.AuditEntry{}
	for i := len(all.Entries) - 1; i >= 0; i-- {
		byAction[all.Entries[i].Action+":"+itoa(all.Entries[i].Status)] = all.Entries[i]
	}
	for _, e := range all.Entries {
		if e.Remote != "192.0.2.1" || e.At.Before(start) || e.At.After(time.Now()) || e.ID == "" || e.RequestID == "" {
			t.Errorf("entry %s: remote %q at %v id %q request_id %q", e.Action, e.Remote, e.At, e.ID, e.RequestID)
		}
	}
	if e := byAction["site.create:201"]; e.SiteUUID != site || e.Role != "admin" || e.Method != "POST" || e.Route != "/api/v1/sites" {
		t.Errorf("site.create = %+v", e)
	}
	if e := byAction["job.start:202"]; e.SiteUUID != site || e.IDs["job_id"] != job || e.Detail["type"] != "preflight" {
		t.Errorf("job.start = %+v", e)
	}
	if e := byAction["restore.create:403"]; e.Detail["destination"] != "site" || e.Detail["snapshot_id"] != "abcdef12" || e.SiteUUID != site {
		t.Errorf("restore.create = %+v", e)
	}
	if e := byAction["snapshot.download:503"]; e.IDs["id"] != "abcdef12" || e.Detail["path"] != "/etc/x" {
		t.Errorf("snapshot.download = %+v", e)
	}
	if e := byAction["target.create:201"]; e.SiteUUID != site || e.Route != "/api/v1/sites/:site_uuid/targets" {
		t.Errorf("target.create = %+v", e)
	}
	if e := byAction["token.revoke:204"]; e.Detail["name"] != "ci" || e.IDs["token_id"] != made.ID {
		t.Errorf("token.revoke = %+v", e)
	}
	if e := all.Entries[2]; e.Detail["name"] != "ci" || e.Detail["role"] != "operator" || e.IDs["token_id"] != made.ID {
		t.Errorf("token.create = %+v", e)
	}

	// Filters.
	if got := env.audit("token=operator-1").Entries; len(got) != 3 {
		t.Errorf("token=operator-1: %d entries", len(got))
	}
	if got := env.audit("action=job.start").Entries; len(got) != 2 {
		t.Errorf("action=job.start: %d entries", len(got))
	}
	if got := env.audit("site_uuid=" + site).Entries; len(got) != 6 {
		t.Errorf("site_uuid: %d entries, want 6", len(got))
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if got := env.audit("since=" + url.QueryEscape(future)).Entries; len(got) != 0 {
		t.Errorf("since the future: %d entries", len(got))
	}
	if got := env.audit("until=" + url.QueryEscape(start.UTC().Format(time.RFC3339))).Entries; len(got) != 0 {
		t.Errorf("until before the test: %d entries", len(got))
	}
	// Pages of 5: 5, 5, 2, in order.
	var paged []string
	before := ""
	for i := 0; ; i++ {
		page := env.audit("limit=5&before=" + url.QueryEscape(before))
		for _, e := range page.Entries {
			paged = append(paged, e.ID)
		}
		if page.Next == "" || i > 5 {
			break
		}
		before = page.Next
	}
	var ids []string
	for _, e := range all.Entries {
		ids = append(ids, e.ID)
	}
	if !reflect.DeepEqual(paged, ids) {
		t.Errorf("pages %q\n  all %q", paged, ids)
	}
	wantError(t, env.as(testToken, "GET", "/api/v1/audit?limit=0", ""), http.StatusBadRequest, CodeInvalidArgument, "limit")
	wantError(t, env.as(testToken, "GET", "/api/v1/audit?since=yesterday", ""), http.StatusBadRequest, CodeInvalidArgument, "since")
}

func itoa(n int) string { return strconv.Itoa(n) }
