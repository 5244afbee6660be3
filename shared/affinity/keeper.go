package affinity

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/bus"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/events"
	"github.com/satoru/satoru/shared/tick"
)

// DefaultEvery is how often a Keeper looks at the live nodes.
const DefaultEvery = 2 * time.Second

// roundTimeout bounds one reconcile round.
const roundTimeout = 15 * time.Second

// Keeper keeps one worker node's puller consumer on the partitions the
// node owns. Exclusivity does not rest on every node seeing the same
// live set at the same moment: the job stream is a work queue, so the
// server refuses a consumer whose filters overlap another's. A node
// first gives up what it no longer owns and takes a partition only once
// no other consumer holds it; the site lease still guards each job.
type Keeper struct {
	Infra *bus.Infra
	// Node is this node's staging id.
	Node string
	// Consumer names the job types the node's puller takes.
	Consumer events.Consumer
	// Every is the reconcile period; 0 means DefaultEvery.
	Every time.Duration
	// Grace is how young a consumer of a node not (yet) live may be and
	// still be kept: a node that just started may create its consumer a
	// moment before its liveness entry shows. 0 means the liveness TTL.
	Grace time.Duration
	// Changed, when set, is told the node's partitions after each change.
	Changed func(parts []int)
	Log     *slog.Logger

	mu    sync.Mutex
	cons  jetstream.Consumer // nil while the node owns no partition
	parts []int
	seen  map[string]time.Time // when each puller node was last live
}

func (k *Keeper) every() time.Duration {
	if k.Every <= 0 {
		return DefaultEvery
	}
	return k.Every
}

// Start reconciles once, so the node's consumer exists when there is
// something to take, then keeps reconciling until ctx ends. The caller
// owns the returned wait function, which returns once the loop stopped.
func (k *Keeper) Start(ctx context.Context) (wait func()) {
	if k.Log == nil {
		k.Log = slog.New(slog.DiscardHandler)
	}
	if err := k.Reconcile(ctx); err != nil && ctx.Err() == nil {
		k.Log.Warn("partitions not reconciled; retrying", "node", k.Node, "err", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick.Every(ctx, k.every(), func() bool {
			if err := k.Reconcile(ctx); err != nil && ctx.Err() == nil {
				k.Log.Warn("partitions not reconciled; retrying", "node", k.Node, "err", err)
			}
			return true
		})
		k.release(context.WithoutCancel(ctx))
	}()
	return func() { <-done }
}

// releaseTimeout bounds deleting the consumer at a clean stop.
const releaseTimeout = 5 * time.Second

// release deletes the node's consumer at a clean stop, so its partitions
// move to the live nodes at once rather than after the liveness TTL. The
// requests it had taken were handed back (Nak) as the runner stopped;
// they stay in the stream for the next owner.
func (k *Keeper) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
	defer cancel()
	from := k.Partitions()
	if err := k.Infra.DeleteJobConsumer(ctx, events.NodeDurable(k.Node)); err != nil {
		k.Log.Warn("job consumer not released at stop; other nodes take its partitions once this node's liveness expires", "node", k.Node, "err", err)
		return
	}
	k.set(nil, nil, from)
}

// Partitions is what the node's consumer holds now.
func (k *Keeper) Partitions() []int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.parts)
}

// Next fetches the node's next job request. While the node owns no
// partition it waits out the fetch (as an empty fetch does) and returns
// jetstream.ErrNoMessages.
func (k *Keeper) Next(opts ...jetstream.FetchOpt) (jetstream.Msg, error) {
	k.mu.Lock()
	cons := k.cons
	k.mu.Unlock()
	if cons == nil {
		time.Sleep(time.Second)
		return nil, jetstream.ErrNoMessages
	}
	return cons.Next(opts...)
}

