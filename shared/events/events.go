// Package events declares, once, every JetStream name Satoru uses:
// streams, subjects, durable consumers, KV buckets and the versioned
// payloads carried on them.
package events

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
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
// ConsumerPuller's durable is never created as such: each worker node's
// puller has its own, NodeDurable, over the partitions it owns.
var (
	ConsumerPuller      = Consumer{Durable: "puller", Types: []string{string(domain.JobPreflight), string(domain.JobBackup), string(domain.JobRestore)}}
	ConsumerSnapshotter = Consumer{Durable: "snapshotter", Types: []string{StepSnapshot, string(domain.JobRetention), string(domain.JobCheck), string(domain.JobVerify)}}
	ConsumerSyncer      = Consumer{Durable: "syncer", Types: []string{string(domain.JobResticSync)}}
)

// FilterSubjects lists the subjects a consumer takes, in every partition.
func (c Consumer) FilterSubjects() []string {
	out := make([]string, 0, len(c.Types))
	for _, t := range c.Types {
		out = append(out, JobsPrefix+".*.*."+t)
	}
	return out
}

// JobPartitions is how many partitions the job stream spreads the sites
// over (see JobsTransform). It is the most worker nodes that can share
// the pulls, and it is fixed: changing it moves almost every site.
const JobPartitions = 32

// JobsTransform is the job stream's subject transform: a request
// published on satoru.jobs.<site>.<type> is stored as
// satoru.jobs.<partition>.<site>.<type>, the partition a hash of the
// site (JobPartition), so every job of a site lands in one partition.
func JobsTransform() (src, dest string) {
	return JobsPrefix + ".*.*", fmt.Sprintf("%s.{{partition(%d,1)}}.{{wildcard(1)}}.{{wildcard(2)}}", JobsPrefix, JobPartitions)
}

// JobPartition is the partition NATS stores a site's job requests in:
// FNV-1a (32 bit) of the site token modulo JobPartitions, as the
// server's partition transform computes it.
func JobPartition(siteUUID string) int {
	if siteUUID == "" {
		siteUUID = RepoSite
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(siteUUID))
	return int(h.Sum32() % JobPartitions)
}

// StoredJobSubject is the subject a request for site and type is
// stored under in the job stream.
func StoredJobSubject(siteUUID, jobType string) string {
	if siteUUID == "" {
		siteUUID = RepoSite
	}
	return fmt.Sprintf("%s.%d.%s.%s", JobsPrefix, JobPartition(siteUUID), siteUUID, jobType)
}

// PartitionFilters lists the subjects of c's job types in the given
// partitions only: a worker node's share of the sites.
func (c Consumer) PartitionFilters(parts []int) []string {
	out := make([]string, 0, len(parts)*len(c.Types))
	for _, p := range parts {
		for _, t := range c.Types {
			out = append(out, fmt.Sprintf("%s.%d.*.%s", JobsPrefix, p, t))
		}
	}
	return out
}

// FilterPartition is the partition a filter subject made by
// PartitionFilters names; ok is false for any other subject.
func FilterPartition(filter string) (p int, ok bool) {
	rest, found := strings.CutPrefix(filter, JobsPrefix+".")
	if !found {
		return 0, false
	}
	tok, _, found := strings.Cut(rest, ".")
	if !found {
		return 0, false
	}
	p, err := strconv.Atoi(tok)
	if err != nil || p < 0 || p >= JobPartitions || strconv.Itoa(p) != tok {
		return 0, false
	}
	return p, true
}

// NodeDurable is the durable consumer of the puller of worker node node
// (its staging id): it takes the job types of ConsumerPuller in the
// partitions the node owns.
func NodeDurable(node string) string { return ConsumerPuller.Durable + "-" + node }

// DurableNode is the node a NodeDurable name belongs to; ok is false for
// any other consumer name.
func DurableNode(durable string) (node string, ok bool) {
	node, ok = strings.CutPrefix(durable, ConsumerPuller.Durable+"-")
	return node, ok && node != ""
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
	// RepoMaintenanceKey is held by prune, the offsite copy and check.
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
