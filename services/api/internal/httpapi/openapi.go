package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// OpenAPIPath serves the API's OpenAPI 3 document. It is public: it
// describes the routes and holds no data or secrets.
const OpenAPIPath = BasePath + "/openapi.json"

// openAPIDoc is the OpenAPI document of every route New registers;
// openapi_test.go fails when a route and the document disagree.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI document (a copy).
func OpenAPI() []byte { return append([]byte(nil), openAPIDoc...) }

func (s *server) handleOpenAPI(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPIDoc)
}
