package plan

import (
	"fmt"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNextSlot(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name     string
		t        string
		interval time.Duration
		offset   time.Duration
		want     string
	}{
		{"on a slot", "2026-11-25T03:00:00Z", day, 3 * time.Hour, "2026-11-25T03:00:00Z"},
		{"just after a slot", "2026-11-25T03:00:00.001Z", day, 3 * time.Hour, "2026-11-26T03:00:00Z"},
		{"before the day's slot", "2026-11-25T01:00:00Z", day, 3 * time.Hour, "2026-11-25T03:00:00Z"},
		{"offset zero, midnight", "2026-11-25T00:00:00Z", day, 0, "2026-11-25T00:00:00Z"},
		{"offset zero, after midnight", "2026-11-25T00:00:01Z", day, 0, "2026-11-26T00:00:00Z"},
		{"offset wraps past the interval", "2026-11-25T01:00:00Z", day, 27 * time.Hour, "2026-11-25T03:00:00Z"},
		{"hourly", "2026-11-25T10:20:00Z", time.Hour, 15 * time.Minute, "2026-11-25T11:15:00Z"},
		{"six hours", "2026-11-25T10:20:00Z", 6 * time.Hour, 90 * time.Minute, "2026-11-25T13:30:00Z"},
		{"instants, not wall clocks (02:00Z)", "2026-11-25T04:00:00+02:00", day, 3 * time.Hour, "2026-11-25T03:00:00Z"},
		{"before 1970", "1969-12-31T01:00:00Z", day, 3 * time.Hour, "1969-12-31T03:00:00Z"},
		{"before 1970, after the slot", "1969-12-31T04:00:00Z", day, 3 * time.Hour, "1970-01-01T03:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NextSlot(at(tc.t), tc.interval, tc.offset)
			if !got.Equal(at(tc.want)) {
				t.Errorf("NextSlot(%s, %s, %s) = %s, want %s", tc.t, tc.interval, tc.offset, got, tc.want)
			}
		})
	}
}

func TestNext(t *testing.T) {
	day := 24 * time.Hour
	off := 3 * time.Hour
	tests := []struct {
		name string
		now  string
		last string // "" = never ran
		want string
	}{
		{"never ran, slot later today", "2026-11-25T01:00:00Z", "", "2026-11-25T03:00:00Z"},
		{"never ran, slot passed today", "2026-11-25T05:00:00Z", "", "2026-11-26T03:00:00Z"},
		{"never ran, exactly on the slot", "2026-11-25T03:00:00Z", "", "2026-11-25T03:00:00Z"},
		{"ran on time", "2026-11-25T03:00:10Z", "2026-11-25T03:00:00Z", "2026-11-26T03:00:00Z"},
		{"ran at the slot's instant", "2026-11-25T03:00:00Z", "2026-11-25T03:00:00Z", "2026-11-26T03:00:00Z"},
		{"ran late the same day", "2026-11-25T22:00:00Z", "2026-11-25T03:00:00Z", "2026-11-26T03:00:00Z"},
		{"down three days: one run, then the next slot", "2026-11-28T12:00:00Z", "2026-11-25T03:00:00Z", "2026-11-29T03:00:00Z"},
		{"clock behind the last run", "2026-11-25T02:00:00Z", "2026-11-25T03:00:00Z", "2026-11-26T03:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var last time.Time
			if tc.last != "" {
				last = at(tc.last)
			}
			got := Next(at(tc.now), last, day, off)
			if !got.Equal(at(tc.want)) {
				t.Errorf("Next(%s, %q) = %s, want %s", tc.now, tc.last, got, tc.want)
			}
		})
	}
}

func TestOffset(t *testing.T) {
	day := 24 * time.Hour
	// Stable: the same key gives the same offset, every time.
	if a, b := Offset("site-a", day), Offset("site-a", day); a != b {
		t.Fatalf("offset not stable: %s vs %s", a, b)
	}
	if got := Offset("x", 0); got != 0 {
		t.Errorf("Offset with no interval = %s", got)
	}
	// Whole seconds within the interval, and spread: 1,000 sites over a
	// day land in every one of 24 hours, none with more than 3x its share.
	perHour := make([]int, 24)
	for i := range 1000 {
		o := Offset(fmt.Sprintf("00000000-0000-4000-8000-%012d", i), day)
		if o < 0 || o >= day || o%time.Second != 0 {
			t.Fatalf("offset %s out of [0, 24h) or not whole seconds", o)
		}
		perHour[o/time.Hour]++
	}
	for h, n := range perHour {
		if n == 0 || n > 3*1000/24 {
			t.Errorf("hour %d has %d of 1000 sites: %v", h, n, perHour)
		}
	}
}

func TestJobID(t *testing.T) {
	due := at("2026-11-25T03:00:00Z")
	a := JobID("backup", "site-a", due)
	tests := []struct {
		name string
		id   string
		same bool
	}{
		{"same run", JobID("backup", "site-a", due), true},
		{"same instant in another zone, sub-ms noise", JobID("backup", "site-a", due.In(time.FixedZone("X", 3600)).Add(300*time.Microsecond)), true},
		{"another site", JobID("backup", "site-b", due), false},
		{"another kind", JobID("retention", "site-a", due), false},
		{"another slot", JobID("backup", "site-a", due.Add(24*time.Hour)), false},
		{"kind and site do not run together", JobID("backupsite-a", "", due), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.id == a) != tc.same {
				t.Errorf("JobID = %s vs %s, same = %v, want %v", tc.id, a, tc.id == a, tc.same)
			}
		})
	}
	if len(a) != 36 || a[14] != '5' {
		t.Errorf("JobID %q is not a version 5 UUID", a)
	}
}
