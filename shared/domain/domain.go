// Package domain holds Satoru's data model: sites, targets, jobs, job
// events and their statuses, as stored in MongoDB and returned by the API.
// It is also the contract for the names one service writes and another
// reads (snapshot tags, the restic host, the sync-state id, the service
// names; names.go): every service imports domain already, and those names
// key stored data just as its field names do. Subjects, streams and
// consumers are in package events.
package domain

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Health is a site's (or target's) last known state.
type Health string

const (
	HealthUnknown Health = "unknown"
	HealthSuccess Health = "success"
	HealthWarning Health = "warning"
	HealthFailed  Health = "failed"
)

// JobType names what a job does.
type JobType string

const (
	JobPreflight  JobType = "preflight"
	JobBackup     JobType = "backup"
	JobRetention  JobType = "retention"
	JobResticSync JobType = "restic_sync"
	JobRestore    JobType = "restore"
	// JobCheck is a repository-level restic check (site "").
	JobCheck JobType = "check"
	// JobVerify restores a site's latest snapshot into a temporary folder
	// and checks it (file count, bytes, SQLite integrity); see
	// services/snapshotter/snapshotter/verify.go.
	JobVerify JobType = "verify"
)

// JobStatus is where a job is in its life.
type JobStatus string

const (
	StatusQueued   JobStatus = "queued"
	StatusRunning  JobStatus = "running"
	StatusSuccess  JobStatus = "success"
	StatusWarning  JobStatus = "warning"
	StatusFailed   JobStatus = "failed"
	StatusCanceled JobStatus = "canceled"
)

// Terminal reports whether no further work happens on a job in status s.
func (s JobStatus) Terminal() bool {
	switch s {
	case StatusSuccess, StatusWarning, StatusFailed, StatusCanceled:
		return true
	}
	return false
}

// TargetMode says how a target is pulled.
type TargetMode string

const (
	ModeDirectory  TargetMode = "directory"
	ModeSQLiteDump TargetMode = "sqlite_dump"
)

// Valid reports whether m is a known mode.
func (m TargetMode) Valid() bool { return m == ModeDirectory || m == ModeSQLiteDump }

// Site is an edge host's configuration. Only the API writes it.
type Site struct {
	UUID               string    `bson:"_id" json:"site_uuid"`
	Name               string    `bson:"name" json:"name"`
	Host               string    `bson:"host" json:"host"`
	Port               int       `bson:"port" json:"port"`
	User               string    `bson:"user" json:"user"`
	SSHKeyPath         string    `bson:"ssh_key_path,omitempty" json:"ssh_key_path,omitempty"`
	HostKey            string    `bson:"host_key,omitempty" json:"host_key,omitempty"`
	TrustOnFirstUse    bool      `bson:"trust_on_first_use" json:"trust_on_first_use"`
	BandwidthLimitKbps int       `bson:"bandwidth_limit_kbps,omitempty" json:"bandwidth_limit_kbps,omitempty"`
	CreatedAt          time.Time `bson:"created_at" json:"created_at"`
	UpdatedAt          time.Time `bson:"updated_at" json:"updated_at"`
	// Policy is the site's own schedule, retention, pause and maintenance
	// windows (policy.go); nil follows the global config.
	Policy *SitePolicy `bson:"policy,omitempty" json:"policy,omitempty"`
}

// HealthState is a status with the reason and when it was set.
type HealthState struct {
	Status    Health    `bson:"status" json:"status"`
	Message   string    `bson:"message,omitempty" json:"message,omitempty"`
	UpdatedAt time.Time `bson:"updated_at" json:"updated_at"`
}

