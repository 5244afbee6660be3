package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

const testToken = "tok-Zq8v-secret"

var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

type harness struct {
	t     *testing.T
	store *fakeStore
	disp  *fakeDispatcher
	calls []string
	e     *echo.Echo
	logs  bytes.Buffer
	ids   int
}

func newHarness(t *testing.T, opts ...func(*Deps)) *harness {
	t.Helper()
	h := &harness{t: t}
	h.store = newFakeStore(&h.calls)
	h.disp = &fakeDispatcher{log: &h.calls}
	d := Deps{
		Store:      h.store,
		Dispatcher: h.disp,
		Token:      testToken,
		Registry:   prometheus.NewRegistry(),
		Log:        slog.New(slog.NewTextHandler(&h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:        func() time.Time { return testNow },
		NewID: func() string {
			h.ids++
			return fmt.Sprintf("id-%d", h.ids)
		},
	}
	for _, o := range opts {
		o(&d)
	}
	h.e = New(d)
	return h
}

func (h *harness) request(method, path, body string, header map[string]string) *httptest.ResponseRecorder {
	h.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.e.ServeHTTP(rec, req)
	return rec
}

// do sends an authenticated request.
func (h *harness) do(method, path, body string) *httptest.ResponseRecorder {
	h.t.Helper()
	return h.request(method, path, body, map[string]string{"Authorization": "Bearer " + testToken})
}

func decode[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
	return v
}

// wantError checks status, the envelope's code and a message fragment.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code, msg string) {
	t.Helper()
	if rec.Code != status {
		t.Errorf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	var env struct {
		Error *EnvelopeError `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	if err := dec.Decode(&env); err != nil || env.Error == nil {
		t.Fatalf("body %q is not the error envelope", rec.Body)
	}
	if env.Error.Code != code {
		t.Errorf("code = %q, want %q (message %q)", env.Error.Code, code, env.Error.Message)
	}
	if !strings.Contains(env.Error.Message, msg) {
		t.Errorf("message = %q, want it to contain %q", env.Error.Message, msg)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
}

func (h *harness) createSite(body string) SiteDetail {
	h.t.Helper()
	rec := h.do("POST", "/api/v1/sites", body)
	if rec.Code != http.StatusCreated {
		h.t.Fatalf("create site: %d %s", rec.Code, rec.Body)
	}
	return decode[SiteDetail](h.t, rec)
}

func TestEveryRouteNeedsTheToken(t *testing.T) {
	h := newHarness(t)
	public := map[string]bool{}
	for _, p := range PublicPaths {
		public[p] = true
	}
	seen := 0
	for _, r := range h.e.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		path := strings.NewReplacer(":site_uuid", "s1", ":target_hash", "t1", ":job_id", "j1").Replace(r.Path)
		t.Run(r.Method+" "+r.Path, func(t *testing.T) {
			for name, hdr := range map[string]map[string]string{
				"no header":    nil,
				"wrong token":  {"Authorization": "Bearer wrong"},
				"token prefix": {"Authorization": "Bearer " + testToken[:5]},
				"basic":        {"Authorization": "Basic " + testToken},
				"bare token":   {"Authorization": testToken},
			} {
				rec := h.request(r.Method, path, `{}`, hdr)
				if public[r.Path] {
					if rec.Code == http.StatusUnauthorized {
						t.Errorf("%s: public path answered 401", name)
					}
					continue
				}
				wantError(t, rec, http.StatusUnauthorized, CodeUnauthorized, "token")
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("%s: no WWW-Authenticate header", name)
				}
			}
		})
		if !public[r.Path] {
			seen++
		}
	}
	if seen < 13 {
		t.Errorf("only %d protected routes found", seen)
	}
	// Unknown paths reveal nothing without the token.
	wantError(t, h.request("GET", "/api/v1/nope", "", nil), http.StatusUnauthorized, CodeUnauthorized, "token")
	wantError(t, h.request("GET", "/healthz/x", "", nil), http.StatusUnauthorized, CodeUnauthorized, "token")
	// Nothing was written and the token never reached the log.
	if len(h.calls) != 0 {
		t.Errorf("unauthorized requests wrote: %v", h.calls)
	}
	rec := h.request("GET", "/api/v1/sites", "", map[string]string{"Authorization": "bearer " + testToken})
	if rec.Code != http.StatusOK {
		t.Errorf("lower-case scheme: %d", rec.Code)
	}
	if strings.Contains(h.logs.String(), testToken) || strings.Contains(h.logs.String(), testToken[:5]) {
		t.Errorf("the log shows the token:\n%s", h.logs.String())
	}
}

func TestEmptyTokenRefusesEverything(t *testing.T) {
	h := newHarness(t, func(d *Deps) { d.Token = "" })
	for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer "}, {"Authorization": "Bearer"}} {
		wantError(t, h.request("GET", "/api/v1/sites", "", hdr), http.StatusUnauthorized, CodeUnauthorized, "token")
	}
	if rec := h.request("GET", "/healthz", "", nil); rec.Code != http.StatusOK {
		t.Errorf("healthz = %d", rec.Code)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	t.Run("healthz", func(t *testing.T) {
		h := newHarness(t)
		rec := h.request("GET", "/healthz", "", nil)
		if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"status":"ok"}` {
			t.Errorf("healthz = %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("ready", func(t *testing.T) {
		h := newHarness(t, func(d *Deps) { d.Ready = []Checker{fakeChecker{name: "store"}, fakeChecker{name: "nats"}} })
		rec := h.request("GET", "/readyz", "", nil)
		got := decode[Readiness](t, rec)
		if rec.Code != 200 || got.Status != "ready" || len(got.Checks) != 2 || !got.Checks[0].OK || got.Checks[1].Name != "nats" {
			t.Errorf("readyz = %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("not ready", func(t *testing.T) {
		h := newHarness(t, func(d *Deps) {
			d.Ready = []Checker{fakeChecker{name: "store"}, fakeChecker{name: "nats", err: errors.New("nats: no servers at nats://u:pw@x")}}
		})
		rec := h.request("GET", "/readyz", "", nil)
		wantError(t, rec, http.StatusServiceUnavailable, CodeUnavailable, "not ready: nats")
		got := decode[Readiness](t, rec)
		if len(got.Checks) != 2 || !got.Checks[0].OK || got.Checks[1].OK || got.Checks[1].Error != "failed" {
			t.Errorf("checks = %+v", got.Checks)
		}
		if strings.Contains(rec.Body.String(), "pw@") {
			t.Errorf("readyz leaks the check's error: %s", rec.Body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		h := newHarness(t)
		h.do("GET", "/api/v1/sites", "")
		h.do("GET", "/api/v1/sites/nope", "")
		rec := h.request("GET", "/metrics", "", nil)
		body := rec.Body.String()
		for _, want := range []string{
			`satoru_api_requests_total{code="200",method="GET",route="/api/v1/sites"} 1`,
			`satoru_api_requests_total{code="404",method="GET",route="/api/v1/sites/:site_uuid"} 1`,
			`satoru_api_request_duration_seconds_bucket`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q:\n%s", want, body)
			}
		}
	})
	t.Run("second New on one registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		newHarness(t, func(d *Deps) { d.Registry = reg })
		newHarness(t, func(d *Deps) { d.Registry = reg }) // must not panic
	})
}

func TestEchoErrorsUseTheEnvelope(t *testing.T) {
	h := newHarness(t)
	wantError(t, h.do("GET", "/api/v1/nope", ""), http.StatusNotFound, CodeNotFound, "no such endpoint: GET /api/v1/nope")
	wantError(t, h.do("PUT", "/api/v1/sites", "{}"), http.StatusMethodNotAllowed, CodeInvalidArgument, "method PUT is not allowed")
	wantError(t, h.do("DELETE", "/api/v1/jobs/j1", ""), http.StatusMethodNotAllowed, CodeInvalidArgument, "not allowed")
}

func TestCreateSite(t *testing.T) {
	ed := testKey(t, "ssh-ed25519")
	tests := []struct {
		name  string
		body  string
		check func(t *testing.T, got SiteDetail)
	}{
		{"minimal", `{"name":"edge-1","host":"10.0.0.5","user":"backup"}`, func(t *testing.T, got SiteDetail) {
			want := domain.Site{UUID: "id-1", Name: "edge-1", Host: "10.0.0.5", Port: 22, User: "backup", CreatedAt: testNow, UpdatedAt: testNow}
			if got.Site != want {
				t.Errorf("site = %+v\nwant %+v", got.Site, want)
			}
			if got.Status.Health.Status != domain.HealthUnknown || got.Targets == nil || len(got.Targets) != 0 {
				t.Errorf("status %+v targets %v", got.Status, got.Targets)
			}
		}},
		{"full with targets", `{"name":"edge.2","host":"edge2.example.com","port":2222,"user":"_bk","ssh_key_path":"/etc/satoru/id_ed25519",
			"host_key":"[edge2.example.com]:2222 ssh-ed25519 ` + ed + `","trust_on_first_use":false,"bandwidth_limit_kbps":500,
			"targets":[{"mode":"directory","path":"/var/www/","excludes":["*.log","cache/"]},{"mode":"sqlite_dump","path":"/var/lib/app/db.sqlite"}]}`,
			func(t *testing.T, got SiteDetail) {
				if got.Port != 2222 || got.HostKey != "ssh-ed25519 "+ed || got.BandwidthLimitKbps != 500 || got.SSHKeyPath != "/etc/satoru/id_ed25519" {
					t.Errorf("site = %+v", got.Site)
				}
				if len(got.Targets) != 2 {
					t.Fatalf("targets = %+v", got.Targets)
				}
				t0 := got.Targets[1] // by path: /var/lib/... before /var/www
				if t0.Path != "/var/www" || t0.Mode != domain.ModeDirectory || t0.TargetHash != domain.TargetHash(domain.ModeDirectory, "/var/www") ||
					t0.SiteUUID != "id-1" || !reflect.DeepEqual(t0.Excludes, []string{"*.log", "cache/"}) || !t0.CreatedAt.Equal(testNow) {
					t.Errorf("target 0 = %+v", t0)
				}
			}},
		{"ipv6 in brackets, tofu", `{"name":"v6","host":"[2001:db8::1]","user":"root","trust_on_first_use":true}`, func(t *testing.T, got SiteDetail) {
			if got.Host != "2001:db8::1" || !got.TrustOnFirstUse {
				t.Errorf("site = %+v", got.Site)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			rec := h.do("POST", "/api/v1/sites", tc.body)
			if rec.Code != http.StatusCreated {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if loc := rec.Header().Get("Location"); loc != "/api/v1/sites/id-1" {
				t.Errorf("Location = %q", loc)
			}
			got := decode[SiteDetail](t, rec)
			tc.check(t, got)
			// What was stored is what was returned.
			again := decode[SiteDetail](t, h.do("GET", "/api/v1/sites/id-1", ""))
			if !reflect.DeepEqual(again, got) {
				t.Errorf("GET after POST:\n got %+v\nwant %+v", again, got)
			}
			var raw map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &raw)
			for _, k := range []string{"site_uuid", "name", "host", "port", "user", "status", "targets", "created_at"} {
				if _, ok := raw[k]; !ok {
					t.Errorf("response lacks %q: %s", k, rec.Body)
				}
			}
		})
	}
}

func TestCreateSiteRejects(t *testing.T) {
	ok := `"name":"a","host":"h","user":"u"`
	tests := []struct {
		name   string
		body   string
		status int
		msg    string
	}{
		{"empty body", ``, 400, "request body is empty"},
		{"malformed", `{"name":`, 400, "not valid JSON"},
		{"syntax", `{"name" "a"}`, 400, "not valid JSON"},
		{"array", `[]`, 400, "must be a JSON object"},
		{"trailing data", `{` + ok + `} {}`, 400, "unexpected data after the JSON object"},
		{"unknown field", `{` + ok + `,"nmae":"x"}`, 400, `unknown field "nmae"`},
		{"read-only field", `{` + ok + `,"site_uuid":"x"}`, 400, `unknown field "site_uuid"`},
		{"port as string", `{` + ok + `,"port":"22"}`, 400, "port: must be an integer, got a JSON string"},
		{"port fraction", `{` + ok + `,"port":22.5}`, 400, "port: must be an integer, got the number 22.5"},
		{"tofu as string", `{` + ok + `,"trust_on_first_use":"yes"}`, 400, "trust_on_first_use: must be true or false"},
		{"nested type", `{` + ok + `,"targets":[{"mode":"directory","path":5}]}`, 400, "path: must be a string"},
		{"unknown target field", `{` + ok + `,"targets":[{"mode":"directory","path":"/a","exclude":["x"]}]}`, 400, `unknown field "exclude"`},
		{"no name", `{"host":"h","user":"u"}`, 400, "name: required"},
		{"bad name", `{"name":"a b","host":"h","user":"u"}`, 400, `name: must be 1 to 128 characters`},
		{"long name", `{"name":"` + strings.Repeat("a", 129) + `","host":"h","user":"u"}`, 400, "name: must be 1 to 128"},
		{"no host", `{"name":"a","user":"u"}`, 400, "host: required"},
		{"dash host", `{"name":"a","host":"-oProxyCommand=x","user":"u"}`, 400, "host: must not start with '-'"},
		{"space host", `{"name":"a","host":"a b","user":"u"}`, 400, "host: must not contain spaces"},
		{"bad host", `{"name":"a","host":"a/b","user":"u"}`, 400, "host: must be a host name"},
		{"v4 in brackets", `{"name":"a","host":"[1.2.3.4]","user":"u"}`, 400, "host: brackets are only for IPv6"},
		{"port zero", `{` + ok + `,"port":0}`, 400, "port: must be between 1 and 65535, got 0"},
		{"port big", `{` + ok + `,"port":65536}`, 400, "port: must be between 1 and 65535"},
		{"no user", `{"name":"a","host":"h"}`, 400, "user: required"},
		{"bad user", `{"name":"a","host":"h","user":"-root"}`, 400, "user: must be a user name"},
		{"upper user", `{"name":"a","host":"h","user":"Root"}`, 400, "user: must be a user name"},
		{"relative key", `{` + ok + `,"ssh_key_path":"id_rsa"}`, 400, `ssh_key_path: must be an absolute path (starting with /) without NUL bytes or line breaks: path "id_rsa" is not absolute`},
		{"key path with a space", `{` + ok + `,"ssh_key_path":"/root/my key"}`, 400, `ssh_key_path: key path "/root/my key" contains whitespace, which ssh options and rsync -e cannot carry`},
		{"key path with a tab", `{` + ok + `,"ssh_key_path":"/root/a\tb"}`, 400, `ssh_key_path: key path "/root/a\tb" contains whitespace`},
		{"key path with a single quote", `{` + ok + `,"ssh_key_path":"/root/it's"}`, 400, `ssh_key_path: key path "/root/it's" contains a quote or backslash`},
		{"key path with a double quote", `{` + ok + `,"ssh_key_path":"/root/\"k\""}`, 400, `ssh_key_path: key path "/root/\"k\"" contains a quote or backslash`},
		{"key path with a backslash", `{` + ok + `,"ssh_key_path":"/root/a\\b"}`, 400, `ssh_key_path: key path "/root/a\\b" contains a quote or backslash`},
		{"key path with a percent", `{` + ok + `,"ssh_key_path":"/root/.ssh/id_%h"}`, 400, `ssh_key_path: key path "/root/.ssh/id_%h" contains '%', which ssh would expand`},
		{"key path from home", `{` + ok + `,"ssh_key_path":"~/.ssh/id_ed25519"}`, 400, `ssh_key_path: must be an absolute path`},
		{"key path too long", `{` + ok + `,"ssh_key_path":"/` + strings.Repeat("k", 4096) + `"}`, 400, `ssh_key_path: must be at most 4096 bytes`},
		{"bad host key", `{` + ok + `,"host_key":"ssh-ed25519 !!!"}`, 400, `host_key: ssh-ed25519 key is not valid base64 (accepted: "keytype base64`},
		{"host key type", `{` + ok + `,"host_key":"ssh-dss ` + testKey(t, "ssh-ed25519") + `"}`, 400, "host_key: unsupported key type ssh-dss"},
		{"negative bandwidth", `{` + ok + `,"bandwidth_limit_kbps":-1}`, 400, "bandwidth_limit_kbps: must be between 0"},
		{"target mode", `{` + ok + `,"targets":[{"mode":"tar","path":"/a"}]}`, 400, `targets[0].mode: must be "directory" or "sqlite_dump", got "tar"`},
		{"target no mode", `{` + ok + `,"targets":[{"path":"/a"}]}`, 400, `targets[0].mode: required`},
		{"target relative", `{` + ok + `,"targets":[{"mode":"directory","path":"/ok"},{"mode":"directory","path":"var/www"}]}`, 400, `targets[1].path: must be an absolute path (starting with /) without NUL bytes or line breaks: path "var/www" is not absolute`},
		{"target newline", `{` + ok + `,"targets":[{"mode":"directory","path":"/a\nb"}]}`, 400, `targets[0].path: must be an absolute path (starting with /) without NUL bytes or line breaks: path "/a\nb" contains a line break`},
		{"target cr", `{` + ok + `,"targets":[{"mode":"directory","path":"/a\rb"}]}`, 400, `targets[0].path: must be an absolute path (starting with /) without NUL bytes or line breaks: path "/a\rb" contains a line break`},
		{"target nul", `{` + ok + `,"targets":[{"mode":"directory","path":"/a\u0000b"}]}`, 400, "targets[0].path: must be an absolute path (starting with /) without NUL bytes or line breaks: path contains a NUL byte"},
		{"target empty", `{` + ok + `,"targets":[{"mode":"directory","path":""}]}`, 400, "targets[0].path: must be an absolute path (starting with /) without NUL bytes or line breaks: empty path"},
		{"target long", `{` + ok + `,"targets":[{"mode":"directory","path":"/` + strings.Repeat("a", 4096) + `"}]}`, 400, "targets[0].path: must be at most 4096 bytes"},
		{"exclude newline", `{` + ok + `,"targets":[{"mode":"directory","path":"/a","excludes":["x\ny"]}]}`, 400, `targets[0].excludes[0]: exclude pattern "x\ny" is empty or has a NUL or line break`},
		{"sqlite excludes", `{` + ok + `,"targets":[{"mode":"sqlite_dump","path":"/a.db","excludes":["x"]}]}`, 400, "targets[0].excludes: only directory targets"},
		{"duplicate targets", `{` + ok + `,"targets":[{"mode":"directory","path":"/a"},{"mode":"directory","path":"/a/"}]}`, 409, "targets[1]: duplicates targets[0]"},
		{"too large", `{"name":"` + strings.Repeat("a", maxBody) + `"}`, 413, "larger than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			code := map[int]string{400: CodeInvalidArgument, 409: CodeConflict, 413: CodeInvalidArgument}[tc.status]
			wantError(t, h.do("POST", "/api/v1/sites", tc.body), tc.status, code, tc.msg)
			if len(h.calls) != 0 {
				t.Errorf("a rejected request wrote: %v", h.calls)
			}
		})
	}
}

func TestCreateSiteConflictsAndRollback(t *testing.T) {
	t.Run("duplicate name", func(t *testing.T) {
		h := newHarness(t)
		h.createSite(`{"name":"edge-1","host":"h","user":"u"}`)
		wantError(t, h.do("POST", "/api/v1/sites", `{"name":"edge-1","host":"other","user":"u"}`), 409, CodeConflict, `a site named "edge-1" already exists`)
		if s, _, _ := h.store.counts(); s != 1 {
			t.Errorf("sites = %d", s)
		}
	})
	t.Run("target insert fails", func(t *testing.T) {
		h := newHarness(t)
		h.store.fail["AddTarget#after"] = errStoreDown // the second AddTarget fails
		rec := h.do("POST", "/api/v1/sites", `{"name":"a","host":"h","user":"u","targets":[{"mode":"directory","path":"/a"},{"mode":"directory","path":"/b"}]}`)
		wantError(t, rec, 503, CodeUnavailable, "store is unavailable")
		delete(h.store.fail, "AddTarget")
		if s, tg, _ := h.store.counts(); s != 0 || tg != 0 {
			t.Errorf("half-created site left: %d sites, %d targets; calls %v", s, tg, h.calls)
		}
		if strings.Contains(rec.Body.String(), "s3cr3t") || strings.Contains(rec.Body.String(), "mongodb") {
			t.Errorf("5xx leaks internals: %s", rec.Body)
		}
		if !strings.Contains(rec.Body.String(), "request id") {
			t.Errorf("5xx should carry the request id: %s", rec.Body)
		}
	})
}

func TestListAndGetSites(t *testing.T) {
	h := newHarness(t)
	h.createSite(`{"name":"b-site","host":"h","user":"u"}`)
	h.createSite(`{"name":"a-site","host":"h","user":"u","targets":[{"mode":"directory","path":"/x"}]}`)
	at := testNow.Add(-time.Hour)
	h.store.statuses["id-1"] = domain.SiteStatus{SiteUUID: "id-1", Health: domain.HealthState{Status: domain.HealthFailed, Message: "ssh: refused", UpdatedAt: at}, LastJobID: "j9"}

	rec := h.do("GET", "/api/v1/sites", "")
	got := decode[SiteList](t, rec)
	if rec.Code != 200 || len(got.Sites) != 2 {
		t.Fatalf("list = %d %s", rec.Code, rec.Body)
	}
	if got.Sites[0].Name != "a-site" || got.Sites[0].Status.Health.Status != domain.HealthUnknown {
		t.Errorf("site 0 = %+v", got.Sites[0])
	}
	if got.Sites[1].Status.Health.Status != domain.HealthFailed || got.Sites[1].Status.Health.Message != "ssh: refused" || got.Sites[1].Status.LastJobID != "j9" {
		t.Errorf("site 1 status = %+v", got.Sites[1].Status)
	}
	if strings.Contains(rec.Body.String(), `"targets"`) {
		t.Errorf("the list should not carry targets: %s", rec.Body)
	}
	one := decode[SiteDetail](t, h.do("GET", "/api/v1/sites/id-2", ""))
	if len(one.Targets) != 1 || one.Targets[0].Path != "/x" {
		t.Errorf("detail = %+v", one)
	}
	wantError(t, h.do("GET", "/api/v1/sites/nope", ""), 404, CodeNotFound, `site "nope" not found`)

	empty := newHarness(t)
	if body := strings.TrimSpace(empty.do("GET", "/api/v1/sites", "").Body.String()); body != `{"sites":[]}` {
		t.Errorf("empty list = %s", body)
	}
}

func TestPatchSite(t *testing.T) {
	ed := testKey(t, "ssh-ed25519")
	setup := func(t *testing.T) *harness {
		h := newHarness(t)
		h.createSite(`{"name":"edge-1","host":"h1","user":"u","port":2200,"bandwidth_limit_kbps":100,"host_key":"ssh-ed25519 ` + ed + `"}`)
		h.createSite(`{"name":"edge-2","host":"h2","user":"u"}`)
		h.calls = nil
		return h
	}
	t.Run("subset", func(t *testing.T) {
		h := setup(t)
		rec := h.do("PATCH", "/api/v1/sites/id-1", `{"host":"h1.example.com","port":null,"bandwidth_limit_kbps":0}`)
		got := decode[SiteDetail](t, rec)
		if rec.Code != 200 || got.Host != "h1.example.com" || got.Port != 2200 || got.BandwidthLimitKbps != 0 ||
			got.Name != "edge-1" || got.HostKey != "ssh-ed25519 "+ed || got.Targets == nil {
			t.Errorf("patch = %d %+v", rec.Code, got)
		}
		if !reflect.DeepEqual(h.calls, []string{"ReplaceSite id-1"}) {
			t.Errorf("calls = %v", h.calls)
		}
	})
	t.Run("no change writes nothing", func(t *testing.T) {
		h := setup(t)
		if rec := h.do("PATCH", "/api/v1/sites/id-1", `{}`); rec.Code != 200 || len(h.calls) != 0 {
			t.Errorf("patch {} = %d, calls %v", rec.Code, h.calls)
		}
	})
	bad := []struct {
		name, body string
		status     int
		code, msg  string
	}{
		{"rename taken", `{"name":"edge-2"}`, 409, CodeConflict, `a site named "edge-2" already exists`},
		{"bad port", `{"port":70000}`, 400, CodeInvalidArgument, "port: must be between 1 and 65535"},
		{"empty name", `{"name":""}`, 400, CodeInvalidArgument, "name: required"},
		{"targets", `{"targets":[]}`, 400, CodeInvalidArgument, "targets: cannot be changed with PATCH"},
		{"unknown field", `{"colour":"red"}`, 400, CodeInvalidArgument, `unknown field "colour"`},
		{"wrong type", `{"user":5}`, 400, CodeInvalidArgument, "user: must be a string"},
		{"bad host key", `{"host_key":"ssh-ed25519 ` + testKey(t, "ssh-rsa") + `"}`, 400, CodeInvalidArgument, "host_key: key says ssh-ed25519 but its blob is ssh-rsa"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			h := setup(t)
			before := h.store.sites["id-1"]
			wantError(t, h.do("PATCH", "/api/v1/sites/id-1", tc.body), tc.status, tc.code, tc.msg)
			if h.store.sites["id-1"] != before || len(h.calls) != 0 {
				t.Errorf("a rejected PATCH changed the site: %v", h.calls)
			}
		})
	}
	t.Run("unknown site", func(t *testing.T) {
		h := setup(t)
		wantError(t, h.do("PATCH", "/api/v1/sites/zzz", `{"port":23}`), 404, CodeNotFound, `site "zzz" not found`)
	})
	t.Run("clear optional fields", func(t *testing.T) {
		h := setup(t)
		got := decode[SiteDetail](t, h.do("PATCH", "/api/v1/sites/id-1", `{"host_key":"","trust_on_first_use":true}`))
		if got.HostKey != "" || !got.TrustOnFirstUse {
			t.Errorf("got %+v", got.Site)
		}
	})
}

func TestDeleteSite(t *testing.T) {
	h := newHarness(t)
	h.createSite(`{"name":"a","host":"h","user":"u","targets":[{"mode":"directory","path":"/a"}]}`)
	rec := h.do("DELETE", "/api/v1/sites/id-1", "")
	if rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Errorf("delete = %d %q", rec.Code, rec.Body)
	}
	if s, tg, _ := h.store.counts(); s != 0 || tg != 0 {
		t.Errorf("left %d sites %d targets", s, tg)
	}
	wantError(t, h.do("DELETE", "/api/v1/sites/id-1", ""), 404, CodeNotFound, "not found")
}

func TestTargets(t *testing.T) {
	h := newHarness(t)
	h.createSite(`{"name":"a","host":"h","user":"u"}`)
	rec := h.do("POST", "/api/v1/sites/id-1/targets", `{"mode":"sqlite_dump","path":"/var/lib/app.db"}`)
	tg := decode[domain.Target](t, rec)
	hash := domain.TargetHash(domain.ModeSQLiteDump, "/var/lib/app.db")
	if rec.Code != 201 || tg.TargetHash != hash || tg.SiteUUID != "id-1" || !tg.CreatedAt.Equal(testNow) {
		t.Fatalf("add = %d %s", rec.Code, rec.Body)
	}
	if _, ok := h.store.targets[domain.TargetID("id-1", hash)]; !ok {
		t.Errorf("target not stored under its TargetID")
	}
	wantError(t, h.do("POST", "/api/v1/sites/id-1/targets", `{"mode":"sqlite_dump","path":"/var/lib/./app.db"}`), 409, CodeConflict, "already has the sqlite_dump target")
	for _, tc := range []struct{ name, body, msg string }{
		{"relative", `{"mode":"directory","path":"data"}`, `path: must be an absolute path (starting with /) without NUL bytes or line breaks: path "data" is not absolute`},
		{"newline", `{"mode":"directory","path":"/a\n/b"}`, `path: must be an absolute path (starting with /) without NUL bytes or line breaks: path "/a\n/b" contains a line break`},
		{"mode", `{"mode":"Directory","path":"/a"}`, `mode: must be "directory" or "sqlite_dump"`},
		{"unknown field", `{"mode":"directory","path":"/a","site_uuid":"x"}`, `unknown field "site_uuid"`},
		{"excludes type", `{"mode":"directory","path":"/a","excludes":"x"}`, "excludes: must be an array"},
		{"exclude empty", `{"mode":"directory","path":"/a","excludes":[""]}`, `excludes[0]: exclude pattern "" is empty or has a NUL or line break`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.calls = nil
			wantError(t, h.do("POST", "/api/v1/sites/id-1/targets", tc.body), 400, CodeInvalidArgument, tc.msg)
			if len(h.calls) != 0 {
				t.Errorf("wrote %v", h.calls)
			}
		})
	}
	wantError(t, h.do("POST", "/api/v1/sites/nope/targets", `{"mode":"directory","path":"/a"}`), 404, CodeNotFound, `site "nope" not found`)
	wantError(t, h.do("GET", "/api/v1/sites/nope/targets", ""), 404, CodeNotFound, `site "nope" not found`)

	list := decode[TargetList](t, h.do("GET", "/api/v1/sites/id-1/targets", ""))
	if list.SiteUUID != "id-1" || len(list.Targets) != 1 || list.Targets[0].Path != "/var/lib/app.db" {
		t.Errorf("list = %+v", list)
	}
	if rec := h.do("DELETE", "/api/v1/sites/id-1/targets/"+hash, ""); rec.Code != 204 {
		t.Errorf("delete = %d %s", rec.Code, rec.Body)
	}
	wantError(t, h.do("DELETE", "/api/v1/sites/id-1/targets/"+hash, ""), 404, CodeNotFound, "has no target")
	if body := strings.TrimSpace(h.do("GET", "/api/v1/sites/id-1/targets", "").Body.String()); body != `{"site_uuid":"id-1","targets":[]}` {
		t.Errorf("empty list = %s", body)
	}
}

func TestCreateJob(t *testing.T) {
	t.Run("queued then published", func(t *testing.T) {
		h := newHarness(t)
		h.createSite(`{"name":"a","host":"h","user":"u"}`)
		h.calls = nil
		rec := h.do("POST", "/api/v1/sites/id-1/jobs", `{"type":"preflight"}`)
		if rec.Code != http.StatusAccepted || strings.TrimSpace(rec.Body.String()) != `{"job_id":"id-2","status":"queued"}` {
			t.Fatalf("create job = %d %s", rec.Code, rec.Body)
		}
		if loc := rec.Header().Get("Location"); loc != "/api/v1/jobs/id-2" {
			t.Errorf("Location = %q", loc)
		}
		if !reflect.DeepEqual(h.calls, []string{"InsertJob id-2", "Publish id-2"}) {
			t.Errorf("calls = %v, want insert before publish", h.calls)
		}
		want := domain.Job{ID: "id-2", SiteUUID: "id-1", Type: domain.JobPreflight, Status: domain.StatusQueued, Attempts: 0, CreatedAt: testNow,
			Trigger: domain.TriggerManual}
		if got := h.store.jobs["id-2"]; !reflect.DeepEqual(got, want) {
			t.Errorf("job = %+v\nwant %+v", got, want)
		}
		wantReq := events.JobRequest{V: 1, JobID: "id-2", SiteUUID: "id-1", Type: "preflight"}
		if len(h.disp.published) != 1 || h.disp.published[0] != wantReq {
			t.Errorf("published %+v", h.disp.published)
		}
	})
	bad := []struct {
		name, site, body string
		status           int
		code, msg        string
	}{
		{"unsupported", "id-1", `{"type":"restore"}`, 400, CodeInvalidArgument, `type: restore jobs are created with POST /api/v1/sites/{site_uuid}/restores`},
		{"nonsense", "id-1", `{"type":"x"}`, 400, CodeInvalidArgument, `type: unsupported job type "x" (supported: preflight, backup, retention, verify)`},
		{"missing", "id-1", `{}`, 400, CodeInvalidArgument, "type: required"},
		{"unknown field", "id-1", `{"type":"preflight","site_uuid":"id-1"}`, 400, CodeInvalidArgument, `unknown field "site_uuid"`},
		{"empty body", "id-1", ``, 400, CodeInvalidArgument, "request body is empty"},
		{"unknown site", "nope", `{"type":"preflight"}`, 404, CodeNotFound, `site "nope" not found`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.createSite(`{"name":"a","host":"h","user":"u"}`)
			h.calls = nil
			wantError(t, h.do("POST", "/api/v1/sites/"+tc.site+"/jobs", tc.body), tc.status, tc.code, tc.msg)
			if len(h.calls) != 0 {
				t.Errorf("wrote %v", h.calls)
			}
		})
	}
	t.Run("insert fails: nothing published", func(t *testing.T) {
		h := newHarness(t)
		h.createSite(`{"name":"a","host":"h","user":"u"}`)
		h.store.fail["InsertJob"] = errStoreDown
		wantError(t, h.do("POST", "/api/v1/sites/id-1/jobs", `{"type":"preflight"}`), 503, CodeUnavailable, "store is unavailable")
		if len(h.disp.published) != 0 || h.disp.attempts != 0 {
			t.Errorf("published without a job document")
		}
	})
	t.Run("publish fails: retried, then the job is marked failed", func(t *testing.T) {
		old := publishBackoff
		publishBackoff = []time.Duration{0, time.Millisecond, time.Millisecond}
		defer func() { publishBackoff = old }()
		h := newHarness(t)
		h.createSite(`{"name":"a","host":"h","user":"u"}`)
		h.disp.publishErr = errors.New("nats: timeout")
		rec := h.do("POST", "/api/v1/sites/id-1/jobs", `{"type":"preflight"}`)
		wantError(t, rec, 503, CodeUnavailable, "job id-2 could not be queued because the job queue is unavailable (it was marked failed)")
		if h.disp.attempts != 3 {
			t.Errorf("publish attempts = %d, want 3", h.disp.attempts)
		}
		j := h.store.jobs["id-2"]
		if j.Status != domain.StatusFailed || !strings.Contains(j.Error, "not dispatched") || j.FinishedAt == nil {
			t.Errorf("job = %+v", j)
		}
	})
	t.Run("publish fails without a JobFinisher: the job stays queued", func(t *testing.T) {
		old := publishBackoff
		publishBackoff = []time.Duration{0}
		defer func() { publishBackoff = old }()
		h := newHarness(t, func(d *Deps) { d.Store = plainStore{d.Store} })
		h.createSite(`{"name":"a","host":"h","user":"u"}`)
		h.disp.publishErr = errors.New("nats: no responders")
		wantError(t, h.do("POST", "/api/v1/sites/id-1/jobs", `{"type":"preflight"}`), 503, CodeUnavailable, "it stays queued")
		if h.store.jobs["id-2"].Status != domain.StatusQueued {
			t.Errorf("job = %+v", h.store.jobs["id-2"])
		}
	})
}

func TestJobsReadAndCancel(t *testing.T) {
	h := newHarness(t)
	for i, j := range []domain.Job{
		{ID: "j1", SiteUUID: "s1", Type: domain.JobPreflight, Status: domain.StatusSuccess},
		{ID: "j2", SiteUUID: "s1", Type: domain.JobBackup, Status: domain.StatusRunning},
		{ID: "j3", SiteUUID: "s2", Type: domain.JobPreflight, Status: domain.StatusQueued},
		{ID: "j4", SiteUUID: "s2", Type: domain.JobPreflight, Status: domain.StatusCanceled},
	} {
		j.CreatedAt = testNow.Add(time.Duration(i) * time.Minute)
		h.store.jobs[j.ID] = j
	}
	h.store.events["j1"] = []domain.JobEvent{{Seq: 0, Step: "preflight", Level: "info", Message: "ok", TS: testNow}}

	ids := func(l JobList) []string {
		var out []string
		for _, j := range l.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{"j4", "j3", "j2", "j1"}},
		{"?site_uuid=s1", []string{"j2", "j1"}},
		{"?type=preflight&status=queued", []string{"j3"}},
		{"?limit=2", []string{"j4", "j3"}},
		{"?site_uuid=none", nil},
	} {
		rec := h.do("GET", "/api/v1/jobs"+tc.query, "")
		if got := ids(decode[JobList](t, rec)); rec.Code != 200 || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("GET /jobs%s = %d %v, want %v", tc.query, rec.Code, got, tc.want)
		}
	}
	if body := h.do("GET", "/api/v1/jobs?site_uuid=none", "").Body.String(); !strings.Contains(body, `"jobs":[]`) {
		t.Errorf("empty job list = %s", body)
	}
	for _, tc := range []struct{ query, msg string }{
		{"?type=bogus", `type: must be one of preflight, backup, retention, restic_sync, restore, check, got "bogus"`},
		{"?status=done", `status: must be one of queued, running, success, warning, failed, canceled, got "done"`},
		{"?limit=0", `limit: must be an integer from 1 to 500, got "0"`},
		{"?limit=abc", `limit: must be an integer from 1 to 500, got "abc"`},
		{"?limit=501", `limit: must be an integer from 1 to 500`},
		{"?type=backup&type=preflight", "type: give it at most once"},
	} {
		wantError(t, h.do("GET", "/api/v1/jobs"+tc.query, ""), 400, CodeInvalidArgument, tc.msg)
	}

	got := decode[domain.Job](t, h.do("GET", "/api/v1/jobs/j2", ""))
	if got.ID != "j2" || got.Status != domain.StatusRunning {
		t.Errorf("job = %+v", got)
	}
	wantError(t, h.do("GET", "/api/v1/jobs/nope", ""), 404, CodeNotFound, `job "nope" not found`)

	evs := decode[JobEvents](t, h.do("GET", "/api/v1/jobs/j1/events", ""))
	if evs.JobID != "j1" || len(evs.Events) != 1 || evs.Events[0].Message != "ok" {
		t.Errorf("events = %+v", evs)
	}
	if body := strings.TrimSpace(h.do("GET", "/api/v1/jobs/j2/events", "").Body.String()); body != `{"job_id":"j2","events":[]}` {
		t.Errorf("no events = %s", body)
	}
	wantError(t, h.do("GET", "/api/v1/jobs/nope/events", ""), 404, CodeNotFound, `job "nope" not found`)

	// Cancel.
	h.calls = nil
	wantError(t, h.do("POST", "/api/v1/jobs/nope/cancel", ""), 404, CodeNotFound, "not found")
	wantError(t, h.do("POST", "/api/v1/jobs/j1/cancel", ""), 409, CodeConflict, "job j1 is already success")
	wantError(t, h.do("POST", "/api/v1/jobs/j4/cancel", ""), 409, CodeConflict, "already canceled")
	for _, id := range []string{"j2", "j3"} {
		rec := h.do("POST", "/api/v1/jobs/"+id+"/cancel", "")
		if rec.Code != 202 || strings.TrimSpace(rec.Body.String()) != `{"job_id":"`+id+`","cancel_requested":true}` {
			t.Errorf("cancel %s = %d %s", id, rec.Code, rec.Body)
		}
	}
	if !reflect.DeepEqual(h.calls, []string{"RequestCancel j2", "RequestCancel j3"}) {
		t.Errorf("calls = %v (the API must not write the job)", h.calls)
	}
	h.disp.cancelErr = errors.New("kv down")
	wantError(t, h.do("POST", "/api/v1/jobs/j3/cancel", ""), 503, CodeUnavailable, "could not request the cancel")
}

