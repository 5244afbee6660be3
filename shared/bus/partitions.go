package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/satoru/satoru/shared/events"
)

// EachJobConsumer calls fn with every consumer of the job stream.
func (in *Infra) EachJobConsumer(ctx context.Context, fn func(*jetstream.ConsumerInfo)) error {
	str, err := in.JS.Stream(ctx, events.StreamJobs)
	if err != nil {
		return fmt.Errorf("bus: stream %s: %w", events.StreamJobs, err)
	}
	lister := str.ListConsumers(ctx)
	for info := range lister.Info() {
		fn(info)
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("bus: list consumers of %s: %w", events.StreamJobs, err)
	}
	return nil
}

// FilterPartitions is the partitions a worker node consumer's filters
// name (events.PartitionFilters), in order.
func FilterPartitions(filters []string) []int {
	var out []int
	for _, f := range filters {
		if p, ok := events.FilterPartition(f); ok && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// PartitionOwners reads which worker node's consumer holds each job
// stream partition now: the truth, not the hash (a partition on its way
// between two nodes shows at the one holding it, or at none).
func (in *Infra) PartitionOwners(ctx context.Context) (map[int]string, error) {
	out := map[int]string{}
	err := in.EachJobConsumer(ctx, func(info *jetstream.ConsumerInfo) {
		if node, ok := events.DurableNode(info.Name); ok {
			for _, p := range FilterPartitions(info.Config.FilterSubjects) {
				out[p] = node
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteJobConsumer deletes a consumer of the job stream; one already
// gone is not an error.
func (in *Infra) DeleteJobConsumer(ctx context.Context, name string) error {
	if err := in.JS.DeleteConsumer(ctx, events.StreamJobs, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("bus: delete consumer %s: %w", name, err)
	}
	return nil
}
