// Package tick is the loop every background task of Satoru shares: call a
// function on a fixed period until the task's context ends.
package tick

import (
	"context"
	"time"
)

// Every calls fn every d, not at once, until ctx ends or fn returns false.
// It returns when it stops, so its caller's goroutine owns the loop.
func Every(ctx context.Context, d time.Duration, fn func() bool) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if ctx.Err() != nil || !fn() {
			return
		}
	}
}