// SiteStatus is what workers learn about a site. Only the worker holding
// the site lease writes it, so it never races the API's writes to Site.
type SiteStatus struct {
	SiteUUID        string      `bson:"_id" json:"-"`
	Health          HealthState `bson:"health" json:"health"`
	LastPreflightAt *time.Time  `bson:"last_preflight_at,omitempty" json:"last_preflight_at,omitempty"`
	LastScanAt      *time.Time  `bson:"last_scan_at,omitempty" json:"last_scan_at,omitempty"`
	LastSuccessAt   *time.Time  `bson:"last_success_at,omitempty" json:"last_success_at,omitempty"`
	LastJobID       string      `bson:"last_job_id,omitempty" json:"last_job_id,omitempty"`
	// LastStagingID is the staging (node) whose snapshot of the site last
	// succeeded: that staging holds the site's baseline, so the node
	// "owns" the site until another node backs it up.
	LastStagingID string `bson:"last_staging_id,omitempty" json:"last_staging_id,omitempty"`
	// LastRetentionAt is when a retention job last applied the policy to
	// the site's snapshots. Retention does not change Health.
	LastRetentionAt *time.Time `bson:"last_retention_at,omitempty" json:"last_retention_at,omitempty"`
	// LearnedHostKey is the key recorded on first use for a site that
	// opted into trust-on-first-use and had no pinned key.
	LearnedHostKey string `bson:"learned_host_key,omitempty" json:"learned_host_key,omitempty"`
	// LastVerifiedAt is when a verify job last found the site's latest
	// snapshot restorable and intact; LastVerify is the last verify's
	// outcome, successful or not.
	LastVerifiedAt *time.Time    `bson:"last_verified_at,omitempty" json:"last_verified_at,omitempty"`
	LastVerify     *VerifyResult `bson:"last_verify,omitempty" json:"last_verify,omitempty"`
	// HeldHealth is the health the site's jobs would show while a failed
	// verification holds Health at failed (SetHealth); a successful
	// verify restores it. nil when nothing is held.
	HeldHealth *HealthState `bson:"held_health,omitempty" json:"held_health,omitempty"`
}

// VerifyResult is what a verify job found.
type VerifyResult struct {
	// Status is success or failed.
	Status Health    `bson:"status" json:"status"`
	At     time.Time `bson:"at" json:"at"`
	JobID  string    `bson:"job_id" json:"job_id"`
	// SnapshotID is the snapshot restored.
	SnapshotID string `bson:"snapshot_id,omitempty" json:"snapshot_id,omitempty"`
	// Files and Bytes are the regular files and their bytes restored.
	Files int64 `bson:"files" json:"files"`
	Bytes int64 `bson:"bytes" json:"bytes"`
	// Error says what failed; "" on success.
	Error string `bson:"error,omitempty" json:"error,omitempty"`
}

// VerifyFailedPrefix starts the health message of a site whose last
// verification failed.
const VerifyFailedPrefix = "verification failed: "

// SetHealth sets the site's health to h, unless the site's last
// verification failed: then the health stays failed with the verify's
// reason until a verify succeeds, since a later backup's success says
// nothing about whether the stored data restores. The backup's own
// outcome is kept in the message.
func (st *SiteStatus) SetHealth(h HealthState) {
	if v := st.LastVerify; v != nil && v.Status == HealthFailed {
		held := h
		st.HeldHealth = &held
		msg := VerifyFailedPrefix + v.Error + " (health stays failed until a verify succeeds"
		if h.Message != "" {
			msg += "; latest job: " + string(h.Status) + ": " + h.Message
		}
		h = HealthState{Status: HealthFailed, Message: msg + ")", UpdatedAt: h.UpdatedAt}
	}
	st.Health = h
}

// SetVerify records a verify's outcome v and what it does to the health:
// a failure holds the health at failed (keeping what it was in
// HeldHealth); a success releases a hold, giving back the held health.
func (st *SiteStatus) SetVerify(v VerifyResult) {
	wasHeld := st.LastVerify != nil && st.LastVerify.Status == HealthFailed
	st.LastVerify = &v
	if v.Status == HealthFailed {
		if !wasHeld {
			h := st.Health
			st.HeldHealth = &h
		}
		st.Health = HealthState{Status: HealthFailed, UpdatedAt: v.At,
			Message: VerifyFailedPrefix + v.Error + " (health stays failed until a verify succeeds)"}
		return
	}
	at := v.At
	st.LastVerifiedAt = &at
	if wasHeld {
		h := HealthState{Status: HealthUnknown, Message: "verification succeeded", UpdatedAt: v.At}
		if st.HeldHealth != nil && st.HeldHealth.Status != "" {
			h = *st.HeldHealth
		}
		st.Health = h
	}
	st.HeldHealth = nil
}

