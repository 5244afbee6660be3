package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	"github.com/labstack/echo/v4"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// decodeJSON reads the body as exactly one JSON object into dst, refusing
// unknown fields, wrong types, an empty body and trailing data, each with
// a message that names the field.
func decodeJSON(c echo.Context, dst any) error {
	r := c.Request()
	dec := json.NewDecoder(http.MaxBytesReader(c.Response(), r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return jsonError(err)
		}
		return invalid("request body: unexpected data after the JSON object")
	}
	return nil
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
