// Package embedded runs Satoru's infrastructure in-process: a NATS server
// with JetStream and a MongoDB-wire-compatible store (FerretDB v1 on
// SQLite), both persisting under a directory. `satoru up` and the tests use
// them; clients reach them over the normal client libraries, exactly as
// they would reach a NATS cluster and a MongoDB replica set.
//
// Both are quiet by default: they log only when given a *slog.Logger.
//
// The store adds one thing to FerretDB: a SQLite index that lets lookups by
// _id use an index instead of reading the whole collection (Store.IndexIDs;
// docs/store-budget.md has the numbers). Call IndexIDs after store.Open
// creates the collections; a running store also repeats it every 30 s.
//
// Build with the tags ferretdb_no_postgresql,ferretdb_no_mysql so that
// FerretDB's unused backends stay out of the binary.
package embedded