// SiteView is a site with its status merged in, as the API returns it.
type SiteView struct {
	Site   `bson:",inline"`
	Status SiteStatus `json:"status"`
}

// Scan is the outcome of a target's last pull.
type Scan struct {
	At     time.Time `bson:"at" json:"at"`
	Status Health    `bson:"status" json:"status"`
	Bytes  int64     `bson:"bytes" json:"bytes"`
	Files  int64     `bson:"files" json:"files"`
	Error  string    `bson:"error,omitempty" json:"error,omitempty"`
}

// Target is one directory or SQLite database of a site.
type Target struct {
	ID         string     `bson:"_id" json:"-"`
	SiteUUID   string     `bson:"site_uuid" json:"site_uuid"`
	TargetHash string     `bson:"target_hash" json:"target_hash"`
	Mode       TargetMode `bson:"mode" json:"mode"`
	Path       string     `bson:"path" json:"path"`
	Excludes   []string   `bson:"excludes,omitempty" json:"excludes,omitempty"`
	LastScan   *Scan      `bson:"last_scan,omitempty" json:"last_scan,omitempty"`
	CreatedAt  time.Time  `bson:"created_at" json:"created_at"`
}

// TargetHash is the stable short id of a target: the same mode and path
// always give the same hash, so staging paths survive re-registration.
func TargetHash(mode TargetMode, path string) string {
	sum := sha256.Sum256([]byte(string(mode) + "\x00" + path))
	return hex.EncodeToString(sum[:8])
}

// TargetID is the natural _id of a target document.
func TargetID(siteUUID, targetHash string) string { return siteUUID + "/" + targetHash }

// Job is one unit of background work. The API creates it; afterwards only
// the worker holding the job writes it.
type Job struct {
	ID            string         `bson:"_id" json:"job_id"`
	SiteUUID      string         `bson:"site_uuid" json:"site_uuid"`
	Type          JobType        `bson:"type" json:"type"`
	Status        JobStatus      `bson:"status" json:"status"`
	Attempts      int            `bson:"attempts" json:"attempts"`
	CreatedAt     time.Time      `bson:"created_at" json:"created_at"`
	StartedAt     *time.Time     `bson:"started_at,omitempty" json:"started_at,omitempty"`
	FinishedAt    *time.Time     `bson:"finished_at,omitempty" json:"finished_at,omitempty"`
	HeartbeatAt   *time.Time     `bson:"heartbeat_at,omitempty" json:"heartbeat_at,omitempty"`
	NextAttemptAt *time.Time     `bson:"next_attempt_at,omitempty" json:"next_attempt_at,omitempty"`
	Error         string         `bson:"error,omitempty" json:"error,omitempty"`
	Worker        string         `bson:"worker,omitempty" json:"worker,omitempty"`
	Summary       map[string]any `bson:"summary,omitempty" json:"summary,omitempty"`
	// Targets are a backup's per-target pull results, handed from the
	// puller to the snapshotter with the job.
	Targets []TargetRun `bson:"targets,omitempty" json:"targets,omitempty"`
	// Restore holds a restore job's options, written by the API when it
	// creates the job; nil for every other type.
	Restore *RestoreRequest `bson:"restore,omitempty" json:"restore,omitempty"`
	// Step is the continuation step (e.g. "snapshot") the job's current
	// attempt reached, set when a worker starts it; "" while the job's
	// first step runs. A step delivered again that finds itself here was
	// started before, by a worker that died: it counts as a new attempt.
	Step string `bson:"step,omitempty" json:"step,omitempty"`
	// HandedOffAt is when the job's first step ended and handed it on
	// (puller -> snapshotter), for the hand-off's share of step_seconds.
	HandedOffAt *time.Time `bson:"handed_off_at,omitempty" json:"handed_off_at,omitempty"`
	// HandOff says where the current attempt's first step left the data
	// its next step reads (a backup's pull, for its snapshot); nil until
	// the hand-off.
	HandOff *HandOff `bson:"hand_off,omitempty" json:"hand_off,omitempty"`
	// Trigger is who started the job: TriggerSchedule or TriggerManual
	// ("" on jobs stored before it was recorded). PolicyNote says what of
	// the site's policy a manual start overrode (paused, a forced
	// maintenance window).
	Trigger    string `bson:"trigger,omitempty" json:"trigger,omitempty"`
	PolicyNote string `bson:"policy_note,omitempty" json:"policy_note,omitempty"`
}

