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
	key := events.LeaseKey(siteUUID)
	val, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("bus: encode lease: %w", err)
	}
	rev, err := in.Leases.Create(ctx, key, val)
	if err == nil {
		return &Lease{kv: in.Leases, key: key, revision: rev, value: val, Holder: h}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("bus: acquire lease of site %s: %w", siteUUID, err)
	}
	cur, err := in.Leases.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Released between our Create and Get; let the caller retry soon.
		return nil, fmt.Errorf("bus: lease of site %s: %w", siteUUID, ErrLeaseHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: read lease of site %s: %w", siteUUID, err)
	}
	var other LeaseHolder
	if json.Unmarshal(cur.Value(), &other) != nil || other.JobID != h.JobID {
		return nil, fmt.Errorf("bus: site %s (held by job %s): %w", siteUUID, other.JobID, ErrLeaseHeld)
	}
	rev, err = in.Leases.Update(ctx, key, val, cur.Revision())
	if err != nil {
		return nil, fmt.Errorf("bus: take over lease of site %s: %w", siteUUID, ErrLeaseHeld)
	}
	return &Lease{kv: in.Leases, key: key, revision: rev, value: val, Holder: h}, nil
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
