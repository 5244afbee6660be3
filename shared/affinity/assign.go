// Package affinity gives each site one worker node at a time. The job
// stream stores a site's requests in one of events.JobPartitions
// partitions; each live worker node owns the partitions it wins by
// rendezvous hashing over the live nodes, and its puller's durable
// consumer filters on exactly those. A node that joins wins about 1/N of
// the partitions, all from others; a node that leaves loses only its own:
// no other site moves, so staging (rsync's baseline) stays where it is.
package affinity

import (
	"encoding/binary"
	"hash/fnv"
	"slices"

	"github.com/satoru/satoru/shared/events"
)

// Owner is the node that owns partition p among nodes: the one with the
// highest score for p (rendezvous hashing). nodes need not be sorted; ""
// when there is none.
func Owner(p int, nodes []string) string {
	best, bestScore := "", uint64(0)
	for _, n := range nodes {
		s := score(n, p)
		if best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}

// Owned lists the partitions node owns among nodes (node included), in
// order.
func Owned(node string, nodes []string) []int {
	all := nodes
	if !slices.Contains(nodes, node) {
		all = append(slices.Clone(nodes), node)
	}
	var out []int
	for p := range events.JobPartitions {
		if Owner(p, all) == node {
			out = append(out, p)
		}
	}
	return out
}

// score mixes a node and a partition into a well-spread 64-bit value:
// FNV-1a, then a SplitMix64 finaliser, since FNV alone varies little
// in its high bits for inputs that differ only at the end.
func score(node string, p int) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	var b [9]byte
	b[0] = 0 // separator: "ab"+1 and "a"+... never collide
	binary.BigEndian.PutUint64(b[1:], uint64(p))
	_, _ = h.Write(b[:])
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
