// Package fleetbench holds BenchmarkFleet: fleet throughput over
// latency-bound links (issue #12, docs/scale.md "Fleet throughput"). It
// runs the built `satoru control` and 1, 2 and 3 `satoru worker`
// processes as real OS processes, every edge sshd behind a proxy that
// delays each direction, backs up the same sites three rounds per node
// count, and reports throughput against the one-node run of the same
// call, the bytes a no-change round moves and how much staging the sites
// take across the nodes.
//
// The package has no code outside its tests.
package fleetbench
