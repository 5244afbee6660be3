// Package syncer is the Satoru syncer service. Its work arrives in a later
// phase (see README "Status"); the module exists so the workspace layout
// matches DESIGN.md and the service can grow without moving code.
package syncer
