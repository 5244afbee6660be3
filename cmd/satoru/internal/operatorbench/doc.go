// Package operatorbench holds BenchmarkOperator: the figure an operator
// can reproduce with the shipped binary. It runs the built `satoru up`
// with its default config as a real process, drives backups through the
// REST API as a script would, and compares each with rsync and restic run
// by hand on the same data in the same run (docs/benchmarks.md, "Operator
// benchmark").
//
// The package has no code outside its tests.
package operatorbench