// Pending is how many requests wait for the node or are taken and not
// acked.
func (k *Keeper) Pending(ctx context.Context) (uint64, error) {
	k.mu.Lock()
	cons := k.cons
	k.mu.Unlock()
	if cons == nil {
		return 0, nil
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// Reconcile moves the node's consumer to the partitions it owns among the
// live nodes, less those another consumer still holds, and deletes the
// consumers of nodes that are gone, so their partitions (and any request
// they had taken and not acked) go to the survivors.
func (k *Keeper) Reconcile(ctx context.Context) error {
	// One round never waits long: a NATS call that hangs must not stop
	// the node from following the live set.
	ctx, cancel := context.WithTimeout(ctx, roundTimeout)
	defer cancel()
	live, err := k.liveNodes(ctx)
	if err != nil {
		return err
	}
	mine, held, err := k.consumers(ctx, live)
	if err != nil {
		return err
	}
	var target []int
	for _, p := range Owned(k.Node, live) {
		if _, taken := held[p]; !taken {
			target = append(target, p)
		}
	}
	if slices.Equal(target, mine) && (len(target) == 0) == (k.current() == nil) {
		return nil // nothing moved, and the handle is in step
	}
	return k.apply(ctx, mine, target)
}

// liveNodes is the node ids of the live pullers, this node included.
func (k *Keeper) liveNodes(ctx context.Context) ([]string, error) {
	insts, err := k.Infra.Services(ctx)
	if err != nil {
		return nil, fmt.Errorf("affinity: live nodes: %w", err)
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.seen == nil {
		k.seen = map[string]time.Time{}
	}
	for _, in := range insts {
		if in.Service == domain.ServicePuller && in.Node != "" {
			k.seen[in.Node] = now
		}
	}
	// A node missing from one read only is kept a little longer: a moment
	// of a slow renewal must not move its sites away and back.
	keep := 2 * k.every()
	nodes := []string{k.Node}
	for n, at := range k.seen {
		switch {
		case now.Sub(at) > keep:
			delete(k.seen, n)
		case n != k.Node:
			nodes = append(nodes, n)
		}
	}
	sort.Strings(nodes)
	return nodes, nil
}

func (k *Keeper) current() jetstream.Consumer {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cons
}

// consumers reads the job stream's node consumers: the partitions this
// node's holds, and the partitions held by other live nodes. A consumer
// of a node that is not live is deleted once older than the grace.
func (k *Keeper) consumers(ctx context.Context, live []string) (mine []int, held map[int]string, err error) {
	grace := k.Grace
	if grace <= 0 {
		grace = k.Infra.ServiceTTL
	}
	held = map[int]string{}
	err = k.Infra.EachJobConsumer(ctx, func(info *jetstream.ConsumerInfo) {
		if info.Name == events.ConsumerPuller.Durable {
			// The one puller durable of versions without affinity.
			k.delete(ctx, info.Name, "the puller consumer of a version without site affinity")
			return
		}
		node, ok := events.DurableNode(info.Name)
		if !ok {
			return
		}
		parts := bus.FilterPartitions(info.Config.FilterSubjects)
		switch {
		case node == k.Node:
			mine = parts
		case !slices.Contains(live, node) && time.Since(info.Created) > grace:
			k.delete(ctx, info.Name, "its node is gone")
		default:
			for _, p := range parts {
				held[p] = node
			}
		}
	})
	return mine, held, err
}

func (k *Keeper) delete(ctx context.Context, name, why string) {
	if err := k.Infra.DeleteJobConsumer(ctx, name); err != nil {
		k.Log.Warn("job consumer not deleted", "node", k.Node, "consumer", name, "why", why, "err", err)
		return
	}
	k.Log.Info("deleted a job consumer; its partitions move to the live nodes", "node", k.Node, "consumer", name, "why", why)
}

// apply sets the node's consumer to target (deleting it when target is
// empty: a consumer without filters would take everything).
func (k *Keeper) apply(ctx context.Context, from, target []int) error {
	name := events.NodeDurable(k.Node)
	if len(target) == 0 {
		if err := k.Infra.DeleteJobConsumer(ctx, name); err != nil {
			return fmt.Errorf("affinity: release every partition: %w", err)
		}
		k.set(nil, nil, from)
		return nil
	}
	renew := len(from) > 0 && slices.ContainsFunc(target, func(p int) bool { return !slices.Contains(from, p) })
	if renew {
		// A consumer whose filters grow does not go back: requests of a
		// gained partition stored before its read position (those a dead
		// node had taken, or still waiting for it) would never come. A new
		// consumer reads the stream from the start. Requests this node has
		// in flight come again too; the site lease holds them off, and a
		// finished job's copy is dropped.
		if err := k.Infra.DeleteJobConsumer(ctx, name); err != nil {
			return fmt.Errorf("affinity: renew the consumer for partitions %v: %w", target, err)
		}
	}
	cons, err := k.Infra.NodeConsumer(ctx, name, k.Consumer.PartitionFilters(target))
	if err != nil {
		if renew {
			k.set(nil, nil, from) // the old one is gone; the next round retries
		}
		return fmt.Errorf("affinity: take partitions %v: %w", target, err)
	}
	k.set(cons, target, from)
	return nil
}

func (k *Keeper) set(cons jetstream.Consumer, parts, from []int) {
	k.mu.Lock()
	k.cons, k.parts = cons, parts
	k.mu.Unlock()
	if !slices.Equal(parts, from) {
		k.Log.Info("partitions changed", "node", k.Node, "partitions", len(parts), "was", len(from), "list", parts)
	}
	if k.Changed != nil {
		k.Changed(slices.Clone(parts))
	}
}
