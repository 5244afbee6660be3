package bus

import (
	"context"
	"encoding/json"
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
	// Step is the step of the job the holder runs (the job's type, or a
	// continuation such as "snapshot"); "" for other leases.
	Step string `json:"step,omitempty"`
	// Next, set by Lease.HandOff, names the step the holder passed the
	// job (and with it the lease) on to.
	Next string `json:"next,omitempty"`
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

// AcquireSite takes the site lease for step h.Step of job h.JobID. The
// only lease taken over is one the same job handed off to this very step
// (Lease.HandOff): its holder is done with it. Any other held lease is
// ErrLeaseHeld, the same job's included: a redelivered job whose worker
// died waits for that worker's lease to expire by the bucket's TTL, since
// nothing else proves the worker is gone, and two workers must never run
// on one site at once. site_lease_seconds is shorter than the ack wait,
// so a crashed worker's lease has expired when its job comes back.
func (in *Infra) AcquireSite(ctx context.Context, siteUUID string, h LeaseHolder) (*Lease, error) {
	return in.acquire(ctx, events.LeaseKey(siteUUID), h, func(other LeaseHolder) bool {
		return other.JobID == h.JobID && other.Next != "" && other.Next == h.Step
	})
}

// HandOff renews the lease one last time, marked as handed to step next
// of the same job, so that step's worker may take it over (AcquireSite).
// The holder must not renew it afterwards.
func (l *Lease) HandOff(ctx context.Context, next string) error {
	h := l.Holder
	h.Next = next
	val, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("bus: encode lease: %w", err)
	}
	rev, err := l.kv.Update(ctx, l.key, val, l.revision)
	if err != nil {
		return fmt.Errorf("bus: hand off %s to %s: %w: %v", l.key, next, ErrLeaseLost, err)
	}
	l.revision, l.value, l.Holder = rev, val, h
	return nil
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
