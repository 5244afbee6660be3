package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// Handlers: decode, call one use case, write the answer. Errors go to the
// error handler, which writes the envelope.

func (s *server) handleCreateSite(c echo.Context) error {
	var in SiteInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	out, err := s.createSite(c.Request().Context(), in)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, BasePath+"/sites/"+out.UUID)
	return c.JSON(http.StatusCreated, out)
}

func (s *server) handleListSites(c echo.Context) error {
	out, err := s.listSites(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleGetSite(c echo.Context) error {
	out, err := s.getSite(c.Request().Context(), c.Param("site_uuid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handlePatchSite(c echo.Context) error {
	var in SiteInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	out, err := s.patchSite(c.Request().Context(), c.Param("site_uuid"), in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleDeleteSite(c echo.Context) error {
	if err := s.deleteSite(c.Request().Context(), c.Param("site_uuid")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *server) handleAddTarget(c echo.Context) error {
	var in TargetInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	out, err := s.addTarget(c.Request().Context(), c.Param("site_uuid"), in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *server) handleListTargets(c echo.Context) error {
	out, err := s.listTargets(c.Request().Context(), c.Param("site_uuid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleDeleteTarget(c echo.Context) error {
	if err := s.deleteTarget(c.Request().Context(), c.Param("site_uuid"), c.Param("target_hash")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *server) handleCreateJob(c echo.Context) error {
	var in JobInput
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	auditDetail(c, "type", string(in.Type))
	out, err := s.createJob(c.Request().Context(), c.Param("site_uuid"), in)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, BasePath+"/jobs/"+out.JobID)
	return c.JSON(http.StatusAccepted, out)
}

func (s *server) handleListJobs(c echo.Context) error {
	f, verr := ParseJobQuery(c.QueryParams())
	if verr != nil {
		return verr
	}
	out, err := s.listJobs(c.Request().Context(), f)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleGetJob(c echo.Context) error {
	out, err := s.getJob(c.Request().Context(), c.Param("job_id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleJobEvents(c echo.Context) error {
	out, err := s.jobEvents(c.Request().Context(), c.Param("job_id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleCancelJob(c echo.Context) error {
	out, err := s.cancelJob(c.Request().Context(), c.Param("job_id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, out)
}

func (s *server) handleCreateSync(c echo.Context) error {
	var in SyncInput
	if err := decodeOptionalJSON(c, &in); err != nil {
		return err
	}
	out, err := s.createSync(c.Request().Context())
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, BasePath+"/jobs/"+out.JobID)
	return c.JSON(http.StatusAccepted, out)
}

func (s *server) handleGetSync(c echo.Context) error {
	out, err := s.getSync(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handleHealth(c echo.Context) error {
	out, err := s.health(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}