// HandOff is where a job's first step left its data for the next step.
type HandOff struct {
	// Staging is the id of the staging folder the pull wrote
	// (shared/staging); only a snapshotter on that staging may snapshot it.
	Staging string `bson:"staging,omitempty" json:"staging,omitempty"`
	// Worker is the instance that pulled.
	Worker string `bson:"worker,omitempty" json:"worker,omitempty"`
	// Local: the next step runs in the same process, on the same delivery
	// of the job's request (no request of its own): a lost worker's job is
	// taken up again from its first step.
	Local bool `bson:"local,omitempty" json:"local,omitempty"`
}

// RestoreRequest is what a restore job restores and where.
type RestoreRequest struct {
	// SnapshotID is the full id of a snapshot of the job's site.
	SnapshotID string `bson:"snapshot_id" json:"snapshot_id"`
	// Paths are absolute paths as stored in the snapshot (staging paths);
	// each lands at <destination>/<its base name>.
	Paths       []string           `bson:"paths" json:"paths"`
	Destination RestoreDestination `bson:"destination" json:"destination"`
	// Overwrite allows a destination folder that is not empty; files of
	// the same name are replaced, others are left alone.
	Overwrite bool `bson:"overwrite,omitempty" json:"overwrite,omitempty"`
	// DryRun reports what would change without writing the destination.
	DryRun bool `bson:"dry_run,omitempty" json:"dry_run,omitempty"`
}

// RestoreDestination is exactly one of: a folder on the Satoru host
// (LocalPath), or a folder on the site's edge host (ToSite with Path).
type RestoreDestination struct {
	LocalPath string `bson:"local_path,omitempty" json:"local_path,omitempty"`
	ToSite    bool   `bson:"to_site,omitempty" json:"to_site,omitempty"`
	Path      string `bson:"path,omitempty" json:"path,omitempty"`
}

// TargetRun is what one backup did with one target.
type TargetRun struct {
	TargetHash  string     `bson:"target_hash" json:"target_hash"`
	Path        string     `bson:"path" json:"path"`
	Mode        TargetMode `bson:"mode" json:"mode"`
	Status      Health     `bson:"status" json:"status"`
	Note        string     `bson:"note,omitempty" json:"note,omitempty"`
	Error       string     `bson:"error,omitempty" json:"error,omitempty"`
	FailedPaths []string   `bson:"failed_paths,omitempty" json:"failed_paths,omitempty"`
	Files       int64      `bson:"files" json:"files"`
	Bytes       int64      `bson:"bytes" json:"bytes"`
	Transferred int64      `bson:"transferred" json:"transferred"`
	DurationMS  int64      `bson:"duration_ms" json:"duration_ms"`
	// InSnapshot says whether the target's staging copy went into the
	// job's snapshot (failed targets are excluded, not presented as new).
	InSnapshot bool `bson:"in_snapshot" json:"in_snapshot"`
}

// Event levels.
const (
	LevelInfo  = "info"
	LevelWarn  = "warning"
	LevelError = "error"
)

