package domain

import "time"

// SnapshotView is one snapshot of a site as the API answers it: the
// restic snapshot with the job that made it and its stored summary.
type SnapshotView struct {
	ID       string    `json:"id"`
	ShortID  string    `json:"short_id"`
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname"`
	Tags     []string  `json:"tags"`
	// JobID is the backup job that made it (its job: tag).
	JobID string `json:"job_id,omitempty"`
	// Paths are the snapshot's roots: where browsing starts.
	Paths []string `json:"paths"`
	// Size and Files are the bytes and files the backup processed (the
	// snapshot's content), from restic's stored summary.
	Size            int64 `json:"size"`
	Files           int64 `json:"files"`
	FilesNew        int64 `json:"files_new"`
	FilesChanged    int64 `json:"files_changed"`
	FilesUnmodified int64 `json:"files_unmodified"`
	DataAdded       int64 `json:"data_added"`
}
