package restic

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/satoru/satoru/shared/proc"
)

// Snapshot is one entry of `restic snapshots --json`.
type Snapshot struct {
	ID       string    `json:"id"`
	ShortID  string    `json:"short_id"`
	Time     time.Time `json:"time"`
	Parent   string    `json:"parent,omitempty"`
	Host     string    `json:"hostname"`
	Username string    `json:"username,omitempty"`
	Tags     []string  `json:"tags"`
	Paths    []string  `json:"paths"`
	// Summary is written by restic >= 0.17; nil for older snapshots.
	Summary *SnapshotSummary `json:"summary,omitempty"`

	// Original is set on a snapshot made by `restic copy`: the id of the
	// source snapshot it was copied from (kept through chains of copies).
	// "" for a snapshot made by backup.
	Original string `json:"original,omitempty"`
}

// SnapshotSummary is the backup summary restic stores in the snapshot.
type SnapshotSummary struct {
	BackupStart         time.Time `json:"backup_start"`
	BackupEnd           time.Time `json:"backup_end"`
	FilesNew            int64     `json:"files_new"`
	FilesChanged        int64     `json:"files_changed"`
	FilesUnmodified     int64     `json:"files_unmodified"`
	DirsNew             int64     `json:"dirs_new"`
	DirsChanged         int64     `json:"dirs_changed"`
	DirsUnmodified      int64     `json:"dirs_unmodified"`
	DataBlobs           int64     `json:"data_blobs"`
	TreeBlobs           int64     `json:"tree_blobs"`
	DataAdded           int64     `json:"data_added"`
	DataAddedPacked     int64     `json:"data_added_packed"`
	TotalFilesProcessed int64     `json:"total_files_processed"`
	TotalBytesProcessed int64     `json:"total_bytes_processed"`
}

// Snapshots lists the snapshots that carry all of tags (none: every
// snapshot), oldest first as restic prints them.
func (r Repo) Snapshots(ctx context.Context, tags ...string) ([]Snapshot, error) {
	if err := checkTags(tags); err != nil {
		return nil, fmt.Errorf("restic snapshots: %w", err)
	}
	// The list is decoded as it streams in: proc's capture is capped at
	// 1 MiB, which a repository with a few thousand snapshots exceeds.
	pr, pw := io.Pipe()
	type decoded struct {
		snaps []Snapshot
		err   error
	}
	done := make(chan decoded, 1)
	go func() {
		var d decoded
		d.err = json.NewDecoder(pr).Decode(&d.snaps)
		// Drain whatever is left so restic never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
		done <- d
	}()
	_, err := r.run(ctx, proc.Cmd{Step: "snapshots", Args: SnapshotsArgs(tags...), Stdout: pw}, true)
	pw.Close()
	d := <-done
	if err != nil {
		return nil, err
	}
	if d.err != nil {
		return nil, fmt.Errorf("restic snapshots: decode output: %w", d.err)
	}
	return d.snaps, nil
}

// SnapshotsArgs is the argv of Snapshots. One --tag flag with the tags
// joined by commas means "all of them"; repeated --tag flags would mean
// "any of them".
func SnapshotsArgs(tags ...string) []string {
	args := []string{"snapshots", "--json"}
	var keep []string
	for _, t := range tags {
		if t != "" {
			keep = append(keep, t)
		}
	}
	if len(keep) > 0 {
		args = append(args, "--tag", strings.Join(keep, ","))
	}
	return args
}

// checkTags rejects tags restic would split: it reads "a,b" as two tags.
func checkTags(tags []string) error {
	for _, t := range tags {
		if strings.Contains(t, ",") {
			return fmt.Errorf("tag %q contains a comma", t)
		}
	}
	return nil
}
