package restic

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetryWatch(t *testing.T) {
	const (
		retry = "Stat(<config/>) returned error, retrying after 1.2s: dial tcp 127.0.0.1:9: connect: connection refused\n"
		ok    = "Stat(<config/>) operation successful after 2 retries\n"
	)
	tests := []struct {
		name    string
		lines   []string // written in pieces, with pause between lines
		pause   time.Duration
		tripped bool
	}{
		{"retries past the limit", []string{retry, retry}, 0, true},
		{"a success stops the count", []string{retry, ok}, 0, false},
		{"other warnings do not count", []string{"Load(<lock/1>) failed: not found\n", "warning: something\n"}, 0, false},
		{"a retry after a success starts again", []string{retry, ok, retry}, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var trips atomic.Int32
			w := &retryWatch{limit: 150 * time.Millisecond, trip: func() { trips.Add(1) }}
			for _, l := range tc.lines {
				for len(l) > 0 { // as a pipe delivers it
					n := min(7, len(l))
					_, _ = w.Write([]byte(l[:n]))
					l = l[n:]
				}
				time.Sleep(tc.pause)
			}
			time.Sleep(400 * time.Millisecond)
			w.close()
			if got := trips.Load() > 0; got != tc.tripped {
				t.Errorf("tripped = %v, want %v", got, tc.tripped)
			}
			if tc.tripped && !strings.Contains(w.lastRetry(), "connection refused") {
				t.Errorf("last retry = %q", w.lastRetry())
			}
		})
	}
	// Closed before the limit: no trip afterwards.
	var trips atomic.Int32
	w := &retryWatch{limit: 100 * time.Millisecond, trip: func() { trips.Add(1) }}
	_, _ = w.Write([]byte(retry))
	w.close()
	time.Sleep(250 * time.Millisecond)
	if trips.Load() != 0 {
		t.Error("a closed watch tripped")
	}
}
