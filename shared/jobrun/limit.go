package jobrun

import (
	"context"
	"time"
)

// WithLimit bounds one step of a job by a configured timeout; a limit of
// 0 or less means none (the config keys say so), and ctx then ends only
// when the job's own context does. Callers always defer the cancel.
func WithLimit(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	return WithLimitCause(ctx, limit, nil)
}

// WithLimitCause is WithLimit whose expiry carries cause
// (context.Cause), so a step can tell its own limit running out from the
// job ending; a nil cause is context.DeadlineExceeded.
func WithLimitCause(ctx context.Context, limit time.Duration, cause error) (context.Context, context.CancelFunc) {
	if limit <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, limit, cause)
}
