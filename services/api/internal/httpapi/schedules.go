package httpapi

import (
	"context"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/store"
)

// ScheduleList is the answer of GET /schedules: the scheduler's next
// runs, as it stores them (sorted by id).
type ScheduleList struct {
	Schedules []store.Schedule `json:"schedules"`
}

var errNoSchedules = unavailable(nil, "schedules are not available from this API")

// ParseScheduleQuery validates the optional site_uuid filter of
// GET /schedules.
func ParseScheduleQuery(q url.Values) (string, *Error) {
	v, given, err := oneParam(q, "site_uuid")
	if err != nil || !given {
		return "", err
	}
	if msg := bus.TokenProblem(v); msg != "" {
		return "", invalid("site_uuid: %s, got %q", msg, clip(v))
	}
	return v, nil
}

// listSchedules reads every schedule (one query; two per site plus the
// repository's) and keeps a site's when siteUUID is set.
func (s *server) listSchedules(ctx context.Context, siteUUID string) (ScheduleList, error) {
	if s.schedules == nil {
		return ScheduleList{}, errNoSchedules
	}
	all, err := s.schedules.ListSchedules(ctx)
	if err != nil {
		return ScheduleList{}, storeError(err, "", "")
	}
	out := make([]store.Schedule, 0, len(all))
	for _, sc := range all {
		if siteUUID == "" || sc.SiteUUID == siteUUID {
			out = append(out, sc)
		}
	}
	return ScheduleList{Schedules: out}, nil
}

func (s *server) handleListSchedules(c echo.Context) error {
	site, verr := ParseScheduleQuery(c.QueryParams())
	if verr != nil {
		return verr
	}
	out, err := s.listSchedules(c.Request().Context(), site)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}
