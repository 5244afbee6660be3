// Package web is the operator dashboard: static HTML, CSS and JavaScript
// embedded in the binary (no CDN, nothing fetched at runtime) and served
// by the API at "/" (the page) and "/ui/*" (its assets). The page holds no
// data: it asks for the API token and reads everything from /api/v1.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed assets
var assets embed.FS

// IndexPath and AssetsPrefix are where the API mounts the dashboard.
const (
	IndexPath    = "/"
	AssetsPrefix = "/ui/"
)

// Index serves the dashboard's page.
func Index() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := assets.ReadFile("assets/index.html")
		if err != nil {
			http.Error(w, "dashboard not built in", http.StatusInternalServerError)
			return
		}
		setHeaders(w)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(b) // the client went away: nothing left to tell it
	})
}

// Assets serves the files under AssetsPrefix.
func Assets() http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embed pattern guarantees the folder
	}
	files := http.StripPrefix(AssetsPrefix, http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setHeaders(w)
		// Files only: no folder listings.
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
}

// setHeaders keeps the page to its own origin: scripts, styles and
// fetches from this server only, and no framing.
func setHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
}
