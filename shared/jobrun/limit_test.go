package jobrun

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWithLimit(t *testing.T) {
	errMine := errors.New("step limit")
	tests := []struct {
		name      string
		limit     time.Duration
		cause     error
		wantDone  bool
		wantCause error
	}{
		{name: "no limit never ends by itself", limit: 0},
		{name: "negative is no limit", limit: -time.Second},
		{name: "limit ends the step", limit: time.Millisecond, wantDone: true, wantCause: context.DeadlineExceeded},
		{name: "limit with its own cause", limit: time.Millisecond, cause: errMine, wantDone: true, wantCause: errMine},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := WithLimitCause(context.Background(), tc.limit, tc.cause)
			defer cancel()
			_, hasDeadline := ctx.Deadline()
			if hasDeadline != tc.wantDone {
				t.Fatalf("deadline set = %v, want %v", hasDeadline, tc.wantDone)
			}
			if !tc.wantDone {
				select {
				case <-ctx.Done():
					t.Fatal("a step without a limit ended by itself")
				case <-time.After(20 * time.Millisecond):
				}
				cancel()
				if !errors.Is(ctx.Err(), context.Canceled) {
					t.Fatalf("after cancel err = %v, want Canceled", ctx.Err())
				}
				return
			}
			<-ctx.Done()
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				t.Errorf("err = %v, want DeadlineExceeded", ctx.Err())
			}
			if got := context.Cause(ctx); !errors.Is(got, tc.wantCause) {
				t.Errorf("cause = %v, want %v", got, tc.wantCause)
			}
		})
	}
}

func TestWithLimitFollowsTheJob(t *testing.T) {
	job, stop := context.WithCancelCause(context.Background())
	ctx, cancel := WithLimit(job, time.Hour)
	defer cancel()
	stop(ErrCanceled)
	<-ctx.Done()
	if !errors.Is(context.Cause(ctx), ErrCanceled) {
		t.Errorf("cause = %v, want the job's %v", context.Cause(ctx), ErrCanceled)
	}
}
