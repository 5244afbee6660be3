// Package realproc runs the real satoru binary for tests and benchmarks:
// it builds (or locates) the binary, starts `satoru up` and the service
// commands as OS processes on their own folders, reads the banner for the
// API address and token, and drives the node through a small REST client.
// It also holds what the fault suite and the benchmarks share: the process
// table helpers that find a node's children and leftovers, the wait for a
// quiet machine before a measurement, and the benchmark site generator.
//
// It is a normal package so that several test packages can import it;
// nothing outside tests uses it. Its helpers take a testing.TB and fail
// the test on a setup error, naming what failed.
package realproc
