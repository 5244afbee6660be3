package bus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/events"
)

// ErrLeaseHeld means another job holds the site's lease.
var ErrLeaseHeld = errors.New("site lease held by another job")

// ErrLeaseLost means the lease expired or was taken while we held it.
var ErrLeaseLost = errors.New("site lease lost")

// LeaseHolder is who holds a site lease.
type LeaseHolder struct {
	JobID  string `json:"job_id"`
	Worker string `json:"worker"`
}

// Lease is a held site lease. It is not safe for concurrent use; the job's
// heartbeat loop is its one user.
type Lease struct {
	kv       jetstream.KeyValue
	key      string
	revision uint64
	value    []byte
	Holder   LeaseHolder
}

// AcquireSite takes the site lease for a job. A lease held by the same job
// (a redelivery after its worker died) is taken over: the stream delivers a
// job to one worker at a time, so the old holder is gone.
func (in *Infra) AcquireSite(ctx context.Context, siteUUID string, h LeaseHolder) (*Lease, error) {
	return in.acquire(ctx, events.LeaseKey(siteUUID), h, func(other LeaseHolder) bool { return other.JobID == h.JobID })
}

// Renew extends the lease by another TTL.
func (l *Lease) Renew(ctx context.Context) error {
	rev, err := l.kv.Update(ctx, l.key, l.value, l.revision)
	if err != nil {
		return fmt.Errorf("bus: renew %s: %w: %v", l.key, ErrLeaseLost, err)
	}
	l.revision = rev
	return nil
}

// Release gives the lease up, only if it is still ours.
func (l *Lease) Release(ctx context.Context) error {
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(l.revision)); err != nil {
		return fmt.Errorf("bus: release %s: %w", l.key, err)
	}
	return nil
}
