package restic

import (
	"context"
	"fmt"

	"github.com/satoru/satoru/shared/proc"
)

// Totals are the regular files of a snapshot and their bytes.
type Totals struct {
	Files int64
	Bytes int64
}

// LsAllArgs is the argv of Count: without a folder restic lists every
// node of the snapshot, recursively.
func LsAllArgs(snapshotID string) []string {
	return []string{"ls", "--json", "--", snapshotID}
}

// Count streams the whole listing of snapshotID and counts its regular
// files and their sizes, never holding the listing in memory.
func (r Repo) Count(ctx context.Context, snapshotID string) (Totals, error) {
	if err := checkSnapshotID(snapshotID); err != nil {
		return Totals{}, fmt.Errorf("restic ls: %w", err)
	}
	var t Totals
	err := r.lsRun(ctx, LsAllArgs(snapshotID), func(n Node) bool {
		if n.Type == "file" {
			t.Files++
			t.Bytes += n.Size
		}
		return true
	})
	return t, err
}

// RestoreVerifyArgs is the argv of RestoreVerified.
func RestoreVerifyArgs(snapshotID, target string) []string {
	return []string{"restore", "--json", "--verify", "--target", target, "--", snapshotID}
}

// RestoreVerified restores all of snapshotID into target and has restic
// read every restored file back against the snapshot's content hashes
// (--verify), so a damaged pack or a short write fails the restore.
func (r Repo) RestoreVerified(ctx context.Context, snapshotID, target string) error {
	if err := checkSnapshotID(snapshotID); err != nil {
		return fmt.Errorf("restic restore: %w", err)
	}
	if target == "" {
		return fmt.Errorf("restic restore: no target folder")
	}
	_, err := r.run(ctx, proc.Cmd{Step: "restore", Args: RestoreVerifyArgs(snapshotID, target)}, true)
	return notFound(err)
}
