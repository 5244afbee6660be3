package httpapi

import (
	"net/http"
	"testing"
)

// TestStrictJSONBodies: what the API validates is what the client meant.
// A body must be declared JSON, a key may be given once, and a key must
// match its field exactly; every refusal names the header or the key.
func TestStrictJSONBodies(t *testing.T) {
	const site = `{"name":"a","host":"h","user":"u"}`
	tests := []struct {
		name, path, body, ctype string
		status                  int
		msg                     string
	}{
		{"no Content-Type", "/api/v1/sites", site, "", 415, "Content-Type: request bodies must be sent as application/json, got none"},
		{"text/plain", "/api/v1/sites", site, "text/plain", 415, `Content-Type: request bodies must be sent as application/json, got "text/plain"`},
		{"a form", "/api/v1/sites", site, "application/x-www-form-urlencoded", 415, "Content-Type:"},
		{"a JSON look-alike", "/api/v1/sites", site, "application/jsonp", 415, "Content-Type:"},
		{"a bad media type", "/api/v1/sites", site, "application/json; ;", 415, "Content-Type:"},
		{"the job endpoint too", "/api/v1/sites/x/jobs", `{"type":"backup"}`, "text/plain", 415, "Content-Type:"},
		{"the sync endpoint's optional body too", "/api/v1/sync", `{}`, "text/plain", 415, "Content-Type:"},
		{"a duplicate key", "/api/v1/sites", `{"name":"a","host":"h","user":"u","name":"b"}`, "application/json", 400, "name: duplicate key; give each key once"},
		{"a duplicate key inside a target", "/api/v1/sites", `{"name":"a","host":"h","user":"u","targets":[{"mode":"directory","path":"/a"},{"mode":"directory","path":"/b","path":"/etc"}]}`, "application/json", 400, "targets[1].path: duplicate key"},
		{"a duplicate key in a restore's destination", "/api/v1/sites/x/restores", `{"snapshot_id":"aaaaaaaa","paths":["/a"],"destination":{"local_path":"/r","local_path":"/etc"}}`, "application/json", 400, "destination.local_path: duplicate key"},
		{"a duplicate key with one value unknown", "/api/v1/sites", `{"name":"a","host":"h","user":"u","x":1,"x":2}`, "application/json", 400, "x: duplicate key"},
		{"an upper-case key", "/api/v1/sites", `{"name":"a","host":"h","user":"u","PORT":2222}`, "application/json", 400, `PORT: unknown field; keys are case-sensitive: did you mean "port"?`},
		{"a mixed-case nested key", "/api/v1/sites/x/restores", `{"snapshot_id":"aaaaaaaa","paths":["/a"],"destination":{"Local_Path":"/etc"}}`, "application/json", 400, `destination.Local_Path: unknown field; keys are case-sensitive: did you mean "destination.local_path"?`},
		{"a case-mismatched key in a target", "/api/v1/sites", `{"name":"a","host":"h","user":"u","targets":[{"Mode":"directory","path":"/a"}]}`, "application/json", 400, `targets[0].Mode: unknown field`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.calls = nil
			// request sets application/json for a body; the case's own
			// Content-Type (or none) replaces it.
			rec := h.request("POST", tc.path, tc.body, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": tc.ctype})
			wantError(t, rec, tc.status, CodeInvalidArgument, tc.msg)
			if len(h.calls) != 0 {
				t.Errorf("a refused body wrote: %v", h.calls)
			}
		})
	}

	t.Run("application/json with a charset is accepted", func(t *testing.T) {
		h := newHarness(t)
		rec := h.request("POST", "/api/v1/sites", site, map[string]string{"Authorization": "Bearer " + testToken, "Content-Type": "Application/JSON; charset=utf-8"})
		if rec.Code != http.StatusCreated {
			t.Errorf("create = %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("equal keys in different objects are fine", func(t *testing.T) {
		h := newHarness(t)
		rec := h.do("POST", "/api/v1/sites", `{"name":"a","host":"h","user":"u","targets":[{"mode":"directory","path":"/a"},{"mode":"directory","path":"/b"}]}`)
		if rec.Code != http.StatusCreated {
			t.Errorf("create = %d %s", rec.Code, rec.Body)
		}
	})
}
