// Package embedded runs Satoru's infrastructure in-process: a NATS server
// with JetStream and a MongoDB-wire-compatible store (FerretDB v1 on
// SQLite), both persisting under a directory. `satoru up` and the tests use
// them; clients reach them over the normal client libraries, exactly as
// they would reach a NATS cluster and a MongoDB replica set.
//
// Both are quiet by default: they log only when given a *slog.Logger.
//
// Build with the tags ferretdb_no_postgresql,ferretdb_no_mysql so that
// FerretDB's unused backends stay out of the binary.
package embedded
