package jobrun

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name    string
		base    time.Duration
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{"first, no jitter", 10 * time.Second, 1, 0.5, 10 * time.Second},
		{"doubles", 10 * time.Second, 3, 0.5, 40 * time.Second},
		{"jitter low", 10 * time.Second, 1, 0, 7500 * time.Millisecond},
		{"jitter high", 10 * time.Second, 1, 0.999999, 12499995 * time.Microsecond},
		{"capped", 10 * time.Second, 20, 0.5, MaxBackoff},
		{"zero base uses default", 0, 1, 0.5, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Backoff(tc.base, tc.attempt, func() float64 { return tc.rnd })
			if d := got - tc.want; d > time.Millisecond || d < -time.Millisecond {
				t.Errorf("Backoff(%s, %d) = %s, want %s", tc.base, tc.attempt, got, tc.want)
			}
		})
	}
}
