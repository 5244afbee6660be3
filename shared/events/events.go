// Package events declares, once, every JetStream name Satoru uses:
// streams, subjects, durable consumers, KV buckets and the versioned
// payloads carried on them.
package events

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/staging"
)

// Streams and KV buckets.
const (
	StreamJobs   = "SATORU_JOBS"
	StreamEvents = "SATORU_EVENTS"

	// BucketLeases holds per-site leases; its TTL is the lease length.
	BucketLeases = "SATORU_LEASES"
	// BucketCancel holds cancel requests keyed by job id.
	BucketCancel = "SATORU_CANCEL"
	// BucketServices holds one liveness entry per running service
	// instance, keyed by ServiceKey; its TTL ends an entry nobody renews.
	BucketServices = "SATORU_SERVICES"
	// BucketNodes keeps the last liveness value of each service instance
	// that runs on a worker node (one with a staging), keyed by NodeKey,
	// for NodeRetention after its last renewal: it outlives the liveness
	// entry, so a node that has gone away is still known.
	BucketNodes = "SATORU_NODES"
	// BucketResticProcs records the restic processes Satoru runs on the
	// repository, keyed by ResticProcKey, so a lock left by one that died
	// is cleared at once (shared/repoguard). No TTL: an entry outlives a
	// crash on purpose.
	BucketResticProcs = "SATORU_RESTIC_PROCS"

	// NodeRetention is how long a node's record stays after its last
	// renewal (the TTL of BucketNodes): a node gone longer is forgotten.
	NodeRetention = 7 * 24 * time.Hour

	// RepoSite stands in for the site of repository-level jobs.
	RepoSite = "_repo"

	// EventsMaxAge bounds how long step events stay in the stream; the
	// store keeps the durable copy.
	EventsMaxAge = 7 * 24 * time.Hour
)

// Subject roots.
const (
	JobsPrefix   = "satoru.jobs"
	EventsPrefix = "satoru.events"
	// StepSnapshot is the hand-off from puller to snapshotter.
	StepSnapshot = "snapshot"
)

// Consumer is a service's one durable with the job types it takes.
type Consumer struct {
	Durable string
	Types   []string
}

// Durable consumers. Their filters must not overlap (work-queue rule).
var (
	ConsumerPuller      = Consumer{Durable: "puller", Types: []string{string(domain.JobPreflight), string(domain.JobBackup), string(domain.JobRestore)}}
	ConsumerSnapshotter = Consumer{Durable: "snapshotter", Types: []string{StepSnapshot, string(domain.JobRetention)}}
	ConsumerSyncer      = Consumer{Durable: "syncer", Types: []string{string(domain.JobResticSync)}}
)

// FilterSubjects lists the subjects a consumer takes.
func (c Consumer) FilterSubjects() []string {
	out := make([]string, 0, len(c.Types))
	for _, t := range c.Types {
		out = append(out, JobsPrefix+".*."+t)
	}
	return out
}

// JobSubject is where a job request for a site is published.
func JobSubject(siteUUID, jobType string) string {
	if siteUUID == "" {
		siteUUID = RepoSite
	}
	return JobsPrefix + "." + siteUUID + "." + jobType
}

// EventSubject is where a job's step events are published.
func EventSubject(siteUUID, jobID string) string {
	if siteUUID == "" {
		siteUUID = RepoSite
	}
	return EventsPrefix + "." + siteUUID + "." + jobID
}

// LeaseKey is the KV key of a site's lease. Repository-level jobs (no
// site) share the lease of RepoSite, so two never run at once.
func LeaseKey(siteUUID string) string {
	if siteUUID == "" {
		siteUUID = RepoSite
	}
	return "site." + siteUUID
}

// Keys of the repository's cluster-wide leases, in the leases bucket:
// one holder at a time across every process and host.
const (
	// RepoInitKey guards restic init: two inits at once write two keys
	// and two configs, and the repository is damaged.
	RepoInitKey = "repo.init"
	// RepoUnlockKey guards restic unlock.
	RepoUnlockKey = "repo.unlock"
	// RepoMaintenanceKey is held by prune and the offsite copy.
	RepoMaintenanceKey = "repo.maintenance"
)

// ResticProcKey is the KV key of one restic process: its host (any
// character a key may not hold replaced) and pid.
func ResticProcKey(host string, pid int) string {
	return fmt.Sprintf("%s%d", ResticProcPrefix(host), pid)
}

