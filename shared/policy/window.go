package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/domain"
)

// Window is a parsed maintenance window.
type Window struct {
	Name   string
	days   uint8 // bit i = weekday i (0 Sunday); 0x7f every day
	sh, sm int
	eh, em int
	loc    *time.Location
}

// ParseWindow checks w; the error names the bad key (days, start, end,
// timezone) without a prefix: the caller adds where w sits.
func ParseWindow(w domain.MaintenanceWindow) (Window, error) {
	out := Window{Name: w.Name}
	var err error
	if out.sh, out.sm, err = parseClock(w.Start, false); err != nil {
		return Window{}, fmt.Errorf("start: %w", err)
	}
	if out.eh, out.em, err = parseClock(w.End, true); err != nil {
		return Window{}, fmt.Errorf("end: %w", err)
	}
	if out.loc, err = LoadZone(w.Timezone); err != nil {
		return Window{}, fmt.Errorf("timezone: %w", err)
	}
	if len(w.Days) == 0 {
		out.days = 0x7f
	}
	for i, d := range w.Days {
		n, ok := dayNames[dayKey(d)]
		if !ok {
			return Window{}, fmt.Errorf("days[%d]: %q is not a day (mon, tue, wed, thu, fri, sat, sun)", i, d)
		}
		out.days |= 1 << uint(n)
	}
	return out, nil
}

// dayKey reads "Monday", "mon", "MON" as "mon".
func dayKey(d string) string {
	d = strings.ToLower(strings.TrimSpace(d))
	if len(d) > 3 {
		if full := map[string]bool{"monday": true, "tuesday": true, "wednesday": true, "thursday": true,
			"friday": true, "saturday": true, "sunday": true}; full[d] {
			return d[:3]
		}
	}
	return d
}

// parseClock reads "HH:MM" (00:00-23:59; "24:00" too when allow24).
func parseClock(s string, allow24 bool) (int, int, error) {
	hh, mm, ok := strings.Cut(s, ":")
	if !ok || len(hh) != 2 || len(mm) != 2 {
		return 0, 0, fmt.Errorf("want HH:MM, got %q", s)
	}
	h, err1 := strconv.Atoi(hh)
	m, err2 := strconv.Atoi(mm)
	if err1 != nil || err2 != nil || h < 0 || m < 0 || m > 59 || h > 24 || (h == 24 && (m != 0 || !allow24)) {
		return 0, 0, fmt.Errorf("want HH:MM between 00:00 and 23:59, got %q", s)
	}
	return h, m, nil
}

// Label names the window for messages: its name, or its times.
func (w Window) Label() string {
	times := fmt.Sprintf("%02d:%02d-%02d:%02d %s", w.sh, w.sm, w.eh, w.em, w.loc)
	if w.Name != "" {
		return fmt.Sprintf("%q (%s)", w.Name, times)
	}
	return times
}

// bounds is the window that starts on the local date y-m-d.
func (w Window) bounds(y int, m time.Month, d int) (start, end time.Time) {
	start = WallTime(y, m, d, w.sh, w.sm, w.loc)
	ed := d
	// End at or before start: the window crosses midnight.
	if w.eh*60+w.em <= w.sh*60+w.sm {
		ed++
	}
	day := time.Date(y, m, ed, 0, 0, 0, 0, time.UTC) // normalises the day
	ey, emo, edd := day.Date()
	if w.eh == 24 {
		day = day.AddDate(0, 0, 1)
		ey, emo, edd = day.Date()
		return start, WallTime(ey, emo, edd, 0, 0, w.loc)
	}
	return start, WallTime(ey, emo, edd, w.eh, w.em, w.loc)
}

// At reports whether t is inside the window and, if so, when the window
// (the occurrence t is in) ends.
func (w Window) At(t time.Time) (end time.Time, in bool) {
	l := t.In(w.loc)
	y, m, d := l.Date()
	// A window that started yesterday may still run (crossing midnight).
	for _, back := range []int{-1, 0} {
		day := time.Date(y, m, d+back, 0, 0, 0, 0, time.UTC)
		if w.days&(1<<uint(day.Weekday())) == 0 {
			continue
		}
		dy, dm, dd := day.Date()
		s, e := w.bounds(dy, dm, dd)
		if !t.Before(s) && t.Before(e) && (!in || e.After(end)) {
			end, in = e, true
		}
	}
	return end, in
}

// Windows are a site's parsed maintenance windows.
type Windows []Window

// ParseWindows parses all of ws; the error names the index.
func ParseWindows(ws []domain.MaintenanceWindow) (Windows, error) {
	out := make(Windows, 0, len(ws))
	for i, w := range ws {
		p, err := ParseWindow(w)
		if err != nil {
			return nil, fmt.Errorf("maintenance_windows[%d].%w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// At reports the window t is in (the one that ends last, when several
// overlap) and when it ends.
func (ws Windows) At(t time.Time) (w Window, end time.Time, in bool) {
	for _, x := range ws {
		if e, ok := x.At(t); ok && (!in || e.After(end)) {
			w, end, in = x, e, true
		}
	}
	return w, end, in
}

// Length is how long the window lasts on a day without a clock change.
func (w Window) Length() time.Duration {
	mins := (w.eh*60 + w.em - w.sh*60 - w.sm + 24*60) % (24 * 60)
	if mins == 0 {
		mins = 24 * 60 // start = end: a whole day
	}
	return time.Duration(mins) * time.Minute
}
