package httpapi

import (
	"encoding/json"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
)

// openAPIPath turns an Echo route path into the document's form:
// ":param" becomes "{param}", a trailing "*" becomes "{path}".
func openAPIPath(p string) string {
	if strings.HasSuffix(p, "*") {
		p = strings.TrimSuffix(p, "*") + "{path}"
	}
	return regexp.MustCompile(`:([A-Za-z0-9_]+)`).ReplaceAllString(p, "{$1}")
}

type openAPIDocument struct {
	OpenAPI  string                                `json:"openapi"`
	Security []map[string][]string                 `json:"security"`
	Paths    map[string]map[string]json.RawMessage `json:"paths"`
}

var httpMethods = map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true, "head": true, "patch": true, "trace": true}

func loadOpenAPI(t *testing.T) (openAPIDocument, map[string]any) {
	t.Helper()
	var doc openAPIDocument
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	var raw map[string]any
	if err := json.Unmarshal(OpenAPI(), &raw); err != nil {
		t.Fatal(err)
	}
	return doc, raw
}

func TestOpenAPICoversEveryRoute(t *testing.T) {
	h := newHarness(t)
	doc, _ := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc.OpenAPI)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearerAuth"] == nil {
		t.Errorf("the default security is %v, want bearerAuth", doc.Security)
	}

	public := map[string]bool{}
	for _, p := range PublicPaths {
		public[openAPIPath(p)] = true
	}
	registered := map[string]bool{}
	for _, r := range h.e.Routes() {
		if r.Method == echo.RouteNotFound {
			continue
		}
		registered[strings.ToLower(r.Method)+" "+openAPIPath(r.Path)] = true
	}
	documented := map[string]bool{}
	for p, item := range doc.Paths {
		for m, raw := range item {
			if !httpMethods[m] {
				continue // "parameters", "summary"
			}
			documented[m+" "+p] = true
			var o struct {
				Security  *[]map[string][]string `json:"security"`
				Responses map[string]any         `json:"responses"`
			}
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatalf("%s %s: %v", m, p, err)
			}
			isPublic := o.Security != nil && len(*o.Security) == 0
			if isPublic != public[p] {
				t.Errorf("%s %s: documented public=%v, but PublicPaths says %v", m, p, isPublic, public[p])
			}
			if !public[p] && o.Responses["401"] == nil {
				t.Errorf("%s %s: a route that needs the token does not document 401", m, p)
			}
			if len(o.Responses) == 0 {
				t.Errorf("%s %s: no responses", m, p)
			}
		}
	}
	for _, k := range sortedKeys(registered) {
		if !documented[k] {
			t.Errorf("route %s is registered but not in openapi.json", k)
		}
	}
	for _, k := range sortedKeys(documented) {
		if !registered[k] {
			t.Errorf("openapi.json documents %s, which is not registered", k)
		}
	}
	if len(registered) < 25 {
		t.Errorf("only %d routes seen", len(registered))
	}
}

// TestOpenAPIPathParameters: every {param} of a path is declared as a
// path parameter of each of its operations.
func TestOpenAPIPathParameters(t *testing.T) {
	_, raw := loadOpenAPI(t)
	paths := raw["paths"].(map[string]any)
	for p, itemAny := range paths {
		item := itemAny.(map[string]any)
		want := regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(p, -1)
		for m, opAny := range item {
			if !httpMethods[m] {
				continue
			}
			declared := map[string]bool{}
			for _, src := range []any{item["parameters"], opAny.(map[string]any)["parameters"]} {
				list, _ := src.([]any)
				for _, pa := range list {
					pm := resolve(t, raw, pa).(map[string]any)
					if pm["in"] == "path" {
						declared[pm["name"].(string)] = true
						if pm["required"] != true {
							t.Errorf("%s %s: path parameter %s is not required", m, p, pm["name"])
						}
					}
				}
			}
			for _, w := range want {
				if !declared[w[1]] {
					t.Errorf("%s %s: path parameter {%s} is not declared", m, p, w[1])
				}
			}
			if len(declared) != len(want) {
				t.Errorf("%s %s: %d path parameters declared, the path has %d", m, p, len(declared), len(want))
			}
		}
	}
}

func TestOpenAPIRefsResolve(t *testing.T) {
	_, raw := loadOpenAPI(t)
	n := 0
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if r, ok := x["$ref"].(string); ok {
				n++
				if _, err := pointer(raw, r); err != "" {
					t.Errorf("%s: $ref %s: %s", at, r, err)
				}
			}
			for k, c := range x {
				walk(at+"/"+k, c)
			}
		case []any:
			for _, c := range x {
				walk(at+"[]", c)
			}
		}
	}
	walk("#", raw)
	if n < 50 {
		t.Errorf("only %d $refs found", n)
	}
}

// pointer resolves a local JSON pointer ("#/components/schemas/Site").
func pointer(root map[string]any, ref string) (any, string) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, "not a local reference"
	}
	var cur any = root
	for _, part := range strings.Split(rest, "/") {
		part = strings.NewReplacer("~1", "/", "~0", "~").Replace(part)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, "no object at " + part
		}
		if cur, ok = m[part]; !ok {
			return nil, "nothing at " + part
		}
	}
	return cur, ""
}

func resolve(t *testing.T, root map[string]any, v any) any {
	t.Helper()
	for i := 0; i < 10; i++ {
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		r, ok := m["$ref"].(string)
		if !ok {
			return v
		}
		var err string
		if v, err = pointer(root, r); err != "" {
			t.Fatalf("$ref %s: %s", r, err)
		}
	}
	t.Fatal("$ref loop")
	return nil
}

