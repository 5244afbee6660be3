package tick

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

func TestEveryStopsWhenFnSaysSo(t *testing.T) {
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(context.Background(), time.Millisecond, func() bool { return n.Add(1) < 3 })
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return after fn said stop")
	}
	if got := n.Load(); got != 3 {
		t.Fatalf("fn called %d times, want 3", got)
	}
}

func TestEveryStopsOnCancelAndNotAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		Every(ctx, time.Hour, func() bool { n.Add(1); return true })
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return after cancel")
	}
	if got := n.Load(); got != 0 {
		t.Fatalf("fn called %d times before the first period, want 0", got)
	}
}
