package apicmd

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/satoru/satoru/cmd/satoru/internal/client"
	"github.com/satoru/satoru/shared/domain"
	"github.com/satoru/satoru/shared/units"
)

func (r *runner) snapshots(args []string) error {
	// "diff" is a subcommand; a site named diff is given by its uuid.
	if len(args) > 0 && args[0] == "diff" {
		r.cmd += " diff"
		return r.snapshotsDiff(args[1:])
	}
	sv, _, err := r.siteArgs(r.newFlags(), snapshotsHelp, args)
	if err != nil {
		return err
	}
	list, err := r.api.ListSnapshots(r.ctx, sv.UUID)
	if err != nil {
		return fmt.Errorf("list snapshots of site %s: %w", clean(sv.Name), err)
	}
	if r.flags.json {
		return printJSON(r.stdout, list.Raw())
	}
	return writeSnapshots(r.stdout, sv.Site, list.Snapshots, r.now())
}

// writeSnapshots is the snapshots table, then where restore paths start.
func writeSnapshots(w io.Writer, site domain.Site, snaps []client.Snapshot, now time.Time) error {
	if len(snaps) == 0 {
		_, err := fmt.Fprintf(w, "site %s has no snapshots yet (run one with: satoru run %s backup)\n", clean(site.Name), clean(site.Name))
		return err
	}
	t := newTable(w, "ID", "TIME", "SIZE", "FILES", "NEW", "CHANGED", "ADDED", "JOB")
	for _, s := range snaps {
		t.row(s.ShortID, ago(s.Time, now), units.Bytes(s.Size), strconv.FormatInt(s.Files, 10),
			strconv.FormatInt(s.FilesNew, 10), strconv.FormatInt(s.FilesChanged, 10), units.Bytes(s.DataAdded), orDash(s.JobID))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(snaps[0].Paths) > 0 {
		_, err := fmt.Fprintf(w, "restore paths start at %s/<target_hash> (targets: satoru targets list %s)\n", clean(snaps[0].Paths[0]), clean(site.Name))
		return err
	}
	return nil
}
