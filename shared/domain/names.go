package domain

import "strings"

// Names one service writes and another reads. They live here, beside the
// data model they key, because every service already imports domain: a
// separate contract package would add an import to each for a handful of
// strings, and these names are as much a part of the stored data as the
// documents' field names.

// Snapshot tags. The snapshotter tags every restic snapshot it makes with
// its site and backup job; the API lists a site's snapshots by the site
// tag and reads the job back from the job tag, and retention forgets by
// the site tag. Changing either orphans existing snapshots.
const (
	SiteTagPrefix = "site:"
	JobTagPrefix  = "job:"
)

// SiteTag is the restic tag every snapshot of a site carries.
func SiteTag(siteUUID string) string { return SiteTagPrefix + siteUUID }

// JobTag is the restic tag of the snapshot a backup job made.
func JobTag(jobID string) string { return JobTagPrefix + jobID }

// SnapshotTags are the restic tags of a backup job's snapshot.
func SnapshotTags(siteUUID, jobID string) []string {
	return []string{SiteTag(siteUUID), JobTag(jobID)}
}

// JobOfTags returns the backup job named by a snapshot's job tag, or ""
// when it has none.
func JobOfTags(tags []string) string {
	job := ""
	for _, t := range tags {
		if id, ok := strings.CutPrefix(t, JobTagPrefix); ok {
			job = id
		}
	}
	return job
}

// ResticHost is the stable restic --host of a site's snapshots: restic
// groups snapshots by host for retention and for a backup's parent, so it
// must not depend on which worker node made the snapshot.
func ResticHost(siteUUID string) string { return "satoru-" + siteUUID }

// OffsiteSyncStateID is the _id of the offsite repository's sync_state
// document: Satoru has one offsite repository, so the id is fixed. The
// syncer writes it; the API reads it.
const OffsiteSyncStateID = "offsite"

// Service names, as each running service announces itself alive (NATS KV
// SATORU_SERVICES, <service>.<instance>) and as GET /api/v1/health lists
// them.
const (
	ServiceAPI         = "api"
	ServicePuller      = "puller"
	ServiceSnapshotter = "snapshotter"
	ServiceSyncer      = "syncer"
	ServiceScheduler   = "scheduler"
)

// Services are the services a complete deployment runs, each of which
// must have at least one live instance.
func Services() []string {
	return []string{ServiceAPI, ServicePuller, ServiceSnapshotter, ServiceSyncer, ServiceScheduler}
}
