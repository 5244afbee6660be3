// Package faults holds the fault-injection suite: its tests build the real
// satoru binary, start `satoru up` as a subprocess on its own folders and
// ports, drive it only through the REST API, and break it the way
// production breaks: SIGKILL mid-pull, mid-snapshot, mid-prune and
// mid-offsite-copy, an edge sshd killed mid-pull, kill -9 of the node with
// its embedded NATS and store, full staging and repository disks (size-
// limited tmpfs), and concurrent first backups into a fresh repository.
// Each scenario ends with `restic check` passing, every site's next backup
// succeeding and no job left running. docs/faults.md lists the scenarios.
//
// The package has no code outside its tests; the real process, its REST
// client and the process table helpers are in ../realproc.
package faults