func TestStoreDownIs503WithoutInternals(t *testing.T) {
	for _, m := range []struct{ method, path, body, fail string }{
		{"GET", "/api/v1/sites", "", "ListSites"},
		{"GET", "/api/v1/sites/x", "", "GetSite"},
		{"POST", "/api/v1/sites", `{"name":"a","host":"h","user":"u"}`, "CreateSite"},
		{"GET", "/api/v1/jobs", "", "ListJobs"},
		{"GET", "/api/v1/jobs/x", "", "GetJob"},
	} {
		t.Run(m.fail, func(t *testing.T) {
			h := newHarness(t)
			h.store.fail[m.fail] = errStoreDown
			rec := h.do(m.method, m.path, m.body)
			wantError(t, rec, 503, CodeUnavailable, "the store is unavailable; try again later (request id ")
			if strings.Contains(rec.Body.String(), "s3cr3t") || strings.Contains(rec.Body.String(), "27017") {
				t.Errorf("leaks: %s", rec.Body)
			}
			if id := rec.Header().Get("X-Request-Id"); id == "" || !strings.Contains(rec.Body.String(), id) {
				t.Errorf("request id %q not in %s", id, rec.Body)
			}
		})
	}
}

func TestPanicIs500Envelope(t *testing.T) {
	h := newHarness(t)
	h.e.GET("/api/v1/boom", func(echo.Context) error { panic("kaboom") })
	wantError(t, h.do("GET", "/api/v1/boom", ""), 500, CodeInternal, "internal error (request id")
	if !strings.Contains(h.logs.String(), "kaboom") {
		t.Errorf("the panic was not logged")
	}
}
