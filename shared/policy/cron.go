// Package policy evaluates a site's own policy (domain.SitePolicy): its
// cron schedule, its maintenance windows, and the validation the API
// applies before storing one. Everything is a pure function of the
// instant it is given; the time zones come from the Go time zone
// database.
package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed 5-field cron expression (minute hour day-of-month
// month day-of-week) read in a time zone.
//
// Daylight-saving rule (wall-clock times are what the operator wrote):
//   - each wall-clock time that matches runs at most once per day: when
//     the clock falls back and a time occurs twice, it runs at its first
//     occurrence only;
//   - a wall-clock time the clock skips (spring forward) runs once, at the
//     first instant after the gap (02:30 Europe/Berlin on the spring day
//     runs at 03:00 CEST); several skipped times give that one run.
type Cron struct {
	expr                     string
	loc                      *time.Location
	minute, hour, dom, month uint64 // bit i set = value i matches
	dow                      uint64 // 0 = Sunday .. 6
	domStar, dowStar         bool
}

var cronMacros = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

var monthNames = map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
	"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}

var dayNames = map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

// ParseCron parses expr in the IANA zone tz ("" = UTC). The error names
// the field that is wrong.
func ParseCron(expr, tz string) (*Cron, error) {
	loc, err := LoadZone(tz)
	if err != nil {
		return nil, err
	}
	text := strings.TrimSpace(expr)
	if m, ok := cronMacros[strings.ToLower(text)]; ok {
		text = m
	}
	f := strings.Fields(text)
	if len(f) != 5 {
		return nil, fmt.Errorf("cron %q: want 5 fields (minute hour day-of-month month day-of-week), got %d", expr, len(f))
	}
	c := &Cron{expr: strings.Join(f, " "), loc: loc}
	specs := []struct {
		name     string
		min, max int
		names    map[string]int
		dst      *uint64
	}{
		{"minute", 0, 59, nil, &c.minute},
		{"hour", 0, 23, nil, &c.hour},
		{"day-of-month", 1, 31, nil, &c.dom},
		{"month", 1, 12, monthNames, &c.month},
		{"day-of-week", 0, 7, dayNames, &c.dow},
	}
	for i, sp := range specs {
		bits, err := parseField(f[i], sp.min, sp.max, sp.names)
		if err != nil {
			return nil, fmt.Errorf("cron %q: %s field %q: %w", expr, sp.name, f[i], err)
		}
		*sp.dst = bits
	}
	if c.dow&(1<<7) != 0 { // 7 is Sunday too
		c.dow = c.dow&^(1<<7) | 1
	}
	c.domStar = f[2] == "*" || strings.HasPrefix(f[2], "*/")
	c.dowStar = f[4] == "*" || strings.HasPrefix(f[4], "*/")
	return c, nil
}

// LoadZone loads an IANA time zone; "" is UTC. The error says which zone.
func LoadZone(tz string) (*time.Location, error) {
	if tz == "" {
		return time.UTC, nil
	}
	if strings.ContainsAny(tz, "\x00\n") || strings.HasPrefix(tz, "/") || strings.Contains(tz, "..") {
		return nil, fmt.Errorf("time zone %q: not an IANA zone name", tz)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: unknown IANA zone: %w", tz, err)
	}
	return loc, nil
}

func parseField(s string, min, max int, names map[string]int) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			return 0, fmt.Errorf("empty list entry")
		}
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n < 1 {
				return 0, fmt.Errorf("step %q: want a positive integer", stepText)
			}
			step = n
		}
		lo, hi := min, max
		switch {
		case rng == "*":
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var err error
			if lo, err = value(a, min, max, names); err != nil {
				return 0, err
			}
			if hi, err = value(b, min, max, names); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("range %q: start after end", rng)
			}
		default:
			v, err := value(rng, min, max, names)
			if err != nil {
				return 0, err
			}
			lo, hi = v, v
			if hasStep { // "5/15" means 5-max/15, as in Vixie cron
				hi = max
			}
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

func value(s string, min, max int, names map[string]int) (int, error) {
	if v, ok := names[strings.ToLower(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q: not a number", s)
	}
	if v < min || v > max {
		return 0, fmt.Errorf("%d: out of range %d-%d", v, min, max)
	}
	return v, nil
}

// String is the expression as parsed (macros expanded) with its zone.
func (c *Cron) String() string { return c.expr + " " + c.loc.String() }

// Location is the zone the expression is read in.
func (c *Cron) Location() *time.Location { return c.loc }

// dayMatches applies cron's rule: when both day-of-month and day-of-week
// are restricted, a day matching either one matches.
func (c *Cron) dayMatches(y int, m time.Month, d int) bool {
	if c.month&(1<<uint(m)) == 0 {
		return false
	}
	wd := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Weekday()
	domOK := c.dom&(1<<uint(d)) != 0
	dowOK := c.dow&(1<<uint(wd)) != 0
	switch {
	case c.domStar && c.dowStar:
		return true
	case c.domStar:
		return dowOK
	case c.dowStar:
		return domOK
	}
	return domOK || dowOK
}

// maxCronDays bounds the search; a schedule such as "0 0 29 2 *" can wait
// eight years (leap years skip 2100), longer never matches.
const maxCronDays = 9 * 366

// Next is the first run strictly after t, or the zero time if the
// expression never matches (e.g. "0 0 31 2 *").
func (c *Cron) Next(t time.Time) time.Time {
	local := t.In(c.loc)
	// Start a day early: a gap-shifted run of the previous day's wall
	// times can fall after t.
	y, m, d := local.Date()
	for i := -1; i <= maxCronDays; i++ {
		day := time.Date(y, m, d+i, 0, 0, 0, 0, time.UTC)
		dy, dm, dd := day.Date()
		if !c.dayMatches(dy, dm, dd) {
			continue
		}
		for h := 0; h < 24; h++ {
			if c.hour&(1<<uint(h)) == 0 {
				continue
			}
			for mi := 0; mi < 60; mi++ {
				if c.minute&(1<<uint(mi)) == 0 {
					continue
				}
				if at := WallTime(dy, dm, dd, h, mi, c.loc); at.After(t) {
					return at
				}
			}
		}
	}
	return time.Time{}
}

// WallTime is the instant a wall-clock time (minute precision) in loc
// stands for: its first occurrence when the clock falls back and it
// occurs twice, the end of the gap when the clock springs forward over
// it.
func WallTime(y int, m time.Month, d, h, mi int, loc *time.Location) time.Time {
	naive := time.Date(y, m, d, h, mi, 0, 0, time.UTC)
	var best time.Time
	// The offsets in force around the wall time: a transition lies
	// between them, if any. Zones change offset far less often than
	// twice in two days.
	for _, probe := range []time.Time{naive.Add(-48 * time.Hour), naive, naive.Add(48 * time.Hour)} {
		_, off := probe.In(loc).Zone()
		at := naive.Add(-time.Duration(off) * time.Second)
		l := at.In(loc)
		ly, lm, ld := l.Date()
		if ly == y && lm == m && ld == d && l.Hour() == h && l.Minute() == mi && (best.IsZero() || at.Before(best)) {
			best = at
		}
	}
	if !best.IsZero() {
		return best
	}
	// Skipped: read with the offset before the gap it lands past the
	// gap; the zone it lands in starts where the gap ends.
	_, off := naive.Add(-48 * time.Hour).In(loc).Zone()
	start, _ := naive.Add(-time.Duration(off) * time.Second).In(loc).ZoneBounds()
	return start
}
