package policy

import (
	"strings"
	"testing"
	"time"
)

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("load Europe/Berlin: %v", err)
	}
	return loc
}

func TestParseCronErrors(t *testing.T) {
	cases := []struct{ name, expr, tz, want string }{
		{"four fields", "0 2 * *", "", "want 5 fields"},
		{"minute out of range", "60 2 * * *", "", "minute field"},
		{"hour out of range", "0 24 * * *", "", "hour field"},
		{"bad step", "*/0 * * * *", "", "step"},
		{"backwards range", "0 5-2 * * *", "", "start after end"},
		{"bad name", "0 0 * * funday", "", "day-of-week field"},
		{"empty list entry", "0,,5 * * * *", "", "empty list entry"},
		{"unknown zone", "0 2 * * *", "Mars/Olympus", "unknown IANA zone"},
		{"path as zone", "0 2 * * *", "/etc/localtime", "not an IANA zone name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCron(tc.expr, tc.tz)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseCron(%q, %q) = %v, want an error with %q", tc.expr, tc.tz, err, tc.want)
			}
		})
	}
}

func TestCronNext(t *testing.T) {
	utc := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name, expr, tz, after, want string
	}{
		{"daily later today", "30 2 * * *", "", "2026-06-01T01:00:00Z", "2026-06-01T02:30:00Z"},
		{"daily strictly after", "30 2 * * *", "", "2026-06-01T02:30:00Z", "2026-06-02T02:30:00Z"},
		{"step minutes", "*/15 * * * *", "", "2026-06-01T10:16:00Z", "2026-06-01T10:30:00Z"},
		{"list and range", "0 1,13-14 * * *", "", "2026-06-01T13:00:00Z", "2026-06-01T14:00:00Z"},
		{"weekday names", "0 3 * * mon-fri", "", "2026-06-05T04:00:00Z", "2026-06-08T03:00:00Z"}, // Fri -> Mon
		{"sunday as 7", "0 0 * * 7", "", "2026-06-01T00:00:00Z", "2026-06-07T00:00:00Z"},
		{"dom or dow when both set", "0 0 15 * mon", "", "2026-06-09T00:00:00Z", "2026-06-15T00:00:00Z"},
		{"month name", "0 0 1 jan *", "", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"leap day", "0 0 29 2 *", "", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"},
		{"macro daily", "@daily", "", "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z"},
		{"zone", "30 2 * * *", "Europe/Berlin", "2026-06-01T00:00:00Z", "2026-06-01T00:30:00Z"}, // CEST = UTC+2
		{"zone in winter", "30 2 * * *", "Europe/Berlin", "2026-01-10T00:00:00Z", "2026-01-10T01:30:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCron(tc.expr, tc.tz)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Next(utc(tc.after)); !got.Equal(utc(tc.want)) {
				t.Fatalf("Next(%s) = %s, want %s", tc.after, got.UTC().Format(time.RFC3339), tc.want)
			}
		})
	}
	t.Run("never matches", func(t *testing.T) {
		c, err := ParseCron("0 0 31 2 *", "")
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Next(utc("2026-01-01T00:00:00Z")); !got.IsZero() {
			t.Fatalf("Next = %s, want zero", got)
		}
	})
}

// runs lists every run of c in [from, to).
func runs(c *Cron, from, to time.Time) []time.Time {
	var out []time.Time
	for at := c.Next(from.Add(-time.Nanosecond)); !at.IsZero() && at.Before(to); at = c.Next(at) {
		out = append(out, at)
	}
	return out
}

// Europe/Berlin 2026: the clock springs from 02:00 CET to 03:00 CEST on
// 29 March and falls from 03:00 CEST to 02:00 CET on 25 October.
func TestCronDST(t *testing.T) {
	loc := berlin(t)
	day := func(m time.Month, d int) (time.Time, time.Time) {
		from := time.Date(2026, m, d, 0, 0, 0, 0, loc)
		return from, time.Date(2026, m, d+1, 0, 0, 0, 0, loc)
	}
	cases := []struct {
		name  string
		expr  string
		month time.Month
		day   int
		want  []string // wall clock with zone abbreviation
	}{
		{"02:30 on the spring day runs once, when the gap ends", "30 2 * * *", time.March, 29, []string{"03:00 CEST"}},
		{"02:30 on the fall day runs once, at its first occurrence", "30 2 * * *", time.October, 25, []string{"02:30 CEST"}},
		{"02:30 the day before spring is normal", "30 2 * * *", time.March, 28, []string{"02:30 CET"}},
		{"02:30 the day after fall is normal", "30 2 * * *", time.October, 26, []string{"02:30 CET"}},
		{"every quarter hour in the skipped hour gives one run at 03:00", "*/15 2-3 * * *", time.March, 29,
			[]string{"03:00 CEST", "03:15 CEST", "03:30 CEST", "03:45 CEST"}},
		{"an hourly job on the fall day runs at each wall hour once", "0 1-3 * * *", time.October, 25,
			[]string{"01:00 CEST", "02:00 CEST", "03:00 CET"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCron(tc.expr, "Europe/Berlin")
			if err != nil {
				t.Fatal(err)
			}
			from, to := day(tc.month, tc.day)
			var got []string
			for _, at := range runs(c, from, to) {
				got = append(got, at.In(loc).Format("15:04 MST"))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("runs on %s %d = %v, want %v", tc.month, tc.day, got, tc.want)
			}
		})
	}
}

func TestWallTime(t *testing.T) {
	loc := berlin(t)
	cases := []struct {
		name    string
		m       time.Month
		d, h, i int
		want    string
	}{
		{"ordinary", time.June, 1, 12, 0, "2026-06-01T10:00:00Z"},
		{"skipped is the end of the gap", time.March, 29, 2, 30, "2026-03-29T01:00:00Z"},
		{"twice is the first", time.October, 25, 2, 30, "2026-10-25T00:30:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := WallTime(2026, tc.m, tc.d, tc.h, tc.i, loc)
			if got.UTC().Format(time.RFC3339) != tc.want {
				t.Fatalf("WallTime = %s, want %s", got.UTC().Format(time.RFC3339), tc.want)
			}
		})
	}
}