// ResticProcPrefix is what the keys of one host's restic processes start
// with.
func ResticProcPrefix(host string) string { return keyToken(host) + "." }

// keyToken makes s usable as one token of a KV key.
func keyToken(s string) string {
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// ServiceKey is the KV key of a service instance's liveness entry.
func ServiceKey(service, instance string) string { return service + "." + instance }

// NodeKey is the KV key of a service instance's record in BucketNodes:
// the node (staging id) first, so one node's records share a prefix.
func NodeKey(node, service, instance string) string {
	return node + "." + service + "." + instance
}

// CancelKey is the KV key of a job's cancel request.
func CancelKey(jobID string) string { return "job." + jobID }

// Payload versions.
const (
	JobRequestV1 = 1
	StepEventV1  = 1
)

// ErrInvalid marks a payload that can never be processed.
var ErrInvalid = errors.New("invalid payload")

// JobRequest asks a service to run (a step of) a job.
type JobRequest struct {
	V        int    `json:"v"`
	JobID    string `json:"job_id"`
	SiteUUID string `json:"site_uuid"`
	Type     string `json:"type"`
	// Staging is the staging id (shared/staging) of the worker that made
	// the step this request continues (a backup's pull, for its
	// snapshot): a continuation runs only on that staging.
	Staging string `json:"staging,omitempty"`
}

// Validate reports what is wrong with r, wrapping ErrInvalid.
func (r JobRequest) Validate() error {
	switch {
	case r.V != JobRequestV1:
		return fmt.Errorf("%w: job request version %d, want %d", ErrInvalid, r.V, JobRequestV1)
	case r.JobID == "":
		return fmt.Errorf("%w: job request without job_id", ErrInvalid)
	case r.Type == "":
		return fmt.Errorf("%w: job request %s without type", ErrInvalid, r.JobID)
	case strings.ContainsAny(r.SiteUUID, ".*> "):
		return fmt.Errorf("%w: job request %s: site_uuid %q is not a subject token", ErrInvalid, r.JobID, r.SiteUUID)
	case r.Staging != "" && !staging.ValidID(r.Staging):
		return fmt.Errorf("%w: job request %s: staging %q is not a staging id", ErrInvalid, r.JobID, r.Staging)
	}
	return nil
}

// RequestFor is the request that runs job's first step (its type).
func RequestFor(job domain.Job) JobRequest {
	return StepRequest(job, string(job.Type))
}

// StepRequest is the request that runs step of job: its type, or a
// continuation (StepSnapshot) the job is handed off to, which carries
// the staging the job's hand-off recorded.
func StepRequest(job domain.Job, step string) JobRequest {
	r := JobRequest{V: JobRequestV1, JobID: job.ID, SiteUUID: job.SiteUUID, Type: step}
	if step != string(job.Type) && job.HandOff != nil {
		r.Staging = job.HandOff.Staging
	}
	return r
}

// Subject is where r is published.
func (r JobRequest) Subject() string { return JobSubject(r.SiteUUID, r.Type) }

// MsgID is r's Nats-Msg-Id, by which the job stream drops a second
// publish of the same request within its duplicate window: the job id,
// and for the snapshot hand-off, which carries the same job id as the
// pull, the job id and the step.
func (r JobRequest) MsgID() string {
	if r.Type == StepSnapshot {
		return r.JobID + "." + r.Type
	}
	return r.JobID
}

// StepEvent is a job's step event as published on EventSubject.
type StepEvent struct {
	V        int             `json:"v"`
	JobID    string          `json:"job_id"`
	SiteUUID string          `json:"site_uuid"`
	JobType  string          `json:"job_type"`
	Status   string          `json:"status,omitempty"` // set when the job's status changes
	Event    domain.JobEvent `json:"event"`
}

// Validate reports what is wrong with e, wrapping ErrInvalid.
func (e StepEvent) Validate() error {
	switch {
	case e.V != StepEventV1:
		return fmt.Errorf("%w: step event version %d, want %d", ErrInvalid, e.V, StepEventV1)
	case e.JobID == "":
		return fmt.Errorf("%w: step event without job_id", ErrInvalid)
	case e.Event.Step == "":
		return fmt.Errorf("%w: step event of job %s without step", ErrInvalid, e.JobID)
	}
	return nil
}
