package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(body)
}

// checkHeaders asserts the headers every dashboard answer carries.
func checkHeaders(t *testing.T, path string, res *http.Response) {
	t.Helper()
	want := map[string]string{
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "no-referrer",
	}
	if res.StatusCode == http.StatusOK {
		// Go's file server drops caching headers from its error answers.
		want["Cache-Control"] = "no-cache"
	}
	for k, v := range want {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s: %s = %q, want %q", path, k, got, v)
		}
	}
	csp := res.Header.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"} {
		if !strings.Contains(csp, d) {
			t.Errorf("%s: CSP %q lacks %q", path, csp, d)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "http") {
		t.Errorf("%s: CSP %q allows inline code or another origin", path, csp)
	}
}

func TestIndex(t *testing.T) {
	res, body := get(t, Index(), "/")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	checkHeaders(t, "/", res)
	for _, want := range []string{`<script src="/ui/app.js" defer></script>`, `href="/ui/app.css"`, `id="login-form"`, `id="view"`} {
		if !strings.Contains(body, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
}

func TestAssets(t *testing.T) {
	cases := []struct {
		name, path string
		code       int
		ctype      string
	}{
		{"script", "/ui/app.js", http.StatusOK, "text/javascript; charset=utf-8"},
		{"styles", "/ui/app.css", http.StatusOK, "text/css; charset=utf-8"},
		{"unknown file", "/ui/nope.js", http.StatusNotFound, ""},
		{"no folder listing", "/ui/", http.StatusNotFound, ""},
		{"no escape from the folder", "/ui/../web.go", http.StatusNotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, body := get(t, Assets(), tc.path)
			if res.StatusCode != tc.code {
				t.Fatalf("GET %s = %d, want %d", tc.path, res.StatusCode, tc.code)
			}
			checkHeaders(t, tc.path, res)
			if tc.ctype != "" {
				if ct := res.Header.Get("Content-Type"); ct != tc.ctype {
					t.Errorf("Content-Type = %q, want %q", ct, tc.ctype)
				}
				if len(body) < 100 {
					t.Errorf("%s is only %d bytes", tc.path, len(body))
				}
			}
		})
	}
}

// TestIndexReferencesOnlyLocalAssets keeps the page within the CSP: every
// src/href is a hash route, an embedded asset or the empty data: icon, and
// nothing is inline (the CSP would block it anyway, silently).
func TestIndexReferencesOnlyLocalAssets(t *testing.T) {
	page, err := assets.ReadFile("assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	refs := regexp.MustCompile(`\s(?:src|href)="([^"]*)"`).FindAllStringSubmatch(html, -1)
	if len(refs) < 3 {
		t.Fatalf("found only %d references in index.html", len(refs))
	}
	for _, m := range refs {
		ref := m[1]
		switch {
		case strings.HasPrefix(ref, "#/"), ref == "data:,":
		case strings.HasPrefix(ref, AssetsPrefix):
			if _, err := assets.ReadFile("assets/" + strings.TrimPrefix(ref, AssetsPrefix)); err != nil {
				t.Errorf("index.html references %s, which is not embedded", ref)
			}
		default:
			t.Errorf("index.html references %q: only %s assets, hash routes and data:, are allowed", ref, AssetsPrefix)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>[^<\s]`), // inline script body
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*</script>`),
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`),
	} {
		if loc := bad.FindStringIndex(html); loc != nil && !strings.Contains(html[loc[0]:loc[1]], `src="`) {
			t.Errorf("index.html has inline code or style: %q", html[loc[0]:loc[1]])
		}
	}
}

// TestScriptKeepsTheRules guards the rules the dashboard's script keeps:
// API data reaches the page as text only, the token stays in the tab's
// sessionStorage and in headers, and nothing is fetched from elsewhere.
func TestScriptKeepsTheRules(t *testing.T) {
	files := []string{"assets/app.js", "assets/app.css", "assets/index.html"}
	for _, f := range files {
		b, err := assets.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src := string(b)
		if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/`).FindString(src); m != "" {
			t.Errorf("%s references another origin: %q", f, m)
		}
		if !strings.HasSuffix(f, ".js") {
			continue
		}
		for _, banned := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage", "new EventSource", "token="} {
			if strings.Contains(src, banned) {
				t.Errorf("%s uses %q", f, banned)
			}
		}
		for _, need := range []string{"sessionStorage", "Authorization: 'Bearer '", "/api/v1/events/stream", "Last-Event-ID", "AbortController"} {
			if !strings.Contains(src, need) {
				t.Errorf("%s lacks %q", f, need)
			}
		}
	}
}
