package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/labstack/echo/v4"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// decodeJSON reads the body as exactly one JSON object into dst. It is
// strict, so that what the API validated is what the client meant: the
// body must be declared `Content-Type: application/json` (415 otherwise),
// a key given twice is refused rather than "last one wins", a key must
// match its field exactly ("PORT" is not "port"), and unknown fields,
// wrong types, an empty body and trailing data are refused. Each message
// names the header, key or field.
func decodeJSON(c echo.Context, dst any) error {
	r := c.Request()
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return jsonError(err)
		}
		return invalid("request body: could not be read")
	}
	if len(body) == 0 {
		return jsonError(io.EOF)
	}
	if err := checkContentType(r.Header.Get(echo.HeaderContentType)); err != nil {
		return err
	}
	// Keys first: encoding/json would take the last of two equal keys and
	// match keys case-insensitively, without a word.
	if kerr := checkKeys(json.NewDecoder(bytes.NewReader(body)), reflect.TypeOf(dst), ""); kerr != nil {
		return kerr
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("request body: unexpected data after the JSON object")
	}
	return nil
}

// checkContentType accepts application/json, with parameters such as
// charset=utf-8.
func checkContentType(v string) *Error {
	mt, _, err := mime.ParseMediaType(v)
	if err == nil && mt == echo.MIMEApplicationJSON {
		return nil
	}
	got := "none"
	if v != "" {
		got = fmt.Sprintf("%q", clip(v))
	}
	return &Error{Status: http.StatusUnsupportedMediaType, Code: CodeInvalidArgument,
		Message: fmt.Sprintf("Content-Type: request bodies must be sent as application/json, got %s", got)}
}

// checkKeys walks one JSON value with t, the Go type it is decoded into,
// and refuses a key given twice in one object and a key that matches a
// struct field only case-insensitively. Keys are named by their path
// ("targets[0].path"). Syntax errors are left to the decoder, which
// describes them better: they return nil here.
func checkKeys(dec *json.Decoder, t reflect.Type, path string) *Error {
	tok, err := dec.Token()
	if err != nil {
		return nil
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch tok {
	case json.Delim('{'):
		var fields map[string]reflect.Type
		var elem reflect.Type
		if t != nil && t.Kind() == reflect.Struct {
			fields = bodyFields(t)
		} else if t != nil && t.Kind() == reflect.Map {
			elem = t.Elem()
		}
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil
			}
			key, _ := kt.(string)
			at := joinKey(path, key)
			if seen[key] {
				return invalid("%s: duplicate key; give each key once", at)
			}
			seen[key] = true
			child := elem
			if fields != nil {
				ft, exact := fields[key]
				if !exact {
					for name := range fields {
						if strings.EqualFold(name, key) {
							return invalid("%s: unknown field; keys are case-sensitive: did you mean %q?", at, joinKey(path, name))
						}
					}
				}
				child = ft
			}
			if kerr := checkKeys(dec, child, at); kerr != nil {
				return kerr
			}
		}
		_, _ = dec.Token() // '}'
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if kerr := checkKeys(dec, elem, fmt.Sprintf("%s[%d]", path, i)); kerr != nil {
				return kerr
			}
		}
		_, _ = dec.Token() // ']'
	}
	return nil
}

// bodyFields maps the JSON names of a struct's fields to their types, as
// encoding/json names them (the tag's name, else the field name; "-"
// skipped; untagged embedded structs flattened).
func bodyFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" && !strings.HasPrefix(tag, "-,") {
			continue
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			for k, v := range bodyFields(ft) {
				if _, ok := out[k]; !ok {
					out[k] = v
				}
			}
			continue
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

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func jsonError(err error) *Error {
	var (
		syntax  *json.SyntaxError
		typ     *json.UnmarshalTypeError
		tooBig  *http.MaxBytesError
		msg     = err.Error()
		unknown = "json: unknown field "
	)
	switch {
	case errors.Is(err, io.EOF):
		return invalid("request body is empty; send a JSON object")
	case errors.As(err, &tooBig):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: CodeInvalidArgument,
			Message: fmt.Sprintf("request body is larger than %d bytes", maxBody)}
	case errors.As(err, &syntax):
		return invalid("request body is not valid JSON: %s (at byte %d)", strings.TrimPrefix(syntax.Error(), "json: "), syntax.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("request body is not valid JSON: it ends too early")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return invalid("request body must be a JSON object, got %s", jsonKind(typ.Value))
		}
		return invalid("%s: must be %s, got %s", typ.Field, typeWord(typ.Type), jsonKind(typ.Value))
	case strings.HasPrefix(msg, unknown):
		return invalid("unknown field %s", strings.TrimPrefix(msg, unknown))
	}
	return invalid("request body is not valid JSON")
}

// jsonKind turns UnmarshalTypeError.Value ("string", "number 1.5") into
// words.
func jsonKind(v string) string {
	switch {
	case strings.HasPrefix(v, "number "):
		return "the number " + strings.TrimPrefix(v, "number ")
	case v == "number", v == "string", v == "object", v == "array":
		return "a JSON " + v
	case v == "bool":
		return "a boolean"
	}
	return v
}

func typeWord(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "a value"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "a " + t.Kind().String()
}