// JobEvent is one step record of a job.
type JobEvent struct {
	Seq        int            `bson:"seq" json:"seq"`
	TS         time.Time      `bson:"ts" json:"ts"`
	Step       string         `bson:"step" json:"step"`
	Level      string         `bson:"level" json:"level"`
	TargetHash string         `bson:"target_hash,omitempty" json:"target_hash,omitempty"`
	Message    string         `bson:"message" json:"message"`
	Data       map[string]any `bson:"data,omitempty" json:"data,omitempty"`
}

// SyncState is the offsite copy's state, one document per offsite repo.
// Only the syncer holding the repository-level lease writes it.
type SyncState struct {
	ID     string `bson:"_id" json:"repo"`
	Status Health `bson:"status" json:"status"`
	// Repository is the offsite location with any password in it
	// redacted; credentials are never stored here.
	Repository    string     `bson:"repository,omitempty" json:"repository,omitempty"`
	LastAttemptAt *time.Time `bson:"last_attempt_at,omitempty" json:"last_attempt_at,omitempty"`
	// LastSuccessAt stays as it was when an attempt fails.
	LastSuccessAt *time.Time `bson:"last_success_at,omitempty" json:"last_success_at,omitempty"`
	Error         string     `bson:"error,omitempty" json:"error,omitempty"`
	// SnapshotsCopied and Bytes are what the last attempt copied; Bytes
	// is what those snapshots added to the local repository (restic copy
	// reports no byte count), which the offsite copy matches.
	SnapshotsCopied int   `bson:"snapshots_copied" json:"snapshots_copied"`
	Bytes           int64 `bson:"bytes" json:"bytes"`
	// SnapshotsPending is the number of local snapshots with no offsite
	// copy and OldestPendingAt the time of the oldest of them (nil when
	// none is pending), as measured after the last successful copy.
	SnapshotsPending int        `bson:"snapshots_pending" json:"snapshots_pending"`
	OldestPendingAt  *time.Time `bson:"oldest_pending_at,omitempty" json:"oldest_pending_at,omitempty"`
}

// CheckStateID is the _id of the one check_state document.
const CheckStateID = "repository"

// CheckState is the last repository check (restic check), one document.
// Only the snapshotter running the check job (under the repository's
// maintenance lease) writes it.
type CheckState struct {
	ID     string `bson:"_id" json:"id"`
	Status Health `bson:"status" json:"status"`
	// Subset is the --read-data-subset of the last attempt ("5%").
	Subset        string     `bson:"subset,omitempty" json:"subset,omitempty"`
	LastAttemptAt *time.Time `bson:"last_attempt_at,omitempty" json:"last_attempt_at,omitempty"`
	// LastSuccessAt stays as it was when an attempt fails.
	LastSuccessAt *time.Time `bson:"last_success_at,omitempty" json:"last_success_at,omitempty"`
	LastJobID     string     `bson:"last_job_id,omitempty" json:"last_job_id,omitempty"`
	// Error names each failed repository and restic's message.
	Error        string            `bson:"error,omitempty" json:"error,omitempty"`
	Repositories []CheckRepoResult `bson:"repositories" json:"repositories"`
}

// CheckRepoResult is one repository's part of a check.
type CheckRepoResult struct {
	// Name is "local" or "offsite".
	Name string `bson:"name" json:"name"`
	// Repository is the location with any password redacted.
	Repository  string     `bson:"repository" json:"repository"`
	Status      Health     `bson:"status" json:"status"`
	Error       string     `bson:"error,omitempty" json:"error,omitempty"`
	NumErrors   int        `bson:"num_errors" json:"num_errors"`
	BrokenPacks []string   `bson:"broken_packs,omitempty" json:"broken_packs,omitempty"`
	CheckedAt   *time.Time `bson:"checked_at,omitempty" json:"checked_at,omitempty"`
	DurationMS  int64      `bson:"duration_ms" json:"duration_ms"`
}
