package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// AcquireKey takes the lease on any key of the leases bucket (for
// example "scheduler.leader") for holder h, the way AcquireSite takes a
// site's: Create acquires, Lease.Renew (Update with the revision) keeps
// it, Lease.Release deletes it, and the bucket's TTL (bus.Settings
// LeaseTTL) ends a lease nobody renews. A lease held by the same holder
// (same JobID and Worker, e.g. a process that lost track of it) is taken
// over; one held by anyone else is ErrLeaseHeld, and the caller retries
// later.
func (in *Infra) AcquireKey(ctx context.Context, key string, h LeaseHolder) (*Lease, error) {
	if key == "" {
		return nil, errors.New("bus: acquire lease: empty key")
	}
	return in.acquire(ctx, key, h, func(other LeaseHolder) bool { return other == h })
}

// acquire creates the lease at key, or takes it over when its current
// holder is one that mine says is ours.
func (in *Infra) acquire(ctx context.Context, key string, h LeaseHolder, mine func(LeaseHolder) bool) (*Lease, error) {
	val, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("bus: encode lease: %w", err)
	}
	rev, err := in.Leases.Create(ctx, key, val)
	if err == nil {
		return &Lease{kv: in.Leases, key: key, revision: rev, value: val, Holder: h}, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("bus: acquire lease %s: %w", key, err)
	}
	cur, err := in.Leases.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Released between our Create and Get; the caller retries soon.
		return nil, fmt.Errorf("bus: lease %s: %w", key, ErrLeaseHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("bus: read lease %s: %w", key, err)
	}
	var other LeaseHolder
	if json.Unmarshal(cur.Value(), &other) != nil || !mine(other) {
		return nil, fmt.Errorf("bus: lease %s is held by %s: %w", key, other.describe(), ErrLeaseHeld)
	}
	rev, err = in.Leases.Update(ctx, key, val, cur.Revision())
	if err != nil {
		return nil, fmt.Errorf("bus: take over lease %s: %w", key, ErrLeaseHeld)
	}
	return &Lease{kv: in.Leases, key: key, revision: rev, value: val, Holder: h}, nil
}

// LeaseHolderOf reads who holds the lease on key; ok is false when nobody
// does.
func (in *Infra) LeaseHolderOf(ctx context.Context, key string) (h LeaseHolder, ok bool, err error) {
	cur, err := in.Leases.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return LeaseHolder{}, false, nil
	}
	if err != nil {
		return LeaseHolder{}, false, fmt.Errorf("bus: read lease %s: %w", key, err)
	}
	if err := json.Unmarshal(cur.Value(), &h); err != nil {
		return LeaseHolder{}, false, fmt.Errorf("bus: decode lease %s: %w", key, err)
	}
	return h, true, nil
}

// Key is the KV key the lease is on.
func (l *Lease) Key() string { return l.key }

func (h LeaseHolder) describe() string {
	switch {
	case h.Worker != "" && h.JobID != "" && h.Next != "":
		return fmt.Sprintf("%s (job %s, step %s handed off to %s)", h.Worker, h.JobID, h.Step, h.Next)
	case h.Worker != "" && h.JobID != "" && h.Step != "":
		return fmt.Sprintf("%s (job %s, step %s)", h.Worker, h.JobID, h.Step)
	case h.Worker != "" && h.JobID != "":
		return fmt.Sprintf("%s (job %s)", h.Worker, h.JobID)
	case h.Worker != "":
		return h.Worker
	case h.JobID != "":
		return "job " + h.JobID
	}
	return "an unknown holder"
}
