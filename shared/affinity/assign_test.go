package affinity

import (
	"fmt"
	"slices"
	"testing"

	"github.com/satoru/satoru/shared/events"
)

func nodeIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%016x", uint64(i+1)*0x9e3779b97f4a7c15)
	}
	return out
}

// owners maps every partition to its owner among nodes, checking that
// Owned agrees: each partition in exactly one node's list.
func owners(t *testing.T, nodes []string) map[int]string {
	t.Helper()
	out := map[int]string{}
	for _, n := range nodes {
		for _, p := range Owned(n, nodes) {
			if other, dup := out[p]; dup {
				t.Fatalf("partition %d owned by %s and %s", p, other, n)
			}
			out[p] = n
		}
	}
	if len(out) != events.JobPartitions {
		t.Fatalf("%d of %d partitions owned", len(out), events.JobPartitions)
	}
	for p, n := range out {
		if Owner(p, nodes) != n {
			t.Fatalf("Owner(%d) = %s, Owned says %s", p, Owner(p, nodes), n)
		}
	}
	return out
}

func TestOwnedSplitsEveryPartitionOnce(t *testing.T) {
	for n := 1; n <= 6; n++ {
		nodes := nodeIDs(n)
		got := owners(t, nodes)
		count := map[string]int{}
		for _, o := range got {
			count[o]++
		}
		for _, node := range nodes {
			// Not exact (hashing), but no node is starved or swamped.
			fair := events.JobPartitions / n
			if c := count[node]; c < fair/3 || c > fair*2+2 {
				t.Errorf("%d nodes: %s owns %d partitions, fair share %d", n, node, c, fair)
			}
		}
	}
	if got := Owned("a", nil); len(got) != events.JobPartitions {
		t.Fatalf("a lone node owns %d partitions", len(got))
	}
	// The order the live set is read in does not matter.
	nodes := nodeIDs(4)
	rev := slices.Clone(nodes)
	slices.Reverse(rev)
	for p := range events.JobPartitions {
		if Owner(p, nodes) != Owner(p, rev) {
			t.Fatalf("partition %d: owner depends on order", p)
		}
	}
}

// TestJoinAndLeaveMoveOnlyWhatMust: a node that joins takes partitions
// only (none moves between the others); a node that leaves hands only
// its own on. With pcgroups' balanced split (contiguous blocks over the
// sorted members) the same join moves partitions between old members
// too; docs/scale.md has the count.
func TestJoinAndLeaveMoveOnlyWhatMust(t *testing.T) {
	for n := 1; n <= 5; n++ {
		nodes := nodeIDs(n + 1)
		before := owners(t, nodes[:n])
		after := owners(t, nodes)
		joined := nodes[n]
		moved := 0
		for p, was := range before {
			switch now := after[p]; {
			case now == was:
			case now == joined:
				moved++
			default:
				t.Fatalf("%d->%d nodes: partition %d moved from %s to %s, not to the new node", n, n+1, p, was, now)
			}
		}
		if moved == 0 || moved > 2*events.JobPartitions/(n+1)+2 {
			t.Errorf("%d->%d nodes: %d partitions moved to the new node", n, n+1, moved)
		}
		// And back: the node leaves, only its partitions move.
		for p, now := range after {
			if now != joined && before[p] != now {
				t.Fatalf("%d nodes after a leave: partition %d moved from %s", n, p, now)
			}
		}
	}
}
