package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/policy"
)

// A site's policy (domain.SitePolicy): read and replaced as the
// sub-resource /sites/{uuid}/policy, or given as "policy" in POST /sites
// and PATCH /sites/{uuid} (where it replaces the whole policy).
//
// Manual jobs (POST /sites/{uuid}/jobs) and the policy:
//   - paused: allowed; the job is marked trigger "manual" with the
//     policy_note "started by hand while the site is paused".
//   - inside a maintenance window: refused with 409 maintenance_window,
//     naming the window and when it ends, unless the body has
//     "force": true; a forced job notes the window it overrode.
// Restores are not held by windows: a restore is what an operator needs
// most when something is already wrong.

// CodeMaintenanceWindow is the envelope code of a manual job refused
// inside a maintenance window.
const CodeMaintenanceWindow = "maintenance_window"

// PolicyView is the answer of GET and PUT /sites/{uuid}/policy: the
// site's policy (all fields empty when it has none) and what it means
// now.
type PolicyView struct {
	SiteUUID string            `json:"site_uuid"`
	Policy   domain.SitePolicy `json:"policy"`
	// InWindow names the maintenance window the site is in now, if any,
	// and WindowEndsAt when it ends.
	InWindow     string     `json:"in_window,omitempty"`
	WindowEndsAt *time.Time `json:"window_ends_at,omitempty"`
	// NextCronRuns are the next runs of a cron schedule (up to 3), so an
	// operator sees what the expression and the zone mean.
	NextCronRuns []time.Time `json:"next_cron_runs,omitempty"`
}

// ValidatePolicy checks and normalises a policy (days as mon..sun,
// trimmed texts). prefix is put before every field name in errors
// ("policy." in a site body, "" for the sub-resource). A policy that
// overrides nothing becomes nil.
func ValidatePolicy(p *domain.SitePolicy, prefix string) (*domain.SitePolicy, *Error) {
	if p.IsZero() {
		return nil, nil
	}
	out := *p
	out.PausedReason = strings.TrimSpace(out.PausedReason)
	if out.Schedule != nil {
		sc := *out.Schedule
		sc.Cron, sc.Timezone = strings.Join(strings.Fields(sc.Cron), " "), strings.TrimSpace(sc.Timezone)
		out.Schedule = &sc
	}
	if out.Retention != nil {
		r := *out.Retention
		out.Retention = &r
	}
	out.MaintenanceWindows = make([]domain.MaintenanceWindow, len(p.MaintenanceWindows))
	for i, w := range p.MaintenanceWindows {
		w.Name, w.Timezone = strings.TrimSpace(w.Name), strings.TrimSpace(w.Timezone)
		days := make([]string, 0, len(w.Days))
		for _, d := range w.Days {
			days = append(days, dayName(d))
		}
		if len(days) == 0 {
			days = nil
		}
		w.Days = days
		out.MaintenanceWindows[i] = w
	}
	if len(out.MaintenanceWindows) == 0 {
		out.MaintenanceWindows = nil
	}
	if _, err := policy.Compile(&out); err != nil {
		return nil, invalid("%s%s", prefix, err.Error())
	}
	return &out, nil
}

// dayName reads "Monday", "MON", " mon " as "mon"; anything else is kept
// for the validation to name.
func dayName(d string) string {
	d = strings.ToLower(strings.TrimSpace(d))
	if len(d) > 3 && strings.HasSuffix(d, "day") {
		switch short := d[:3]; short {
		case "mon", "tue", "wed", "thu", "fri", "sat", "sun":
			return short
		}
	}
	return d
}

func (s *server) policyView(site domain.Site) PolicyView {
	v := PolicyView{SiteUUID: site.UUID}
	if site.Policy != nil {
		v.Policy = *site.Policy
	}
	c, err := policy.Compile(site.Policy)
	if err != nil {
		return v
	}
	now := s.now()
	if w, end, in := c.Windows.At(now); in {
		v.InWindow, v.WindowEndsAt = w.Label(), &end
	}
	if c.Cron != nil {
		for at := now; len(v.NextCronRuns) < 3; {
			if at = c.Cron.Next(at); at.IsZero() {
				break
			}
			v.NextCronRuns = append(v.NextCronRuns, at.UTC())
		}
	}
	return v
}

func (s *server) getPolicy(ctx context.Context, uuid string) (PolicyView, error) {
	site, err := s.store.GetSite(ctx, uuid)
	if err != nil {
		return PolicyView{}, storeError(err, siteNotFound(uuid), "")
	}
	return s.policyView(site), nil
}

func (s *server) putPolicy(ctx context.Context, uuid string, in domain.SitePolicy) (PolicyView, error) {
	p, verr := ValidatePolicy(&in, "")
	if verr != nil {
		return PolicyView{}, verr
	}
	site, err := s.store.GetSite(ctx, uuid)
	if err != nil {
		return PolicyView{}, storeError(err, siteNotFound(uuid), "")
	}
	site.Policy = p
	site.UpdatedAt = s.now().UTC()
	err = s.store.ReplaceSite(ctx, site)
	s.siteLists.invalidate()
	if err != nil {
		return PolicyView{}, storeError(err, siteNotFound(uuid), "")
	}
	s.log.Info("api: site policy replaced", "site_uuid", uuid, "paused", p != nil && p.Paused)
	return s.policyView(site), nil
}

// manualJobPolicy checks a manual job of site against its policy and
// returns the job's policy note.
func (s *server) manualJobPolicy(site domain.Site, force bool) (string, *Error) {
	c, err := policy.Compile(site.Policy)
	if err != nil {
		// Stored policies were validated; one that no longer compiles (a
		// zone gone from the database) does not block a manual job.
		s.log.Warn("api: site policy unusable", "site_uuid", site.UUID, "err", err)
	}
	var notes []string
	if c.Paused {
		notes = append(notes, "started by hand while the site is paused")
	}
	if w, end, in := c.Windows.At(s.now()); in {
		if !force {
			return "", &Error{Status: http.StatusConflict, Code: CodeMaintenanceWindow, Message: fmt.Sprintf(
				"site %q is in maintenance window %s until %s; no job starts then. Send \"force\": true to start it anyway",
				site.Name, w.Label(), end.UTC().Format(time.RFC3339))}
		}
		notes = append(notes, fmt.Sprintf("%s %s", policy.NoteForcedWindow, w.Label()))
	}
	return strings.Join(notes, "; "), nil
}

func (s *server) handleGetPolicy(c echo.Context) error {
	out, err := s.getPolicy(c.Request().Context(), c.Param("site_uuid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *server) handlePutPolicy(c echo.Context) error {
	var in domain.SitePolicy
	if err := decodeJSON(c, &in); err != nil {
		return err
	}
	out, err := s.putPolicy(c.Request().Context(), c.Param("site_uuid"), in)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}
