package policy

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/satoru/satoru/shared/config"
	"github.com/satoru/satoru/shared/domain"
)

// Limits of a site policy.
const (
	MaxWindows         = 32
	MaxIntervalMinutes = 366 * 24 * 60
	MaxReasonLen       = 500
	MaxNameLen         = 100
)

// Compiled is a site policy ready to evaluate. The zero value follows the
// global settings and has no windows.
type Compiled struct {
	Paused bool
	// Interval overrides the backup interval when > 0; Cron when non-nil.
	// At most one is set.
	Interval time.Duration
	Cron     *Cron
	Windows  Windows
}

// Compile checks p and parses what the scheduler evaluates. A nil p is
// the zero Compiled. The error names the field ("schedule.cron",
// "maintenance_windows[1].end", "retention.keep_last", ...).
func Compile(p *domain.SitePolicy) (Compiled, error) {
	var c Compiled
	if p == nil {
		return c, nil
	}
	c.Paused = p.Paused
	if utf8.RuneCountInString(p.PausedReason) > MaxReasonLen {
		return c, fmt.Errorf("paused_reason: at most %d characters", MaxReasonLen)
	}
	if s := p.Schedule; s != nil {
		switch {
		case s.Cron != "" && s.IntervalMinutes != 0:
			return c, errors.New("schedule: give either interval_minutes or cron, not both")
		case s.Cron != "":
			cr, err := ParseCron(s.Cron, s.Timezone)
			if err != nil {
				return c, fmt.Errorf("schedule.cron: %w", err)
			}
			if cr.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
				return c, fmt.Errorf("schedule.cron: %q never matches a day", s.Cron)
			}
			c.Cron = cr
		case s.IntervalMinutes < 0 || s.IntervalMinutes > MaxIntervalMinutes:
			return c, fmt.Errorf("schedule.interval_minutes: must be between 1 and %d, got %d", MaxIntervalMinutes, s.IntervalMinutes)
		case s.IntervalMinutes > 0:
			if s.Timezone != "" {
				return c, errors.New("schedule.timezone: only with cron (an interval does not depend on the zone)")
			}
			c.Interval = time.Duration(s.IntervalMinutes) * time.Minute
		default:
			return c, errors.New("schedule: give interval_minutes (> 0) or cron, or leave schedule out to follow site_scan_interval_hours")
		}
	}
	if r := p.Retention; r != nil {
		if err := Retention(*r).Validate(); err != nil {
			return c, fmt.Errorf("retention.%w", err)
		}
	}
	if len(p.MaintenanceWindows) > MaxWindows {
		return c, fmt.Errorf("maintenance_windows: at most %d, got %d", MaxWindows, len(p.MaintenanceWindows))
	}
	for i, w := range p.MaintenanceWindows {
		if utf8.RuneCountInString(w.Name) > MaxNameLen {
			return c, fmt.Errorf("maintenance_windows[%d].name: at most %d characters", i, MaxNameLen)
		}
	}
	ws, err := ParseWindows(p.MaintenanceWindows)
	if err != nil {
		return c, err
	}
	c.Windows = ws
	return c, nil
}

// Retention is a site's retention override as the global config type, so
// both are validated and turned into restic arguments by one code.
func Retention(r domain.RetentionKeep) config.RetentionPolicy {
	return config.RetentionPolicy{KeepLast: r.KeepLast, KeepHourly: r.KeepHourly, KeepDaily: r.KeepDaily,
		KeepWeekly: r.KeepWeekly, KeepMonthly: r.KeepMonthly, KeepYearly: r.KeepYearly, KeepWithin: r.KeepWithin}
}

// Effective is the retention that applies to a site: its override when
// set, else global. site reports which.
func Effective(p *domain.SitePolicy, global config.RetentionPolicy) (r config.RetentionPolicy, site bool) {
	if p != nil && p.Retention != nil {
		return Retention(*p.Retention), true
	}
	return global, false
}

// cronSample is how many coming runs ExpectedGap looks at: enough to see
// a weekend in a weekday schedule.
const cronSample = 16

// ExpectedGap is the longest time a site's backups are expected to be
// apart from now on: its interval (or the global one), or the longest gap
// between a cron schedule's next runs, plus its longest maintenance
// window (a run due inside one waits for its end). Alerting on stale
// backups compares against it.
func (c Compiled) ExpectedGap(now time.Time, global time.Duration) time.Duration {
	gap := global
	switch {
	case c.Cron != nil:
		gap = 0
		prev := c.Cron.Next(now)
		for i := 0; i < cronSample && !prev.IsZero(); i++ {
			next := c.Cron.Next(prev)
			if next.IsZero() {
				break
			}
			gap = max(gap, next.Sub(prev))
			prev = next
		}
		if gap == 0 {
			gap = global
		}
	case c.Interval > 0:
		gap = c.Interval
	}
	var win time.Duration
	for _, w := range c.Windows {
		win = max(win, w.Length())
	}
	return gap + win
}