// TestOpenAPISchemasMatchTheGoTypes: the documented properties of each
// schema are exactly the JSON fields of the Go type the handlers write
// or read, recursively, so a field added or renamed in Go fails here
// until the document follows.
func TestOpenAPISchemasMatchTheGoTypes(t *testing.T) {
	_, raw := loadOpenAPI(t)
	for name, v := range map[string]any{
		"Error":          Envelope{},
		"Readiness":      Readiness{},
		"SiteDetail":     SiteDetail{},
		"SiteList":       SiteList{},
		"SiteInput":      SiteInput{},
		"TargetList":     TargetList{},
		"JobAccepted":    JobAccepted{},
		"JobList":        JobList{},
		"Job":            domain.Job{},
		"JobEvents":      JobEvents{},
		"CancelAccepted": CancelAccepted{},
		"StepEvent":      events.StepEvent{},
		"SyncView":       SyncView{},
		"HealthReport":   HealthReport{},
		"SnapshotList":   SnapshotList{},
		"Tree":           Tree{},
		"RestoreInput":   RestoreInput{},
		"ScheduleList":   ScheduleList{},
		"SyncInput":      SyncInput{},
		"PolicyView":     PolicyView{},
		"CheckView":      CheckView{},
		"CheckInput":     CheckInput{},
		"SnapshotDiff":   SnapshotDiff{},
	} {
		t.Run(name, func(t *testing.T) {
			matchSchema(t, raw, name, reflect.TypeOf(v), resolve(t, raw, map[string]any{"$ref": "#/components/schemas/" + name}))
		})
	}
	// The patch body is the create body without targets.
	patch := props(t, raw, resolve(t, raw, map[string]any{"$ref": "#/components/schemas/SitePatch"}))
	create := jsonFields(reflect.TypeOf(SiteInput{}))
	delete(create, "targets")
	if got, want := sortedKeys(patch), sortedKeys(create); !reflect.DeepEqual(got, want) {
		t.Errorf("SitePatch properties %v, want %v", got, want)
	}
}

var timeType = reflect.TypeOf(time.Time{})

func matchSchema(t *testing.T, root map[string]any, at string, typ reflect.Type, schema any) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	schema = resolve(t, root, schema)
	sm, _ := schema.(map[string]any)
	switch {
	case typ == timeType:
		if sm["type"] != "string" || sm["format"] != "date-time" {
			t.Errorf("%s: a time is documented as %v", at, schema)
		}
	case typ.Kind() == reflect.Struct:
		docProps := props(t, root, schema)
		goFields := jsonFields(typ)
		for _, k := range sortedKeys(goFields) {
			ps, ok := docProps[k]
			if !ok {
				t.Errorf("%s: field %q is not documented", at, k)
				continue
			}
			matchSchema(t, root, at+"."+k, goFields[k], ps)
		}
		for _, k := range sortedKeys(docProps) {
			if _, ok := goFields[k]; !ok {
				t.Errorf("%s: documented property %q is not a field of %s", at, k, typ)
			}
		}
	case typ.Kind() == reflect.Slice:
		if sm["type"] != "array" {
			t.Errorf("%s: a list is documented as %v", at, schema)
			return
		}
		matchSchema(t, root, at+"[]", typ.Elem(), sm["items"])
	case typ.Kind() == reflect.String:
		if sm["type"] != "string" {
			t.Errorf("%s: a string is documented as %v", at, schema)
		}
	case typ.Kind() == reflect.Bool:
		if sm["type"] != "boolean" {
			t.Errorf("%s: a boolean is documented as %v", at, schema)
		}
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		if sm["type"] != "integer" {
			t.Errorf("%s: an integer is documented as %v", at, schema)
		}
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		if sm["type"] != "number" {
			t.Errorf("%s: a number is documented as %v", at, schema)
		}
	case typ.Kind() == reflect.Map:
		if sm["type"] != "object" {
			t.Errorf("%s: a map is documented as %v", at, schema)
		}
	}
}

// props collects a schema's properties through allOf, oneOf and anyOf.
func props(t *testing.T, root map[string]any, schema any) map[string]any {
	t.Helper()
	out := map[string]any{}
	sm, _ := resolve(t, root, schema).(map[string]any)
	if p, ok := sm["properties"].(map[string]any); ok {
		for k, v := range p {
			out[k] = v
		}
	}
	for _, key := range []string{"allOf", "oneOf", "anyOf"} {
		list, _ := sm[key].([]any)
		for _, sub := range list {
			for k, v := range props(t, root, sub) {
				out[k] = v
			}
		}
	}
	return out
}

// jsonFields are the JSON object keys encoding/json writes for a struct
// type, with their types (embedded structs without a tag inlined).
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestOpenAPIServedWithoutToken(t *testing.T) {
	h := newHarness(t, func(d *Deps) { d.Token = "" }) // even with every /api/v1 route refused
	rec := h.request("GET", OpenAPIPath, "", nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s = %d %s", OpenAPIPath, rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil || doc["openapi"] == nil {
		t.Fatalf("body is not the document: %v", err)
	}
	// A path below it is not public.
	wantError(t, h.request("GET", OpenAPIPath+"/x", "", nil), http.StatusUnauthorized, CodeUnauthorized, "token")
}
